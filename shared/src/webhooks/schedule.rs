//! The retry schedule of deliveries (`AGENTQ_WEBHOOK_RETRY_SCHEDULE`): the delay before each
//! attempt, e.g. `0s,5s,5m,30m,2h,5h,10h,10h` (the first is the first attempt's). Delays get
//! ±20 % jitter so failing endpoints are not hit in lockstep.

use std::time::Duration;

use crate::config::ConfigError;

/// Delays before attempts 1..=n.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse("0s,5s,5m,30m,2h,5h,10h,10h").unwrap_or(RetrySchedule(vec![Duration::ZERO]))
    }
}

impl RetrySchedule {
    /// Parses a comma list of `<number><s|m|h|ms>`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::invalid("AGENTQ_WEBHOOK_RETRY_SCHEDULE", why);
        let delays = s
            .split(',')
            .map(str::trim)
            .map(|item| {
                let split = item
                    .find(|c: char| !c.is_ascii_digit())
                    .ok_or_else(|| bad(format!("'{item}' needs a unit (ms, s, m, h)")))?;
                let (n, unit) = item.split_at(split);
                let n: u64 = n
                    .parse()
                    .map_err(|_| bad(format!("'{item}' is not a number and a unit")))?;
                Ok(match unit {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    "m" => Duration::from_secs(n * 60),
                    "h" => Duration::from_secs(n * 3600),
                    other => return Err(bad(format!("unknown unit '{other}' (ms, s, m, h)"))),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() || delays.len() > 50 {
            return Err(bad("must list 1 to 50 delays".into()));
        }
        Ok(Self(delays))
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.0.len()
    }

    /// The delay before attempt `n` (1-based), with jitter; None after the last.
    pub fn delay_before(&self, n: usize) -> Option<Duration> {
        let base = *self.0.get(n.checked_sub(1)?)?;
        let jitter = rand::random::<f64>() * 0.4 - 0.2;
        Some(base.mul_f64(1.0 + jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_standard_schedule_and_jitters_within_20_percent() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.0[2], Duration::from_secs(300));
        assert_eq!(s.delay_before(1), Some(Duration::ZERO));
        for _ in 0..100 {
            let d = s.delay_before(2).unwrap();
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        assert_eq!(s.delay_before(9), None);
        assert_eq!(
            RetrySchedule::parse("100ms, 1s").unwrap().0,
            vec![Duration::from_millis(100), Duration::from_secs(1)]
        );
        for bad in ["", "5", "5d", "x5s", "5s,,1s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad}");
        }
    }
}
