//! A persistent thread pool with a few-microsecond dispatch cost.
//!
//! A decode step of a 135M-parameter model issues ~200 small matmuls; waking threads
//! through a channel or a fresh rayon scope costs more than the arithmetic of many of
//! them. Workers here spin briefly on an epoch counter after each job (so back-to-back
//! matmuls find them awake), then yield, then sleep on a condition variable.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::quant::QuantError;

const OPEN: u64 = 1 << 32;
const COUNT_MASK: u64 = OPEN - 1;

fn epoch_tag(epoch: u64) -> u64 {
    epoch << 33
}

/// Busy-wait iterations before a worker starts yielding (tens of microseconds).
const SPIN_ITERS: u32 = 4_000;
/// `yield_now` calls before a worker goes to sleep.
const YIELD_ITERS: u32 = 200;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicU64,
    /// Written only by the submitter while it holds `submit` and no worker is running a
    /// job; read by workers after they observe the new epoch.
    job: UnsafeCell<Option<Job>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Who may still touch the current job: bits 0..32 count the workers inside it,
    /// `OPEN` says late workers may still join, and the bits above hold the job's epoch
    /// so a worker that wakes up after the job closed never joins a later one by mistake.
    membership: AtomicU64,
    sleepers: AtomicUsize,
    worker_panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only accessed under the epoch protocol described on the field; the
// pointee is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of worker threads that run indexed tasks together with the caller.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    submit: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ThreadPool {
    /// A pool using `n_threads` threads in total: the caller plus `n_threads - 1`
    /// workers. On targets without threads (wasm32) every job runs on the caller.
    pub fn new(n_threads: usize) -> Result<ThreadPool, QuantError> {
        if n_threads == 0 {
            return Err(QuantError::ThreadCount { got: 0 });
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            membership: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            worker_panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let n_workers = if cfg!(target_arch = "wasm32") {
            0
        } else {
            n_threads - 1
        };
        let workers = (0..n_workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("candle-quant-{i}"))
                    .spawn(move || worker_loop(&shared))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| QuantError::ThreadCount { got: n_threads })?;
        Ok(ThreadPool {
            shared,
            workers,
            submit: Mutex::new(()),
        })
    }

    /// Threads that run a job, the caller included.
    pub fn num_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(i)` for every `i in 0..n_tasks`, spread over the pool; returns when all
    /// have finished. Tasks are claimed dynamically, so which thread runs which task
    /// varies: results must not depend on it. Workers that are not scheduled in time
    /// simply miss the job (the caller never waits for a thread that has not started),
    /// which keeps the cost bounded on an oversubscribed machine.
    ///
    /// A job submitted while another is running (from another thread, or from inside a
    /// task) runs on the calling thread alone instead of waiting.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        let Ok(_submit) = self.submit.try_lock() else {
            (0..n_tasks).for_each(task);
            return;
        };
        let shared = &*self.shared;
        // SAFETY: only the lifetime is erased. `_wait` below blocks until every worker
        // has finished with the job (also when `task` panics on this thread), so the
        // pointer never outlives the borrow.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(task) };
        // SAFETY: we hold `submit` and the previous job has fully drained, so no worker
        // reads `job` concurrently.
        unsafe { *shared.job.get() = Some(job) };
        shared.n_tasks.store(n_tasks, Ordering::Relaxed);
        shared.next_task.store(0, Ordering::Relaxed);
        let epoch = shared.epoch.load(Ordering::Relaxed) + 1;
        shared
            .membership
            .store(epoch_tag(epoch) | OPEN, Ordering::SeqCst);
        shared.epoch.store(epoch, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _sleep = lock(&shared.sleep_lock);
            shared.wake.notify_all();
        }
        let _wait = WaitForWorkers(shared);
        run_tasks(shared, task);
        drop(_wait);
        if shared.worker_panicked.swap(false, Ordering::Relaxed) {
            panic!("a candle-quant worker thread panicked while running a task");
        }
    }
}

/// Closes the current job to late workers and blocks until the workers inside it have
/// left, even during unwinding.
struct WaitForWorkers<'a>(&'a Shared);

impl Drop for WaitForWorkers<'_> {
    fn drop(&mut self) {
        self.0.membership.fetch_and(!OPEN, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.0.membership.load(Ordering::Acquire) & COUNT_MASK != 0 {
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: all workers are done with the job; we still hold `submit`.
        unsafe { *self.0.job.get() = None };
    }
}

fn run_tasks(shared: &Shared, task: &(dyn Fn(usize) + Sync)) {
    let n_tasks = shared.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        task(i);
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_epoch(shared, seen);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        if !join(shared, seen) {
            continue;
        }
        // SAFETY: the submitter published `job` before opening membership for this
        // epoch, and keeps it alive until every joined worker has left.
        if let Some(job) = unsafe { *shared.job.get() } {
            let task = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| run_tasks(shared, task))).is_err() {
                shared.worker_panicked.store(true, Ordering::Relaxed);
            }
        }
        shared.membership.fetch_sub(1, Ordering::Release);
    }
}

/// Enters the job of `epoch` if it is still open.
fn join(shared: &Shared, epoch: u64) -> bool {
    let open_state = epoch_tag(epoch) | OPEN;
    let mut current = shared.membership.load(Ordering::SeqCst);
    loop {
        if current & !COUNT_MASK != open_state {
            return false;
        }
        match shared.membership.compare_exchange_weak(
            current,
            current + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

fn wait_for_epoch(shared: &Shared, seen: u64) -> u64 {
    for i in 0..SPIN_ITERS + YIELD_ITERS {
        let epoch = shared.epoch.load(Ordering::SeqCst);
        if epoch != seen {
            return epoch;
        }
        if i < SPIN_ITERS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    let mut guard = lock(&shared.sleep_lock);
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    let epoch = loop {
        let epoch = shared.epoch.load(Ordering::SeqCst);
        if epoch != seen {
            break epoch;
        }
        guard = shared
            .wake
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    };
    shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    epoch
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _sleep = lock(&self.shared.sleep_lock);
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

static GLOBAL: Mutex<Option<Arc<ThreadPool>>> = Mutex::new(None);

/// Threads used when nothing was configured: `HANZO_NUM_THREADS` if set to a positive
/// integer, else the available cores.
pub fn default_num_threads() -> usize {
    std::env::var("HANZO_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The process-wide pool the quantized matmuls run on.
pub fn global_pool() -> Result<Arc<ThreadPool>, QuantError> {
    let mut slot = lock(&GLOBAL);
    if let Some(pool) = slot.as_ref() {
        return Ok(Arc::clone(pool));
    }
    let pool = Arc::new(ThreadPool::new(default_num_threads())?);
    *slot = Some(Arc::clone(&pool));
    Ok(pool)
}

/// Replaces the process-wide pool by one with `n` threads (the caller included).
///
/// Results of `QLinear::forward` do not depend on `n` (each output is computed by one
/// thread in a fixed order).
pub fn set_num_threads(n: usize) -> Result<(), QuantError> {
    let pool = Arc::new(ThreadPool::new(n)?);
    *lock(&GLOBAL) = Some(pool);
    Ok(())
}

/// Threads of the process-wide pool.
pub fn num_threads() -> Result<usize, QuantError> {
    Ok(global_pool()?.num_threads())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_for_any_thread_count() {
        for threads in 1..=4 {
            let pool = ThreadPool::new(threads).unwrap();
            for n_tasks in [0, 1, 2, 7, 100] {
                let counts: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n_tasks, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn nested_submission_runs_inline_instead_of_deadlocking() {
        let pool = ThreadPool::new(2).unwrap();
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn zero_threads_is_rejected() {
        assert!(matches!(
            ThreadPool::new(0),
            Err(QuantError::ThreadCount { got: 0 })
        ));
    }
}
