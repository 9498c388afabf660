//! Cron schedules with a time zone: validated when an agent is saved, and asked for the next
//! fire time by the API (`next_run_at`) and the scheduler. Accepts 5-field cron (minute
//! precision) and 6-field cron (with seconds first).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: Tz,
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
        Ok(Self { cron, tz })
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
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
}
