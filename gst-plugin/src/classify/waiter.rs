//! Hand-over of a frame's results from the engine's worker thread to the streaming thread
//! that waits for them, with the ways out of that wait: flushing, a state change, a
//! timeout, or the engine dropping a frame. A frame is submitted to several engine
//! streams (the whole frame and each region): the wait ends when each of them has its
//! result or was dropped.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use effistream::engine::Classified;

/// How often a wait checks whether the engine dropped a frame (the engine calls back
/// with results only).
const DROP_POLL: Duration = Duration::from_millis(20);

/// The results of one frame, by stream (`None`: not submitted, dropped, or late).
pub(super) type Results = Vec<Option<Classified>>;

/// How a wait ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Every submitted stream has its result or had its frame dropped (the engine was full
    /// or failed, or the frame came too late to a batch).
    Done(Results),
    /// Flush or state change: the buffer must not go on.
    Flushing,
    /// Some results did not come in time: those that did.
    TimedOut(Results),
}

/// One frame in flight at a time: its `seq`, then its results, one per stream.
#[derive(Debug, Default)]
pub(super) struct Waiter {
    slot: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Slot {
    pending: Option<u64>,
    results: Results,
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

    /// Announces that frame `seq` is being submitted to `streams` streams; false while
    /// flushing.
    pub fn expect(&self, seq: u64, streams: usize) -> bool {
        let mut slot = self.slot();
        slot.results.clear();
        slot.results.resize_with(streams, || None);
        slot.pending = (!slot.flushing).then_some(seq);
        slot.pending.is_some()
    }

    /// The engine's callback for stream `index`: keeps `result` if it is the awaited
    /// frame's (a late result of a frame given up on is discarded).
    pub fn deliver(&self, index: usize, result: Classified) {
        let mut slot = self.slot();
        if slot.pending == Some(result.seq)
            && let Some(entry) = slot.results.get_mut(index)
        {
            *entry = Some(result);
            self.ready.notify_all();
        }
    }

    /// Waits at most `timeout` for the results of the frame announced with
    /// [`Waiter::expect`] from every stream `submitted` names (by index); `dropped(i)`
    /// says whether the engine dropped stream `i`'s frame.
    pub fn wait(
        &self,
        timeout: Duration,
        submitted: &[usize],
        dropped: impl Fn(usize) -> bool,
    ) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut slot = self.slot();
        let outcome = loop {
            if slot.flushing {
                break Outcome::Flushing;
            }
            let settled = slot.pending.is_none()
                || submitted
                    .iter()
                    .all(|&i| slot.results.get(i).is_none_or(Option::is_some) || dropped(i));
            if settled {
                break Outcome::Done(std::mem::take(&mut slot.results));
            }
            let now = Instant::now();
            if now >= deadline {
                break Outcome::TimedOut(std::mem::take(&mut slot.results));
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

    /// The seqs of `results`, by stream.
    fn seqs(results: &Results) -> Vec<Option<u64>> {
        results.iter().map(|r| r.as_ref().map(|c| c.seq)).collect()
    }

    #[test]
    fn the_awaited_result_is_returned_and_stale_ones_ignored() {
        let waiter = Arc::new(Waiter::default());
        assert!(waiter.expect(7, 1));
        waiter.deliver(0, classified(6));
        let w = waiter.clone();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w.deliver(0, classified(7));
        });
        match waiter.wait(Duration::from_secs(5), &[0], |_| false) {
            Outcome::Done(results) => assert_eq!(seqs(&results), [Some(7)]),
            other => panic!("{other:?}"),
        }
        worker.join().unwrap();
    }

    #[test]
    fn the_wait_ends_once_every_submitted_stream_has_its_result() {
        let waiter = Arc::new(Waiter::default());
        // Stream 1 was not submitted (the engine was full): nobody waits for it.
        assert!(waiter.expect(3, 3));
        let w = waiter.clone();
        let worker = std::thread::spawn(move || {
            w.deliver(2, classified(3));
            std::thread::sleep(Duration::from_millis(100));
            w.deliver(0, classified(3));
        });
        let started = Instant::now();
        match waiter.wait(Duration::from_secs(5), &[0, 2], |_| false) {
            Outcome::Done(results) => assert_eq!(seqs(&results), [Some(3), None, Some(3)]),
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "waited for both"
        );
        worker.join().unwrap();

        // A stream whose frame the engine dropped is settled without a result; one that
        // does not answer in time leaves the others' results.
        assert!(waiter.expect(4, 2));
        waiter.deliver(1, classified(4));
        match waiter.wait(Duration::from_secs(5), &[0, 1], |i| i == 0) {
            Outcome::Done(results) => assert_eq!(seqs(&results), [None, Some(4)]),
            other => panic!("{other:?}"),
        }
        assert!(waiter.expect(5, 2));
        waiter.deliver(0, classified(5));
        match waiter.wait(Duration::from_millis(50), &[0, 1], |_| false) {
            Outcome::TimedOut(results) => assert_eq!(seqs(&results), [Some(5), None]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flushing_timeouts_and_drops_end_the_wait() {
        let waiter = Arc::new(Waiter::default());
        assert!(waiter.expect(1, 1));
        let w = waiter.clone();
        let flusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w.set_flushing(true);
        });
        let started = Instant::now();
        assert!(matches!(
            waiter.wait(Duration::from_secs(10), &[0], |_| false),
            Outcome::Flushing
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        flusher.join().unwrap();
        assert!(!waiter.expect(2, 1), "no wait begins while flushing");
        waiter.set_flushing(false);

        assert!(waiter.expect(3, 1));
        match waiter.wait(Duration::from_millis(50), &[0], |_| false) {
            Outcome::TimedOut(results) => assert_eq!(seqs(&results), [None]),
            other => panic!("{other:?}"),
        }
        assert!(waiter.expect(4, 1));
        match waiter.wait(Duration::from_secs(10), &[0], |_| true) {
            Outcome::Done(results) => assert_eq!(seqs(&results), [None]),
            other => panic!("{other:?}"),
        }
    }
}
