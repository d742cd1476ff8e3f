//! Spacing a loop's requests at a rate, one at a time.

use std::time::{Duration, Instant};

/// Spaces requests `gap` apart, or not at all without a gap. A late answer
/// moves the schedule instead of bunching the next requests, so a loop never
/// goes over its rate.
pub struct Pace {
    gap: Option<Duration>,
    next: Instant,
}

impl Pace {
    /// `rate` requests per second (none: back to back), the first after `offset`.
    pub fn new(rate: Option<f64>, offset: Duration) -> Pace {
        Pace {
            gap: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now() + offset,
        }
    }

    /// Waits for the next request's turn.
    pub async fn wait(&mut self) {
        if let Some(gap) = self.gap {
            tokio::time::sleep_until(self.next.into()).await;
            self.next = (self.next + gap).max(Instant::now());
        }
    }
}
