//! A team of threads that share out one image's layers, with spinning instead of sleeping
//! between them.
//!
//! One image (batch 1) splits each of its ~60 layers across the threads. With rayon's
//! fork-join every layer costs its idle threads a sleep and a wake-up (futex system calls,
//! measured at 16 % of the time on 2 cores). A [`Team`] lives for one forward pass: the
//! leader (the thread that runs the network) publishes each layer as a [`Job`] of
//! numbered chunks; helpers, started once per pass on the pool's other threads, spin
//! waiting for the next job and claim chunks with an atomic counter, as does the leader.
//! Nobody waits for a helper that has not shown up: the leader runs every chunk no one
//! else claimed, so a busy pool only makes the pass slower, never stuck.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};

/// One parallel step: `chunks` calls of `run(chunk)`, in any order, on any threads.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    chunks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// The first panic of a chunk, re-raised on the leader once every chunk is over.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Claims and runs chunks until none is left. A chunk that panics still counts as
    /// done, so that nobody waits for it; the leader re-raises the panic.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.chunks {
                return;
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (self.run)(i))) {
                let mut first = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(panic);
            }
            self.done.fetch_add(1, SeqCst);
        }
    }
}

/// Tells the helpers to go home when the leader is done, also when it panics.
struct Finish<'a>(&'a AtomicBool);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct Team {
    /// The current job, or null between jobs.
    job: AtomicPtr<()>,
    /// Helpers inside the current job (they hold a reference to it).
    inside: AtomicUsize,
    finished: AtomicBool,
    threads: AtomicUsize,
}

impl Team {
    /// Runs `lead` on this thread with `helpers` other threads of the current rayon pool
    /// helping with every [`Team::run`] it makes.
    pub fn lead<R>(helpers: usize, lead: impl FnOnce(&Team) -> R) -> R {
        let team = Team::default();
        team.threads.store(helpers + 1, SeqCst);
        if helpers == 0 {
            return lead(&team);
        }
        rayon::in_place_scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|_| team.help());
            }
            let _finish = Finish(&team.finished);
            lead(&team)
        })
    }

    /// Threads that may work on a job (the leader and its helpers).
    pub fn threads(&self) -> usize {
        self.threads.load(SeqCst)
    }

    /// Calls `run(i)` for every `i` in `0..chunks`, spread over the team; returns when all
    /// calls have returned.
    pub fn run(&self, chunks: usize, run: &(dyn Fn(usize) + Sync)) {
        if chunks == 0 {
            return;
        }
        let job = Job {
            run,
            chunks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        self.job.store(&job as *const Job<'_> as *mut (), SeqCst);
        job.work();
        // Every chunk is claimed; wait for those others run, then for every helper to
        // let go of the job before it goes out of scope.
        self.job.store(std::ptr::null_mut(), SeqCst);
        let mut spins = 0u32;
        while job.done.load(SeqCst) < chunks || self.inside.load(SeqCst) > 0 {
            backoff(&mut spins);
        }
        let panic = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(panic) = panic {
            resume_unwind(panic);
        }
    }

    /// A helper's loop: work on each job that appears, until the leader is done.
    fn help(&self) {
        let mut spins = 0u32;
        while !self.finished.load(SeqCst) {
            if self.job.load(SeqCst).is_null() {
                backoff(&mut spins);
                continue;
            }
            self.inside.fetch_add(1, SeqCst);
            // Checked again now that the leader cannot return without seeing us inside.
            let ptr = self.job.load(SeqCst);
            if !ptr.is_null() {
                // SAFETY: the job is on the leader's stack in `run`, which does not return
                // (so the job stays alive) while `inside` counts this thread; the pointer
                // was published by `run` and read after the count went up.
                let job = unsafe { &*(ptr as *const Job<'_>) };
                job.work();
                spins = 0;
            }
            self.inside.fetch_sub(1, SeqCst);
        }
    }
}

/// Spin a while, then yield the core: a helper waits through the leader's short serial
/// steps without a system call, and gives way when the wait grows long.
fn backoff(spins: &mut u32) {
    if *spins < 20_000 {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_whether_or_not_helpers_show_up() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                Team::lead(threads - 1, |team| {
                    for chunks in [0, 1, 2, 7, 100] {
                        let counts: Vec<AtomicUsize> =
                            (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                        team.run(chunks, &|i| {
                            counts[i].fetch_add(1, SeqCst);
                        });
                        assert!(counts.iter().all(|c| c.load(SeqCst) == 1));
                    }
                })
            });
        }
        // Helpers asked for in a pool too small to run them: the leader does it all.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let sum = pool.install(|| {
            Team::lead(3, |team| {
                let total = AtomicUsize::new(0);
                team.run(10, &|i| {
                    total.fetch_add(i, SeqCst);
                });
                total.load(SeqCst)
            })
        });
        assert_eq!(sum, 45);
    }

    #[test]
    fn a_panicking_chunk_reaches_the_leader_instead_of_hanging_the_team() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let caught = pool.install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                Team::lead(1, |team| {
                    team.run(8, &|i| assert!(i != 5, "chunk 5 fails"));
                })
            }))
        });
        assert!(caught.is_err());
        // The team is usable again afterwards.
        let ok = pool.install(|| {
            Team::lead(1, |team| {
                let n = AtomicUsize::new(0);
                team.run(4, &|_| {
                    n.fetch_add(1, SeqCst);
                });
                n.load(SeqCst)
            })
        });
        assert_eq!(ok, 4);
    }
}
