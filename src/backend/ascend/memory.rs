//! Device and pinned host memory from pools, so that steady-state prefill and decoding allocate
//! nothing: `aclrtMalloc` and `aclrtMallocHost` cost tens of microseconds to milliseconds on a real
//! card, more than most ops of a decode step.
//!
//! Device blocks return to their pool when the tensor that holds them is dropped. Reuse is safe
//! without waiting because every op that reads or writes pooled memory is enqueued on the one compute
//! stream, which runs in order: the next user of a block is queued behind the last one. (Uploads on
//! the transfer stream first wait for the compute stream; see `super::Streams::upload_barrier`.)
//!
//! Pinned host buffers are used as staging for asynchronous copies; the host must not touch one until
//! its copy has run, so a used buffer is parked until the stream it was used on is synchronised, then
//! returns to its pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cann_sys::{Context, DeviceBuffer, HostBuffer};

/// Sizes are rounded up to a class so that blocks of similar sizes (prefills of different lengths)
/// are shared: 512-byte steps up to 64 KiB, then four classes per power of two.
pub fn size_class(len: usize) -> usize {
    const SMALL: usize = 64 << 10;
    let len = len.max(1);
    if len <= SMALL {
        return len.div_ceil(512) * 512;
    }
    let top = usize::BITS - 1 - len.leading_zeros(); // 2^top <= len
    let step = 1usize << (top - 2);
    len.div_ceil(step) * step
}

/// Free device blocks by size class.
#[derive(Default)]
struct FreeBlocks {
    by_class: HashMap<usize, Vec<DeviceBuffer>>,
    bytes: usize,
}

/// A pool of device blocks for one context.
pub struct DevicePool {
    ctx: Arc<Context>,
    free: Mutex<FreeBlocks>,
    /// Free bytes kept for reuse beyond which returned blocks are freed instead.
    keep_bytes: usize,
    /// Fresh allocations made (for tests and the bench: zero in steady state).
    allocations: std::sync::atomic::AtomicU64,
    /// Returned blocks beyond `keep_bytes`, freed at the next point where the device is known to be
    /// done with them ([`DevicePool::free_deferred`]): queued work may still use them now.
    deferred: Mutex<Vec<DeviceBuffer>>,
}

/// A device block owned by a tensor; back to the pool on drop.
pub struct Block {
    buf: Option<DeviceBuffer>,
    pool: Arc<DevicePool>,
}

impl Block {
    /// The device address.
    pub fn ptr(&self) -> *mut std::ffi::c_void {
        self.buf
            .as_ref()
            .map_or(std::ptr::null_mut(), |b| b.as_ptr())
    }

    /// The underlying buffer (for copies).
    pub fn buffer(&self) -> &DeviceBuffer {
        self.buf.as_ref().expect("a live block holds its buffer")
    }

    /// The underlying buffer, mutably (for copies into it).
    pub fn buffer_mut(&mut self) -> &mut DeviceBuffer {
        self.buf.as_mut().expect("a live block holds its buffer")
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the free lists inconsistent (each update is one
    // push or pop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DevicePool {
    /// A pool on `ctx` that keeps at most `keep_bytes` of free blocks.
    pub fn new(ctx: &Arc<Context>, keep_bytes: usize) -> Arc<DevicePool> {
        Arc::new(DevicePool {
            ctx: ctx.clone(),
            free: Mutex::new(FreeBlocks::default()),
            keep_bytes,
            allocations: Default::default(),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// A block of at least `len` bytes: a free one of its class, else a fresh allocation. When the
    /// device is out of memory, the free blocks are released (after `drain` has waited for the
    /// device, since queued work may still use them) and the allocation is tried once more.
    pub fn get(
        self: &Arc<Self>,
        len: usize,
        drain: impl FnOnce() -> cann_sys::Result<()>,
    ) -> cann_sys::Result<Block> {
        let class = size_class(len);
        if let Some(buf) = {
            let mut free = lock(&self.free);
            let buf = free.by_class.get_mut(&class).and_then(Vec::pop);
            if buf.is_some() {
                free.bytes -= class;
            }
            buf
        } {
            return Ok(self.block(buf));
        }
        let buf = match DeviceBuffer::new(&self.ctx, class) {
            Ok(b) => b,
            Err(e) if self.free_bytes() > 0 => {
                drain()?;
                self.release_all();
                DeviceBuffer::new(&self.ctx, class).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        };
        self.allocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.block(buf))
    }

    fn block(self: &Arc<Self>, buf: DeviceBuffer) -> Block {
        Block {
            buf: Some(buf),
            pool: self.clone(),
        }
    }

    fn give_back(&self, buf: DeviceBuffer) {
        let class = buf.len();
        let mut free = lock(&self.free);
        if free.bytes + class > self.keep_bytes {
            drop(free);
            lock(&self.deferred).push(buf);
            return;
        }
        free.bytes += class;
        free.by_class.entry(class).or_default().push(buf);
    }

    /// Bytes held in free blocks.
    pub fn free_bytes(&self) -> usize {
        lock(&self.free).bytes
    }

    /// Frees every free block (the caller has made sure the device no longer uses them).
    pub fn release_all(&self) {
        let blocks = std::mem::take(&mut *lock(&self.free));
        drop(blocks);
        self.free_deferred();
    }

    /// Whether returned blocks wait to be freed.
    pub fn has_deferred(&self) -> bool {
        !lock(&self.deferred).is_empty()
    }

    /// Frees the blocks returned beyond the pool's size (the caller has synchronised the streams).
    pub fn free_deferred(&self) {
        let blocks = std::mem::take(&mut *lock(&self.deferred));
        drop(blocks);
    }

    /// Fresh device allocations made so far.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Pinned host buffers for staging copies, by size class; buffers in use by queued copies are
/// parked until the next synchronisation.
pub struct HostPool {
    ctx: Arc<Context>,
    state: Mutex<HostState>,
}

#[derive(Default)]
struct HostState {
    free: HashMap<usize, Vec<HostBuffer>>,
    parked: Vec<HostBuffer>,
}

impl HostPool {
    /// An empty pool on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> HostPool {
        HostPool {
            ctx: ctx.clone(),
            state: Mutex::new(HostState::default()),
        }
    }

    /// A pinned buffer of at least `len` bytes.
    pub fn get(&self, len: usize) -> cann_sys::Result<HostBuffer> {
        let class = size_class(len);
        if let Some(b) = lock(&self.state).free.get_mut(&class).and_then(Vec::pop) {
            return Ok(b);
        }
        HostBuffer::new(&self.ctx, class)
    }

    /// Keeps `buf` alive until [`HostPool::recycle`]: a queued copy still reads or writes it.
    pub fn park(&self, buf: HostBuffer) {
        lock(&self.state).parked.push(buf);
    }

    /// Returns a buffer whose copies have completed.
    pub fn put(&self, buf: HostBuffer) {
        let class = buf.len();
        lock(&self.state).free.entry(class).or_default().push(buf);
    }

    /// After a synchronisation of every stream that used parked buffers: they are free again.
    pub fn recycle(&self) {
        let mut s = lock(&self.state);
        let parked = std::mem::take(&mut s.parked);
        for b in parked {
            let class = b.len();
            s.free.entry(class).or_default().push(b);
        }
    }

    /// Frees every buffer, parked ones included (after a synchronisation).
    pub fn release_all(&self) {
        let s = std::mem::take(&mut *lock(&self.state));
        drop(s);
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_and_stay_close() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(64 << 10), 64 << 10);
        for len in [(64 << 10) + 1, 100_000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(len);
            assert!(
                c >= len && (c as f64) < len as f64 * 1.25 + 1.0,
                "{len} -> {c}"
            );
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
