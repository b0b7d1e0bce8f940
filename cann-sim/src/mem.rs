//! Device and pinned host memory.
//!
//! Device addresses come from a large `PROT_NONE` reservation, so a host read or write through a device
//! pointer faults, as it does on hardware. The bytes live in a second reservation (the shadow) at a fixed
//! offset from the first; only the simulator touches it, after [`check_range`]. Allocation is a bump over the
//! reservation with a guard page after each block and addresses are never reused, so any later use of a freed
//! block is recognised as such. Capacity is charged with the documented rounding (hicann/runtime
//! `docs/zh/api_ref/11-01_device_memory_malloc_and_free.md`: aclrtMalloc rounds the size up to 32 bytes and
//! adds 32 on A2; aclrtMallocAlign32 only rounds; start addresses are 64-byte aligned; size 0 is invalid).

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock, RwLock};

use crate::codes::*;
use crate::errors::fail;
use crate::runtime;

const PAGE: u64 = 4096;

/// The two reservations: device addresses and their shadow bytes.
struct Space {
    dev_base: u64,
    shadow_base: u64,
    len: u64,
}

static SPACE: OnceLock<Result<Space, String>> = OnceLock::new();

fn reserve(len: u64) -> Option<u64> {
    // SAFETY: an anonymous PROT_NONE mapping at an address the kernel picks touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as u64)
}

fn space() -> Result<&'static Space, String> {
    SPACE
        .get_or_init(|| {
            // Address space, not memory: PROT_NONE reservations commit nothing. Start large (addresses are
            // never reused, so the range bounds the bytes allocated over the process's life) and shrink when
            // an address-space limit refuses.
            for len in [8u64 << 40, 2 << 40, 512 << 30, 128 << 30, 32 << 30] {
                if let Some(dev) = reserve(len) {
                    if let Some(shadow) = reserve(len) {
                        return Ok(Space {
                            dev_base: dev,
                            shadow_base: shadow,
                            len,
                        });
                    }
                    // SAFETY: unmapping the reservation made just above, which nothing uses.
                    unsafe { libc::munmap(dev as *mut c_void, len as usize) };
                }
            }
            Err(
                "cannot reserve device address space (even 32 GiB); is `ulimit -v` set?"
                    .to_string(),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One block returned by aclrtMalloc (kept after free so that stale addresses are named).
#[derive(Clone, Debug)]
pub struct Alloc {
    /// Allocation number, 1-based, in order of allocation.
    pub id: u64,
    /// First device address.
    pub base: u64,
    /// Bytes requested: the bound that accesses are checked against.
    pub size: u64,
    /// Bytes charged against the capacity (documented rounding).
    pub charged: u64,
    /// Bytes of address space taken (pages, plus the guard page).
    span: u64,
    /// False once freed.
    pub live: bool,
}

/// Device heap state.
struct Heap {
    cursor: u64,
    allocs: BTreeMap<u64, Alloc>,
    next_id: u64,
    in_use: u64,
    peak: u64,
    capacity: u64,
}

static HEAP: RwLock<Heap> = RwLock::new(Heap {
    cursor: 0,
    allocs: BTreeMap::new(),
    next_id: 1,
    in_use: 0,
    peak: 0,
    capacity: crate::config::DEFAULT_MEM_BYTES,
});

/// Pinned host blocks from aclrtMallocHost: start → size.
static PINNED: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

fn heap_read() -> std::sync::RwLockReadGuard<'static, Heap> {
    HEAP.read().unwrap_or_else(|e| e.into_inner())
}

fn heap_write() -> std::sync::RwLockWriteGuard<'static, Heap> {
    HEAP.write().unwrap_or_else(|e| e.into_inner())
}

/// Sets the capacity (at aclInit, from `CANN_SIM_MEM_BYTES`).
pub fn set_capacity(bytes: u64) {
    heap_write().capacity = bytes;
}

/// Capacity, bytes charged now, and the peak charge.
pub fn usage() -> (u64, u64, u64) {
    let h = heap_read();
    (h.capacity, h.in_use, h.peak)
}

/// Whether `addr` lies in the device address range (live, freed or never allocated).
pub fn is_device_addr(addr: u64) -> bool {
    match space() {
        Ok(s) => addr >= s.dev_base && addr < s.dev_base + s.len,
        Err(_) => false,
    }
}

/// How aclrtMalloc-family calls round the charged size.
#[derive(Clone, Copy, Debug)]
pub enum Rounding {
    /// aclrtMalloc on A2: up to 32 bytes, plus 32.
    Align32Plus32,
    /// aclrtMallocAlign32: up to 32 bytes.
    Align32,
}

/// Allocates `size` device bytes; Err is (status, message).
pub fn alloc(size: u64, rounding: Rounding) -> Result<u64, (i32, String)> {
    if size == 0 {
        return Err((
            ACL_ERROR_INVALID_PARAM,
            "size is 0 (the document requires size > 0)".into(),
        ));
    }
    let sp = space().map_err(|m| (ACL_ERROR_RT_MEMORY_ALLOCATION, m))?;
    let rounded = size.div_ceil(32).saturating_mul(32);
    let charged = match rounding {
        Rounding::Align32Plus32 => rounded.saturating_add(32),
        Rounding::Align32 => rounded,
    };
    let mut h = heap_write();
    if h.in_use.saturating_add(charged) > h.capacity {
        return Err((
            ACL_ERROR_RT_MEMORY_ALLOCATION,
            format!(
                "out of device memory: {size} bytes requested ({charged} charged), {} of {} bytes in use",
                h.in_use, h.capacity
            ),
        ));
    }
    let pages = size.div_ceil(PAGE) * PAGE;
    let span = pages + PAGE;
    if h.cursor + span > sp.len {
        return Err((
            ACL_ERROR_RT_MEMORY_ALLOCATION,
            format!(
                "device address space exhausted ({} bytes reserved; addresses are never reused)",
                sp.len
            ),
        ));
    }
    let off = h.cursor;
    // SAFETY: [shadow_base+off, +pages) lies inside our shadow reservation and belongs to no other block.
    let rc = unsafe {
        libc::mprotect(
            (sp.shadow_base + off) as *mut c_void,
            pages as usize,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if rc != 0 {
        return Err((
            ACL_ERROR_RT_MEMORY_ALLOCATION,
            format!(
                "host memory for {size} device bytes unavailable: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    h.cursor += span;
    let id = h.next_id;
    h.next_id += 1;
    h.in_use += charged;
    h.peak = h.peak.max(h.in_use);
    let base = sp.dev_base + off;
    h.allocs.insert(
        base,
        Alloc {
            id,
            base,
            size,
            charged,
            span,
            live: true,
        },
    );
    Ok(base)
}

fn release_shadow(sp: &Space, a: &Alloc) {
    let pages = a.span - PAGE;
    let p = (sp.shadow_base + (a.base - sp.dev_base)) as *mut c_void;
    // SAFETY: the block's own shadow pages; dropping them returns the memory, PROT_NONE makes any stale
    // access by simulator code fault instead of reading zeros.
    unsafe {
        libc::madvise(p, pages as usize, libc::MADV_DONTNEED);
        libc::mprotect(p, pages as usize, libc::PROT_NONE);
    }
}

/// Frees the block starting at `addr`; Err names a double free or an address no allocation returned.
pub fn free(addr: u64) -> Result<(), (i32, String)> {
    let sp = space().map_err(|m| (ACL_ERROR_RT_MEMORY_FREE, m))?;
    let mut h = heap_write();
    let Some(a) = h.allocs.get_mut(&addr) else {
        let why = match describe(&h, addr) {
            Some(d) => format!("0x{addr:x} is not the start of an allocation ({d})"),
            None => format!("0x{addr:x} was not returned by aclrtMalloc"),
        };
        return Err((ACL_ERROR_RT_MEMORY_FREE, why));
    };
    if !a.live {
        return Err((
            ACL_ERROR_RT_MEMORY_FREE,
            format!(
                "double free of allocation #{} at 0x{addr:x} ({} bytes)",
                a.id, a.size
            ),
        ));
    }
    a.live = false;
    let a = a.clone();
    h.in_use -= a.charged;
    release_shadow(sp, &a);
    Ok(())
}

/// Describes where `addr` falls relative to the allocation at or below it, if any.
fn describe(h: &Heap, addr: u64) -> Option<String> {
    let (_, a) = h.allocs.range(..=addr).next_back()?;
    if addr >= a.base + a.span {
        return None;
    }
    let state = if a.live { "live" } else { "freed" };
    Some(format!(
        "inside {state} allocation #{} [0x{:x}, 0x{:x})",
        a.id,
        a.base,
        a.base + a.size
    ))
}

/// Checks that [addr, addr+len) lies inside one live device allocation (len 0 allowed at any live address).
/// Err(message) names the address, the length and why (unknown address, freed allocation #N, out of bounds of
/// allocation #N [base, base+size)).
pub fn check_range(addr: u64, len: u64) -> Result<(), String> {
    if !is_device_addr(addr) {
        return Err(format!(
            "[0x{addr:x}, +{len}): 0x{addr:x} is not a device address"
        ));
    }
    let h = heap_read();
    let Some((_, a)) = h.allocs.range(..=addr).next_back() else {
        return Err(format!(
            "[0x{addr:x}, +{len}): unknown device address (below every allocation)"
        ));
    };
    if addr >= a.base + a.span {
        return Err(format!(
            "[0x{addr:x}, +{len}): unknown device address (not inside any allocation)"
        ));
    }
    if !a.live {
        return Err(format!(
            "[0x{addr:x}, +{len}): use of freed allocation #{} [0x{:x}, 0x{:x})",
            a.id,
            a.base,
            a.base + a.size
        ));
    }
    let end = addr.checked_add(len);
    if addr > a.base + a.size || end.is_none_or(|e| e > a.base + a.size) {
        return Err(format!(
            "[0x{addr:x}, +{len}): out of bounds of allocation #{} [0x{:x}, 0x{:x}) ({} bytes)",
            a.id,
            a.base,
            a.base + a.size,
            a.size
        ));
    }
    Ok(())
}

/// Host-accessible bytes behind a checked device range (the simulator's shadow mapping). Only simulator code
/// calls this, on the stream worker thread, after check_range.
///
/// # Safety
/// `addr` must have passed [`check_range`] for the bytes about to be touched, and the block must not be
/// freed while the pointer is in use.
pub unsafe fn shadow(addr: u64) -> *mut u8 {
    match space() {
        Ok(sp) => (sp.shadow_base + (addr - sp.dev_base)) as *mut u8,
        Err(_) => std::ptr::null_mut(),
    }
}

/// Live blocks, oldest first.
pub fn live_allocations() -> Vec<Alloc> {
    let h = heap_read();
    let mut v: Vec<Alloc> = h.allocs.values().filter(|a| a.live).cloned().collect();
    v.sort_by_key(|a| a.id);
    v
}

/// Frees every live block (device reset / finalize) and returns them: they are the leaks.
pub fn release_all() -> Vec<Alloc> {
    let leaks = live_allocations();
    for a in &leaks {
        let _ = free(a.base);
    }
    leaks
}

/// Whether [ptr, ptr+len) lies inside one aclrtMallocHost block.
pub fn is_pinned(ptr: u64, len: u64) -> bool {
    let p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    p.range(..=ptr)
        .next_back()
        .is_some_and(|(&b, &s)| ptr.saturating_add(len) <= b + s)
}

/// Pinned host blocks still allocated (reported at finalize).
pub fn live_pinned() -> Vec<(u64, u64)> {
    PINNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(&b, &s)| (b, s))
        .collect()
}

fn ensure_ready(call: &str) -> Result<(), i32> {
    runtime::current_context(call).map(|_| ())
}

fn malloc_impl(call: &str, dev_ptr: *mut *mut c_void, size: usize, rounding: Rounding) -> i32 {
    if let Err(code) = ensure_ready(call) {
        return code;
    }
    if dev_ptr.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "devPtr is NULL");
    }
    if let Some(s) = crate::fault::injected(call) {
        return s;
    }
    match alloc(size as u64, rounding) {
        Ok(a) => {
            // SAFETY: dev_ptr is non-null and points to the caller's output slot.
            unsafe { *dev_ptr = a as *mut c_void };
            crate::counters::note_alloc();
            ACL_SUCCESS
        }
        Err((code, msg)) => fail(call, code, msg),
    }
}

/// aclrtMalloc (11-01_device_memory_malloc_and_free.md). The policy does not change the simulation: values
/// outside the enum are accepted as the document says (page size then chosen by size).
#[no_mangle]
pub unsafe extern "C" fn aclrtMalloc(dev_ptr: *mut *mut c_void, size: usize, _policy: u32) -> i32 {
    malloc_impl("aclrtMalloc", dev_ptr, size, Rounding::Align32Plus32)
}

/// aclrtMallocAlign32 (11-01_device_memory_malloc_and_free.md).
#[no_mangle]
pub unsafe extern "C" fn aclrtMallocAlign32(
    dev_ptr: *mut *mut c_void,
    size: usize,
    _policy: u32,
) -> i32 {
    malloc_impl("aclrtMallocAlign32", dev_ptr, size, Rounding::Align32)
}

/// aclrtFree (11-01_device_memory_malloc_and_free.md). Like the documented call it does not wait for
/// streams: a task still queued on the block then fails with "use of freed allocation".
#[no_mangle]
pub unsafe extern "C" fn aclrtFree(dev_ptr: *mut c_void) -> i32 {
    if let Err(code) = ensure_ready("aclrtFree") {
        return code;
    }
    if dev_ptr.is_null() {
        return fail("aclrtFree", ACL_ERROR_INVALID_PARAM, "devPtr is NULL");
    }
    match free(dev_ptr as u64) {
        Ok(()) => ACL_SUCCESS,
        Err((code, msg)) => fail("aclrtFree", code, msg),
    }
}

/// aclrtMemAttr values (25-02_Enumerations.md): ACL_DDR_MEM 0, ACL_HBM_MEM 1, ..., ACL_HBM_MEM_HUGE 4,
/// ACL_HBM_MEM_NORMAL 5. The simulator has HBM only; its huge and normal pages share one pool.
const ACL_HBM_MEM: u32 = 1;
const ACL_HBM_MEM_HUGE: u32 = 4;
const ACL_HBM_MEM_NORMAL: u32 = 5;
const ACL_DDR_MEM: u32 = 0;
const ACL_HBM_MEM_P2P_NORMAL: u32 = 9;

/// aclrtGetMemInfo: free and total HBM bytes of the configured capacity; DDR kinds report 0 (a 910B has none).
#[no_mangle]
pub unsafe extern "C" fn aclrtGetMemInfo(attr: u32, free: *mut usize, total: *mut usize) -> i32 {
    let call = "aclrtGetMemInfo";
    if let Err(code) = ensure_ready(call) {
        return code;
    }
    if free.is_null() || total.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "free or total is NULL");
    }
    if attr > ACL_HBM_MEM_P2P_NORMAL {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("attr {attr} is not an aclrtMemAttr"),
        );
    }
    let (cap, used, _) = usage();
    let (f, t) = match attr {
        ACL_HBM_MEM | ACL_HBM_MEM_HUGE | ACL_HBM_MEM_NORMAL => (cap - used.min(cap), cap),
        ACL_DDR_MEM => (0, 0),
        _ => (0, 0),
    };
    *free = f as usize;
    *total = t as usize;
    ACL_SUCCESS
}

/// aclrtMallocHost (11-02_host_memory_management.md): page-locked host memory; the simulator records the
/// block so that aclrtMemcpyAsync knows which host ranges are pinned.
#[no_mangle]
pub unsafe extern "C" fn aclrtMallocHost(host_ptr: *mut *mut c_void, size: usize) -> i32 {
    let call = "aclrtMallocHost";
    if let Err(code) = ensure_ready(call) {
        return code;
    }
    if host_ptr.is_null() || size == 0 {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "hostPtr is NULL or size is 0",
        );
    }
    if let Some(s) = crate::fault::injected(call) {
        return s;
    }
    let mut p: *mut c_void = std::ptr::null_mut();
    if libc::posix_memalign(&mut p, 64, size) != 0 || p.is_null() {
        return fail(
            call,
            ACL_ERROR_BAD_ALLOC,
            format!("cannot allocate {size} host bytes"),
        );
    }
    PINNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(p as u64, size as u64);
    *host_ptr = p;
    ACL_SUCCESS
}

/// aclrtFreeHost (11-02_host_memory_management.md).
#[no_mangle]
pub unsafe extern "C" fn aclrtFreeHost(host_ptr: *mut c_void) -> i32 {
    let call = "aclrtFreeHost";
    if let Err(code) = ensure_ready(call) {
        return code;
    }
    if host_ptr.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "hostPtr is NULL");
    }
    let removed = PINNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(host_ptr as u64));
    if removed.is_none() {
        return fail(
            call,
            ACL_ERROR_RT_MEMORY_FREE,
            format!(
                "0x{:x} was not returned by aclrtMallocHost (or was freed already)",
                host_ptr as u64
            ),
        );
    }
    libc::free(host_ptr);
    ACL_SUCCESS
}
