//! Measurements of the Lambda functions, run by `scripts/bench.sh`:
//!
//! - [`runtime`]: a fake Lambda Runtime API (the three endpoints a function calls), which records
//!   when the first `GET /2018-06-01/runtime/invocation/next` arrives and serves events;
//! - [`probe`]: starts a release binary against it, for init time and peak RSS;
//! - [`fixtures`]: the events and inputs (events that need no network, a signed webhook body, a
//!   realistic payment request);
//! - [`report`]: reads the probe, criterion's estimates and the package sizes, prints the table and
//!   writes `bench/results.json` and the results block of `docs/performance.md`.
//!
//! Nothing here asserts on time: these are measurements, not tests.
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod probe;
pub mod report;
pub mod runtime;

/// Median of the samples (mean of the two middle ones for an even count); `None` when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The `p`-th percentile (nearest rank, `p` in 0..=100); `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_and_percentiles() {
        assert_eq!(super::median(&[]), None);
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(super::percentile(&[1.0, 2.0, 3.0, 4.0], 90.0), Some(4.0));
        assert_eq!(super::percentile(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
    }
}
