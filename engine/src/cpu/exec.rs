//! Where parallel kernel tasks run: the current rayon pool (kernels called on their own), or a
//! [`Team`] of threads that spin between tasks, which a [`CpuStack`](super::CpuStack) uses.
//!
//! A decode step forks and joins ~5 times per layer, each for tens of microseconds of work.
//! rayon's idle workers yield and then sleep, and on a busy machine every yield or wake-up
//! can cost a scheduler time slice: two rayon threads decoded slower than one. A team's
//! workers spin (with `pause`) while steps keep coming and park only after a quiet spell, and
//! the caller waits only for tasks a worker actually claimed, never for a worker to show up.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// Runs `n` independent tasks `f(0..n)`, returning when all are done.
pub(crate) trait Exec {
    fn threads(&self) -> usize;
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync));
}

/// The rayon pool of the caller (the global one outside `ThreadPool::install`).
pub(crate) struct Rayon;

impl Exec for Rayon {
    fn threads(&self) -> usize {
        rayon::current_num_threads()
    }
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n).into_par_iter().for_each(f);
    }
}

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// The job word: generation (24 bits), task count (20 bits), next task (20 bits). Claiming
/// a task is one compare-and-swap on it, so a claim is only ever made on the job it names.
const IDX_BITS: u32 = 20;
const MAX_TASKS: usize = (1 << IDX_BITS) - 1;
const MASK: u64 = (1 << IDX_BITS) - 1;

fn pack(generation: u64, n: usize, next: usize) -> u64 {
    (generation << (2 * IDX_BITS)) | ((n as u64) << IDX_BITS) | next as u64
}
fn generation(word: u64) -> u64 {
    word >> (2 * IDX_BITS)
}

type TaskRef<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    word: AtomicU64,
    /// Points at the caller's `TaskRef` of the current job.
    job: AtomicPtr<()>,
    done: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    quit: AtomicBool,
    panicked: AtomicBool,
    /// How long an idle worker spins before it parks: [`SPIN`], or nothing when the team has
    /// more threads than the machine has cores. Spinning workers would then take the cores
    /// from the ones holding tasks, and each step would wait out whole scheduler slices.
    spin: Duration,
    /// Spins between `yield_now`s while the caller waits for claimed tasks.
    yield_every: u32,
}

/// The calling thread plus `threads - 1` workers.
pub(crate) struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time.
    entry: Mutex<()>,
}

impl Team {
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let oversubscribed = threads > cores;
        let shared = Arc::new(Shared {
            word: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            quit: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            spin: if oversubscribed { Duration::ZERO } else { SPIN },
            yield_every: if oversubscribed { 16 } else { 4096 },
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let sh = shared.clone();
            let spawned =
                std::thread::Builder::new().name(format!("wllm-cpu-{i}")).spawn(move || worker(&sh));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    stop(&shared, &mut workers);
                    return Err(e);
                }
            }
        }
        Ok(Team { shared, workers, entry: Mutex::new(()) })
    }
}

/// Claims and runs tasks of the job in `word` until none is left or another job replaced it.
fn work(sh: &Shared, mut word: u64) {
    loop {
        let (n, next) = (((word >> IDX_BITS) & MASK) as usize, (word & MASK) as usize);
        if next >= n {
            return;
        }
        match sh.word.compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: the claim succeeded on this job's word, so the job is not complete
                // (`done` < n) and its caller is still inside `Team::run`, keeping the
                // `TaskRef` it points `job` at alive; `job` was stored before the word.
                let f = unsafe { *(sh.job.load(Ordering::Acquire) as *const TaskRef<'_>) };
                if catch_unwind(AssertUnwindSafe(|| f(next))).is_err() {
                    sh.panicked.store(true, Ordering::Relaxed);
                }
                sh.done.fetch_add(1, Ordering::Release);
                word = sh.word.load(Ordering::Acquire);
            }
            Err(now) => word = now,
        }
        if generation(word) != generation(sh.word.load(Ordering::Relaxed)) {
            return;
        }
    }
}

fn worker(sh: &Shared) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        let word = loop {
            if sh.quit.load(Ordering::Acquire) {
                return;
            }
            let w = sh.word.load(Ordering::Acquire);
            if generation(w) != seen {
                break w;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() >= sh.spin {
                let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                while generation(sh.word.load(Ordering::SeqCst)) == seen && !sh.quit.load(Ordering::SeqCst) {
                    g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        };
        seen = generation(word);
        work(sh, word);
    }
}

fn stop(sh: &Shared, workers: &mut Vec<JoinHandle<()>>) {
    sh.quit.store(true, Ordering::SeqCst);
    drop(sh.lock.lock().unwrap_or_else(|e| e.into_inner()));
    sh.wake.notify_all();
    for w in workers.drain(..) {
        let _ = w.join();
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        stop(&self.shared, &mut self.workers);
    }
}

impl Exec for Team {
    fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n <= 1 {
            (0..n).for_each(f);
            return;
        }
        if n > MAX_TASKS {
            for start in (0..n).step_by(MAX_TASKS) {
                let len = MAX_TASKS.min(n - start);
                self.run(len, &|i| f(start + i));
            }
            return;
        }
        let _entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        let task: TaskRef<'_> = f;
        sh.job.store(&task as *const TaskRef<'_> as *mut (), Ordering::Relaxed);
        sh.done.store(0, Ordering::Relaxed);
        let g = generation(sh.word.load(Ordering::Relaxed)).wrapping_add(1) & ((1 << 24) - 1);
        // Generation 0 is what idle workers start from; skip it when wrapping.
        let word = pack(g.max(1), n, 0);
        sh.word.store(word, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            drop(sh.lock.lock().unwrap_or_else(|e| e.into_inner()));
            sh.wake.notify_all();
        }
        work(sh, word);
        let mut spins = 0u32;
        while sh.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins.is_multiple_of(sh.yield_every) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a CPU kernel task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far more threads than cores (`--threads 1000` on a small machine): idle workers must not
    /// spin the cores away from the ones holding tasks. Spinning, this took minutes; parking,
    /// a couple of seconds.
    #[test]
    fn an_oversubscribed_team_keeps_up() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores * 64;
        let team = Team::new(threads).unwrap();
        let sum = AtomicUsize::new(0);
        let start = Instant::now();
        // As a decode step splits work: one task per thread, each a little work.
        for _ in 0..600 {
            team.run(threads, &|i| {
                let mut x = i as u64;
                for k in 0..2000u64 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(k));
                }
                std::hint::black_box(x);
                sum.fetch_add(i, Ordering::Relaxed);
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 600 * (threads * (threads - 1) / 2));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(10), "600 jobs on {threads} threads took {took:?}");
    }
}
