//! Joining a thread by a deadline.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often [`join_by`] looks whether the thread has ended.
const POLL: Duration = Duration::from_millis(2);

/// Waits until `deadline` for the thread to end, then joins it: `Ok` with what
/// [`JoinHandle::join`] returned (`Err` if the thread panicked). A thread still running at
/// the deadline is handed back as `Err`; dropping that handle leaves it detached.
pub fn join_by<T>(
    handle: JoinHandle<T>,
    deadline: Instant,
) -> Result<thread::Result<T>, JoinHandle<T>> {
    loop {
        if handle.is_finished() {
            return Ok(handle.join());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(handle);
        }
        thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_a_thread_that_ends_and_hands_back_one_that_does_not() {
        let quick = thread::spawn(|| 7);
        let joined = join_by(quick, Instant::now() + Duration::from_secs(5));
        assert_eq!(joined.ok().and_then(|r| r.ok()), Some(7));

        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let slow = thread::spawn(move || rx.recv().is_err());
        let start = Instant::now();
        let slow = join_by(slow, start + Duration::from_millis(30)).expect_err("still running");
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(tx);
        assert_eq!(
            join_by(slow, Instant::now() + Duration::from_secs(5))
                .ok()
                .and_then(|r| r.ok()),
            Some(true)
        );
    }
}
