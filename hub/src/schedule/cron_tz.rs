//! A cron schedule in a time zone, with our own DST rule (see the module docs of
//! [`crate::schedule`]): the `cron` crate enumerates wall-clock times only; this module maps
//! each to an instant.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::ScheduleError;

/// How far before the wall-clock time of `after` the enumeration starts: longer than any
/// DST shift, so a skipped or repeated time near `after` is not missed.
const LOOKBACK_HOURS: i64 = 3;

/// Most wall-clock candidates examined for one answer (an every-second schedule needs
/// `LOOKBACK_HOURS * 3600` of them).
const MAX_CANDIDATES: usize = 100_000;

/// Parses an IANA time zone name.
pub(super) fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

/// A cron expression evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    schedule: cron::Schedule,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (six or seven fields); `what` names the setting in the error.
    pub fn parse(expr: &str, tz: Tz, what: &str) -> Result<Self, ScheduleError> {
        let schedule = cron::Schedule::from_str(expr).map_err(|e| ScheduleError::Cron {
            what: what.to_owned(),
            expr: expr.to_owned(),
            message: e.to_string(),
        })?;
        Ok(CronSchedule {
            expr: expr.to_owned(),
            schedule,
            tz,
        })
    }

    /// Like [`CronSchedule::parse`] with a zone name.
    pub fn parse_in(expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::parse(expr, parse_tz(time_zone)?, "schedule")
    }

    /// The expression as configured.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first instant strictly after `after` at which the schedule fires, by our DST
    /// rule; `None` when it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz).naive_local();
        let start = local.checked_sub_signed(Duration::hours(LOOKBACK_HOURS))?;
        // Wall-clock times, enumerated in a zone without DST (UTC stands in for "naive").
        let start = Utc.from_utc_datetime(&start);
        // Resolution is monotone in wall-clock order, so the first one past `after` is the
        // earliest.
        self.schedule
            .after(&start)
            .take(MAX_CANDIDATES)
            .filter_map(|wall| self.resolve(wall.naive_utc()))
            .find(|t| *t > after)
    }

    /// The instant a wall-clock time stands for: itself; its first occurrence when repeated;
    /// the first valid time after it when skipped.
    pub fn resolve(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
            LocalResult::None => {
                // Skipped: time-zone transitions fall on whole minutes, so the first valid
                // whole minute after the wall-clock time is the end of the gap.
                let mut m = wall.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
                for _ in 0..(48 * 60) {
                    match self.tz.from_local_datetime(&m) {
                        LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                        LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
                        LocalResult::None => m += Duration::minutes(1),
                    }
                }
                None
            }
        }
    }
}
