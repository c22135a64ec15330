//! Hand-over of a frame's result from the engine's worker thread to the streaming thread
//! that waits for it, with the ways out of that wait: flushing, a state change, a
//! timeout, or the engine dropping the frame.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use effistream::engine::Classified;

/// How often a wait checks whether the engine dropped the frame (the engine calls back
/// with results only).
const DROP_POLL: Duration = Duration::from_millis(20);

/// How a wait ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Classified(Classified),
    /// Flush or state change: the buffer must not go on.
    Flushing,
    TimedOut,
    /// The engine dropped the frame (it failed, or came too late to a batch).
    Dropped,
}

/// One frame in flight at a time: its `seq`, then its result.
#[derive(Debug, Default)]
pub(super) struct Waiter {
    slot: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Slot {
    pending: Option<u64>,
    result: Option<Classified>,
    flushing: bool,
}

impl Waiter {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While flushing, waits end at once with [`Outcome::Flushing`] and none begins.
    pub fn set_flushing(&self, flushing: bool) {
        let mut slot = self.slot();
        slot.flushing = flushing;
        self.ready.notify_all();
    }

    /// Announces that frame `seq` is being submitted; false while flushing.
    pub fn expect(&self, seq: u64) -> bool {
        let mut slot = self.slot();
        slot.result = None;
        slot.pending = (!slot.flushing).then_some(seq);
        slot.pending.is_some()
    }

    /// The engine's callback: keeps `result` if it is the awaited frame's (a late result
    /// of a frame given up on is discarded).
    pub fn deliver(&self, result: Classified) {
        let mut slot = self.slot();
        if slot.pending == Some(result.seq) {
            slot.result = Some(result);
            self.ready.notify_all();
        }
    }

    /// Waits for the result of the frame announced with [`Waiter::expect`] at most
    /// `timeout`; `dropped` says whether the engine dropped it.
    pub fn wait(&self, timeout: Duration, dropped: impl Fn() -> bool) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut slot = self.slot();
        let outcome = loop {
            if slot.flushing {
                break Outcome::Flushing;
            }
            if let Some(result) = slot.result.take() {
                break Outcome::Classified(result);
            }
            if slot.pending.is_none() || dropped() {
                break Outcome::Dropped;
            }
            let now = Instant::now();
            if now >= deadline {
                break Outcome::TimedOut;
            }
            slot = self
                .ready
                .wait_timeout(slot, (deadline - now).min(DROP_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        slot.pending = None;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    fn classified(seq: u64) -> Classified {
        Classified {
            stream: Arc::from("cam"),
            seq,
            pts_ns: None,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
            model: "efficientnet_b1_pruned",
            model_id: None,
            batch_size: 1,
            inference_ms: 1.0,
            top: Vec::new(),
            original: None,
        }
    }

    #[test]
    fn the_awaited_result_is_returned_and_stale_ones_ignored() {
        let waiter = Arc::new(Waiter::default());
        assert!(waiter.expect(7));
        waiter.deliver(classified(6));
        let w = waiter.clone();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w.deliver(classified(7));
        });
        match waiter.wait(Duration::from_secs(5), || false) {
            Outcome::Classified(c) => assert_eq!(c.seq, 7),
            other => panic!("{other:?}"),
        }
        worker.join().unwrap();
    }

    #[test]
    fn flushing_timeouts_and_drops_end_the_wait() {
        let waiter = Arc::new(Waiter::default());
        assert!(waiter.expect(1));
        let w = waiter.clone();
        let flusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w.set_flushing(true);
        });
        let started = Instant::now();
        assert!(matches!(
            waiter.wait(Duration::from_secs(10), || false),
            Outcome::Flushing
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        flusher.join().unwrap();
        assert!(!waiter.expect(2), "no wait begins while flushing");
        waiter.set_flushing(false);

        assert!(waiter.expect(3));
        assert!(matches!(
            waiter.wait(Duration::from_millis(50), || false),
            Outcome::TimedOut
        ));
        assert!(waiter.expect(4));
        assert!(matches!(
            waiter.wait(Duration::from_secs(10), || true),
            Outcome::Dropped
        ));
    }
}
