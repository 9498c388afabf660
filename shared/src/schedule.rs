//! Cron schedules with a time zone: validated when an agent is saved, and asked for the next
//! fire time by the API (`next_run_at`) and the scheduler. Accepts 5-field cron (minute
//! precision) and 6-field cron (with seconds first).

use std::str::FromStr;

use chrono::offset::LocalResult;
use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
///
/// Across daylight-saving changes it behaves like classic cron: a local time that does not
/// exist (the spring-forward gap) fires at the same instant under the old offset (02:30
/// becomes 03:30 after the jump), and a local time that happens twice (the fall-back fold)
/// fires once for a schedule with fixed hours, but at every real hour for one whose hour
/// field is `*` or `*/n`.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: Tz,
    every_hour: bool,
}

/// Why a schedule or zone was refused, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Bad cron expression.
    #[error("{0}")]
    Cron(String),
    /// Unknown zone.
    #[error("unknown time zone '{0}'; use an IANA name like Europe/Paris")]
    Zone(String),
}

impl ScheduleError {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron(_) => "schedule",
            ScheduleError::Zone(_) => "timezone",
        }
    }
}

/// The default shortest interval between two fires of one schedule
/// (`AGENTQ_MIN_SCHEDULE_SECONDS`).
pub const DEFAULT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses a time zone name.
pub fn parse_zone(tz: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(tz).map_err(|_| ScheduleError::Zone(tz.to_owned()))
}

impl Schedule {
    /// Parses `expr` (5 or 6 fields) in zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz = parse_zone(tz)?;
        let fields = expr.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {}", expr.trim()),
            6 => expr.trim().to_owned(),
            n => {
                return Err(ScheduleError::Cron(format!(
                    "expected 5 fields (minute hour day month weekday) or 6 (with seconds first), got {n}"
                )))
            }
        };
        let cron =
            cron::Schedule::from_str(&full).map_err(|e| ScheduleError::Cron(e.to_string()))?;
        if cron.upcoming(tz).next().is_none() {
            return Err(ScheduleError::Cron("never fires".into()));
        }
        let hour = full.split_whitespace().nth(2).unwrap_or("*");
        let every_hour = hour == "*" || hour.starts_with("*/");
        Ok(Self {
            cron,
            tz,
            every_hour,
        })
    }

    /// The shortest gap between two fires among the next thousand (None if it fires once).
    /// Bursts (every second of one minute a day) show up in any thousand fires that reach them.
    pub fn shortest_gap(&self) -> Option<std::time::Duration> {
        let fires: Vec<DateTime<Utc>> = self.cron.upcoming(Utc).take(1000).collect();
        fires
            .windows(2)
            .filter_map(|w| (w[1] - w[0]).to_std().ok())
            .min()
    }

    /// Refuses a schedule that fires more often than once per `floor`.
    pub fn check_floor(&self, floor: std::time::Duration) -> Result<(), ScheduleError> {
        match self.shortest_gap() {
            Some(gap) if gap < floor => Err(ScheduleError::Cron(format!(
                "fires as often as every {} s; the minimum interval is {} s",
                gap.as_secs(),
                floor.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Walk local wall-clock times (as if UTC, so the crate sees no jumps), then map each
        // to an instant per the DST rules above. Near an offset change, start an hour earlier
        // in wall-clock time, so a time in the gap (fired at the old offset) is not missed.
        let offset = |t: DateTime<Utc>| self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let hour = chrono::Duration::hours(1);
        let near_change =
            offset(after - hour) != offset(after) || offset(after) != offset(after + hour);
        let mut local = after.with_timezone(&self.tz).naive_local();
        if near_change {
            local -= chrono::Duration::hours(2);
        }
        for _ in 0..10_000 {
            let candidate = self
                .cron
                .after(&Utc.from_utc_datetime(&local))
                .next()?
                .naive_utc();
            local = candidate;
            let instant = match self.tz.from_local_datetime(&candidate) {
                LocalResult::Single(t) => t,
                LocalResult::Ambiguous(first, second) => {
                    if first.with_timezone(&Utc) > after || !self.every_hour {
                        first
                    } else {
                        second
                    }
                }
                LocalResult::None => match self
                    .tz
                    .from_local_datetime(&(candidate + chrono::Duration::hours(1)))
                    .earliest()
                {
                    Some(t) => t,
                    None => continue,
                },
            };
            let instant = instant.with_timezone(&Utc);
            if instant > after {
                return Some(instant);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields_parse_and_fire_in_their_zone() {
        let s = Schedule::parse("0 7 * * *", "Europe/Paris").unwrap();
        let after: DateTime<Utc> = "2026-01-15T10:00:00Z".parse().unwrap();
        // 07:00 in Paris in winter is 06:00 UTC, the next day.
        assert_eq!(
            s.next_after(after).unwrap(),
            "2026-01-16T06:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let s = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(after).unwrap(),
            "2026-01-15T10:00:10Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    fn fires(expr: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, "Europe/Paris").unwrap();
        let mut t: DateTime<Utc> = from.parse().unwrap();
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn a_fixed_time_in_the_spring_gap_fires_once_at_the_old_offset() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that night.
        assert_eq!(
            fires("30 2 * * *", "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:30:00+00:00",
                "2026-03-30T00:30:00+00:00",
                "2026-03-31T00:30:00+00:00"
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_autumn_fold_fires_once() {
        // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice.
        assert_eq!(
            fires("30 2 * * *", "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00",
                "2026-10-27T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn hourly_schedules_fire_every_real_hour_across_both_changes() {
        assert_eq!(
            fires("0 * * * *", "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T03:00:00+00:00"
            ]
        );
        assert_eq!(
            fires("0 * * * *", "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T02:00:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_input_names_its_field() {
        assert_eq!(
            Schedule::parse("0 7 * *", "UTC").unwrap_err().field(),
            "schedule"
        );
        assert_eq!(
            Schedule::parse("0 99 * * *", "UTC").unwrap_err().field(),
            "schedule"
        );
        assert_eq!(
            Schedule::parse("0 7 * * *", "Mars/Olympus")
                .unwrap_err()
                .field(),
            "timezone"
        );
    }

    #[test]
    fn schedules_faster_than_the_floor_are_refused() {
        let floor = DEFAULT_MIN_INTERVAL;
        for fast in [
            "* * * * * *",
            "*/30 * * * * *",
            "0,1 0 * * * *",
            "* 0 0 1 1 *",
        ] {
            let s = Schedule::parse(fast, "UTC").unwrap();
            assert!(s.check_floor(floor).is_err(), "{fast}");
        }
        for ok in ["* * * * *", "0 * * * * *", "0 7 * * *", "0 0 1 1 *"] {
            let s = Schedule::parse(ok, "Europe/Paris").unwrap();
            assert!(s.check_floor(floor).is_ok(), "{ok}");
        }
    }
}
