//! Back-off delays: doubling from a first delay up to a cap, each give or
//! take a random fraction (jitter, so that processes started together do
//! not retry in lockstep). The doubling is [`backon`]'s; the jitter is
//! symmetric, unlike backon's (which only adds).
//!
//! Used by follow streams, scheduled refreshes and the PostgreSQL change
//! listener.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// The delays before each retry: `first`, then doubling up to `cap`, for
/// ever, each multiplied by a random factor within `1 ± jitter`.
pub fn doubling(first: Duration, cap: Duration, jitter: f64) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap.max(first))
        .with_factor(2.0)
        .without_max_times()
        .build()
        .map(move |delay| delay.mul_f64(rand::rng().random_range(1.0 - jitter..=1.0 + jitter)))
}

/// The delay after `attempt` failed attempts in a row (the first delay for
/// 0) of [`doubling`].
pub fn nth(first: Duration, cap: Duration, jitter: f64, attempt: u32) -> Duration {
    doubling(first, cap, jitter)
        .nth(attempt as usize)
        .unwrap_or(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let delays: Vec<_> = doubling(Duration::from_millis(100), Duration::from_secs(1), 0.0)
            .take(6)
            .map(|d| (d.as_secs_f64() * 1000.0).round() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        let d = nth(Duration::from_secs(1), Duration::from_secs(60), 0.1, 2).as_secs_f64();
        assert!((3.6..=4.4).contains(&d), "{d}");
    }
}
