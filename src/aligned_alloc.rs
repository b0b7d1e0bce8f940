//! A global allocator that puts every large allocation on a 64-byte boundary.
//!
//! The AMX kernel reads bf16 activation rows in place as tile rows only when they start on a cache
//! line (rows that straddle two lines load much slower; see `backend::cpu::matmul::Aligned`);
//! otherwise it copies them into aligned rows first. The system allocator gives large blocks a
//! 16-byte alignment, so without this every product with many rows would copy its input. The
//! `idefics3` command installs it; a program embedding the library may install it too:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: idefics3::aligned_alloc::CacheLineAlloc = idefics3::aligned_alloc::CacheLineAlloc;
//! ```
//!
//! Results do not depend on it, only the copies do.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are aligned to a cache line.
const LARGE: usize = 4096;
/// A cache line.
const LINE: usize = 64;

/// [`System`], with allocations of 4 KB or more aligned to 64 bytes.
pub struct CacheLineAlloc;

/// The layout `System` is asked for: the same for an allocation and its release, since both
/// derive it from the caller's layout alone.
#[inline]
fn widened(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // A power of two no larger than any size ≥ 4096 that passes `Layout`'s checks.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every method forwards to `System` with `widened(layout)`, which keeps the size, has an
// alignment at least the caller's, and is computed identically for an allocation, its reallocation
// and its release; so `System`'s contract holds and the caller's alignment is met.
unsafe impl GlobalAlloc for CacheLineAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(widened(layout))
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(widened(layout))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, widened(layout))
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        let new = widened(Layout::from_size_align_unchecked(new_size, layout.align()));
        if old.align() == new.align() {
            return System.realloc(ptr, old, new_size);
        }
        // The alignment changes across the 4 KB line: move the block.
        let p = System.alloc(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            System.dealloc(ptr, old);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_on_a_cache_line_and_keep_their_contents() {
        let a = CacheLineAlloc;
        unsafe {
            let l = Layout::from_size_align(10_000, 2).unwrap();
            let p = a.alloc(l);
            assert!(!p.is_null() && (p as usize).is_multiple_of(LINE));
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            // Grow within the large class, then shrink below it, then grow across it again.
            let p = a.realloc(p, l, 50_000);
            assert!((p as usize).is_multiple_of(LINE));
            let p = a.realloc(p, Layout::from_size_align(50_000, 2).unwrap(), 100);
            let p = a.realloc(p, Layout::from_size_align(100, 2).unwrap(), 8192);
            assert!((p as usize).is_multiple_of(LINE));
            assert!((0..100).all(|i| *p.add(i) == i as u8));
            a.dealloc(p, Layout::from_size_align(8192, 2).unwrap());
            let z = a.alloc_zeroed(Layout::from_size_align(5000, 4).unwrap());
            assert!((z as usize).is_multiple_of(LINE) && (0..5000).all(|i| *z.add(i) == 0));
            a.dealloc(z, Layout::from_size_align(5000, 4).unwrap());
        }
    }
}
