//! A fork-join thread pool built for decoding: a token runs about 150 short parallel regions (tens of
//! microseconds each) separated by a few microseconds of serial work. A general work-stealing pool
//! parks its workers between them and pays a futex wake-up (and the caller's own sleep) per region,
//! which cost about a sixth of the decode time here. In this pool the calling thread takes part in the
//! work, idle workers spin briefly before parking, and tasks are handed out by one atomic counter.
//!
//! The kernels call [`for_each`] and friends without a handle: [`ThreadPool::install`] makes a pool
//! current on the calling thread. Nested regions, calls from a thread with no pool installed, and
//! calls while another thread is using the pool run sequentially on the caller, so every entry point
//! is safe to call from anywhere.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins on the job counter before it yields the core, and then parks.
const SPIN: Duration = Duration::from_micros(50);
const YIELD: Duration = Duration::from_millis(2);

/// Task indices of one parallel region, claimed one at a time.
struct Tasks {
    next: AtomicUsize,
    n: usize,
}

impl Tasks {
    fn claim(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.n).then_some(i)
    }
}

type Body = dyn Fn(&Tasks) + Sync;

/// The region being run: pointers into the caller's stack frame, valid until every worker has
/// reported back (the caller waits for that before returning).
#[derive(Clone, Copy)]
struct Job {
    body: *const Body,
    tasks: *const Tasks,
}

struct Shared {
    workers: usize,
    /// Bumped once per region; workers run the job of each value exactly once.
    epoch: AtomicUsize,
    job: UnsafeCell<Option<Job>>,
    /// Workers that have not yet finished the current region.
    pending: AtomicUsize,
    /// Set while a caller owns the job slot.
    busy: AtomicBool,
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by the caller holding `busy`, while no worker reads it (pending is 0),
// and read by workers only between the epoch bump (release) and their decrement of `pending`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

thread_local! {
    /// The pool installed on this thread (null: none, or inside a region).
    static CURRENT: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// A pool of `threads - 1` workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// Starts a pool that runs regions on `threads` threads (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            workers,
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("idefics3-worker-{i}"))
                .spawn(move || worker(&s));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Workers already started must be stopped before the pool is dropped.
                    let pool = ThreadPool { shared, handles };
                    drop(pool);
                    return Err(e);
                }
            }
        }
        Ok(ThreadPool { shared, handles })
    }

    /// Threads a region runs on.
    pub fn threads(&self) -> usize {
        self.shared.workers + 1
    }

    /// Runs `f` with this pool current on the calling thread.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Shared);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let prev = CURRENT.with(|c| c.replace(Arc::as_ptr(&self.shared)));
        let _restore = Restore(prev);
        f()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = start.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < YIELD {
                std::thread::yield_now();
            } else {
                let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_add(1, Ordering::SeqCst);
                while s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // SAFETY: the epoch moved, so the caller published a job and waits for `pending` to reach 0
        // before touching the slot or the frame the job points into.
        let job = unsafe { (*s.job.get()).expect("a job is published with each epoch") };
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.body)(&*job.tasks) }));
        if let Err(p) = r {
            *s.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Worker threads plus the caller of the pool current on this thread (1 when none is).
pub fn current_threads() -> usize {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        1
    } else {
        // SAFETY: an installed pool outlives its `install` call, during which this runs.
        unsafe { (*p).workers + 1 }
    }
}

/// Runs `body` once on each thread of the current pool (on the caller alone when sequential).
fn broadcast(n: usize, body: &(dyn Fn(&Tasks) + Sync + '_)) {
    let tasks = Tasks {
        next: AtomicUsize::new(0),
        n,
    };
    let p = CURRENT.with(|c| c.get());
    // SAFETY: as in `current_threads`.
    let shared = (!p.is_null()).then(|| unsafe { &*p });
    let shared = match shared {
        Some(s) if n > 1 && s.workers > 0 && !s.busy.swap(true, Ordering::Acquire) => s,
        _ => return body(&tasks),
    };
    // The erased lifetime is sound because this function does not return before every worker is done.
    let body_static: *const Body = unsafe { std::mem::transmute(body) };
    // SAFETY: `busy` is ours and no worker reads the slot until the epoch moves.
    unsafe {
        *shared.job.get() = Some(Job {
            body: body_static,
            tasks: &tasks,
        })
    };
    shared.pending.store(shared.workers, Ordering::Relaxed);
    shared.epoch.fetch_add(1, Ordering::SeqCst);
    if shared.sleeping.load(Ordering::SeqCst) > 0 {
        let _g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        shared.wake.notify_all();
    }
    // Nested regions inside the body run sequentially.
    CURRENT.with(|c| c.set(std::ptr::null()));
    let mine = catch_unwind(AssertUnwindSafe(|| body(&tasks)));
    CURRENT.with(|c| c.set(p));
    let mut spins = 0u32;
    while shared.pending.load(Ordering::Acquire) != 0 {
        spins += 1;
        if spins < 1 << 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // SAFETY: every worker is done with the job.
    unsafe { *shared.job.get() = None };
    let theirs = shared
        .panic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    shared.busy.store(false, Ordering::Release);
    if let Err(p) = mine {
        resume_unwind(p);
    }
    if let Some(p) = theirs {
        resume_unwind(p);
    }
}

/// Calls `f(i)` for every `i < n`, spread over the current pool.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    broadcast(n, &|t: &Tasks| {
        while let Some(i) = t.claim() {
            f(i);
        }
    });
}

/// Like [`for_each`], with per-thread scratch made by `init` on each thread's first task.
pub fn for_each_init<S>(n: usize, init: impl Fn() -> S + Sync, f: impl Fn(&mut S, usize) + Sync) {
    broadcast(n, &|t: &Tasks| {
        let mut scratch = None;
        while let Some(i) = t.claim() {
            f(scratch.get_or_insert_with(&init), i);
        }
    });
}

/// `[f(0), …, f(n-1)]`, computed over the current pool.
pub fn map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    for_each(n, |i| {
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(i));
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every task ran")
        })
        .collect()
}

/// Calls `f(scratch, index, chunk)` on consecutive `chunk`-long pieces of `data` (the last may be
/// shorter), spread over the current pool.
pub fn chunks_mut<T: Send, S>(
    data: &mut [T],
    chunk: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let len = data.len();
    let ptr = SyncPtr(data.as_mut_ptr());
    for_each_init(len.div_ceil(chunk), init, |s, i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: chunks are disjoint, in bounds, and each index is handed out once.
        let piece = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(start), end - start) };
        f(s, i, piece);
    });
}

/// A new vector of `len` elements written piece by piece: `f(scratch, index, piece)` on
/// consecutive `chunk`-long pieces (the last may be shorter), spread over the current pool when
/// `parallel`. Each piece is set to `T::default()` by the task that then writes it, just before
/// `f` runs: its lines are zeroed while they are about to be overwritten, in parallel, instead
/// of by one thread up front (a memset of the whole buffer, which showed in profiles).
pub fn filled<T: Copy + Default + Send, S>(
    len: usize,
    chunk: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    let run = |s: &mut S, i: usize, piece: &mut [std::mem::MaybeUninit<T>]| {
        piece.fill(std::mem::MaybeUninit::new(T::default()));
        // SAFETY: every element of the piece was initialised just now.
        f(s, i, unsafe { &mut *(piece as *mut [_] as *mut [T]) })
    };
    let spare = &mut v.spare_capacity_mut()[..len];
    if parallel {
        chunks_mut(spare, chunk, init, run);
    } else if len > 0 {
        let mut s = init();
        spare
            .chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| run(&mut s, i, c));
    }
    // SAFETY: the pieces cover the whole length and each was initialised by `run`.
    unsafe { v.set_len(len) };
    v
}

struct SyncPtr<T>(*mut T);
// SAFETY: only used to hand disjoint chunks of one slice to different threads.
unsafe impl<T: Send> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_any_pool_size() {
        for threads in 1..=4 {
            let pool = ThreadPool::new(threads).unwrap();
            for n in [0, 1, 2, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| for_each(n, |i| _ = hits[i].fetch_add(1, Ordering::Relaxed)));
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn map_keeps_order_and_nested_regions_run() {
        let pool = ThreadPool::new(3).unwrap();
        let v = pool.install(|| map(50, |i| map(i % 5, |j| j).len() + i * 10));
        assert_eq!(v, (0..50).map(|i| i % 5 + i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_cover_the_slice() {
        let pool = ThreadPool::new(2).unwrap();
        let mut v = vec![0usize; 1001];
        pool.install(|| chunks_mut(&mut v, 64, || (), |_, i, c| c.fill(i + 1)));
        assert!(v.iter().enumerate().all(|(k, &x)| x == k / 64 + 1));
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.install(|| for_each(64, |i| assert!(i != 40, "task 40")))
        }));
        assert!(r.is_err());
        let sum = AtomicUsize::new(0);
        pool.install(|| for_each(10, |i| _ = sum.fetch_add(i, Ordering::Relaxed)));
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    #[test]
    fn two_callers_share_one_pool() {
        let pool = ThreadPool::new(2).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let total = AtomicUsize::new(0);
                        pool.install(|| {
                            for_each(100, |i| _ = total.fetch_add(i, Ordering::Relaxed))
                        });
                        assert_eq!(total.load(Ordering::Relaxed), 4950);
                    }
                });
            }
        });
    }

    #[test]
    fn without_a_pool_everything_runs_on_the_caller() {
        assert_eq!(current_threads(), 1);
        let id = std::thread::current().id();
        for_each(10, |_| assert_eq!(std::thread::current().id(), id));
    }
}
