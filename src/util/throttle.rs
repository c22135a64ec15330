//! Rate limiting of warnings about events that can repeat at frame rate (dropped
//! messages, late results): the plugin's bus warnings and the MQTT publisher's log.

use std::time::{Duration, Instant};

/// Counts events and says when to report them: the first at once, then at most once per
/// `interval`, with the number of events since the previous report.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last_report: Option<Instant>,
    unreported: u64,
    total: u64,
}

/// What to put in a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Events since the previous report, this one included.
    pub since_last: u64,
    /// Events since the element started.
    pub total: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_report: None,
            unreported: 0,
            total: 0,
        }
    }

    /// Counts one event; `Some` when a warning is due.
    pub fn count(&mut self) -> Option<Report> {
        self.count_at(Instant::now())
    }

    fn count_at(&mut self, now: Instant) -> Option<Report> {
        self.unreported += 1;
        self.total += 1;
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        let report = Report {
            since_last: self.unreported,
            total: self.total,
        };
        self.unreported = 0;
        Some(report)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_reports_then_once_per_interval_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        let first = t.count_at(start);
        assert_eq!(
            first,
            Some(Report {
                since_last: 1,
                total: 1
            })
        );
        for s in 1..10 {
            assert_eq!(t.count_at(start + Duration::from_secs(s)), None);
        }
        let next = t.count_at(start + Duration::from_secs(10));
        assert_eq!(
            next,
            Some(Report {
                since_last: 10,
                total: 11
            })
        );
        assert_eq!(t.total(), 11);
    }
}
