//! Exponential backoff with jitter, for retries against AWS APIs that ask callers to back off
//! (DynamoDB unprocessed items, WAF optimistic-lock conflicts and its ~1 update/s limit), and
//! the loop that sends a batch until nothing of it is left over.

use std::time::Duration;

pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial, max }
    }

    /// The delay before the next attempt: uniformly in [d/2, d], d doubling up to `max`.
    /// Jitter keeps concurrent writers (two revokd hosts, an operator's script) from retrying
    /// in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The attempts at sending one batch whose service may take part of it and hand back the rest
/// (DynamoDB's UnprocessedItems; everything, after a throttling error). The rest must be sent
/// again after a backoff delay, and never dropped: after the last attempt allowed, the caller
/// learns how many items did not land.
pub struct Attempts {
    operation: &'static str,
    max: u32,
    made: u32,
    backoff: Backoff,
}

/// Items still left over when the last attempt allowed was made.
#[derive(Debug, PartialEq, Eq)]
pub struct LeftOver {
    pub left: usize,
    pub attempts: u32,
}

impl Attempts {
    pub fn new(operation: &'static str, max: u32, backoff: Backoff) -> Self {
        Attempts { operation, max, made: 0, backoff }
    }

    /// Called after each attempt with how many items it left over: `false` when none (done),
    /// `true` once the backoff delay has passed and the rest may go again.
    pub async fn again(&mut self, left: usize) -> Result<bool, LeftOver> {
        self.made += 1;
        if left == 0 {
            return Ok(false);
        }
        if self.made >= self.max {
            return Err(LeftOver { left, attempts: self.made });
        }
        tracing::debug!(operation = self.operation, left, attempt = self.made, "retrying the items left over, with backoff");
        tokio::time::sleep(self.backoff.next_delay()).await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
    }

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400)];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi), "{d:?} not in {lo}..{hi} ms");
        }
    }

    /// A service that takes the first item of each call and hands back the rest, driven the
    /// way the DynamoDB store drives it; the calls it got, in order.
    async fn send_all(items: Vec<u32>, max: u32) -> (Result<(), LeftOver>, Vec<Vec<u32>>) {
        let mut calls = Vec::new();
        let mut attempts = Attempts::new("test", max, quick());
        let mut left = items;
        loop {
            calls.push(left.clone());
            left = left.get(1..).unwrap_or_default().to_vec();
            match attempts.again(left.len()).await {
                Ok(true) => continue,
                Ok(false) => return (Ok(()), calls),
                Err(e) => return (Err(e), calls),
            }
        }
    }

    // moto never leaves items unprocessed, so the integration tests against it cannot reach
    // these retries: they are tested here, on our own logic.
    #[tokio::test]
    async fn items_left_over_are_sent_again_until_none_is_left() {
        let (result, calls) = send_all(vec![1, 2, 3], 8).await;
        assert_eq!(result, Ok(()));
        assert_eq!(calls, vec![vec![1, 2, 3], vec![2, 3], vec![3]], "each retry sends exactly what was left over");
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt_saying_how_many_items_were_left() {
        let (result, calls) = send_all(vec![1, 2, 3, 4, 5], 3).await;
        assert_eq!(result, Err(LeftOver { left: 2, attempts: 3 }));
        assert_eq!(calls.len(), 3);
    }

    #[tokio::test]
    async fn a_last_attempt_that_leaves_nothing_over_succeeds() {
        // Three items, three attempts: the third takes the last item, which is not a failure.
        let (result, calls) = send_all(vec![1, 2, 3], 3).await;
        assert_eq!((result, calls.len()), (Ok(()), 3));
    }
}
