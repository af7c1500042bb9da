//! When a sync runs under `wharf run`: `manual`, `continuous`, `hourly` (the default), `daily`,
//! `weekly`, an interval (`30s`, `15m`, `1h`) or a cron expression (UTC).
//!
//! Every timed schedule is on the wall clock (UTC): `hourly` runs at :00, `daily` at 00:00,
//! `weekly` on Mondays at 00:00, an interval at the multiples of its length since the Unix
//! epoch (`15m` at :00, :15, :30 and :45; `1h` at :00), so runs do not depend on when the
//! service started; a sync's `jitter` delays each one by a random amount.
//!
//! Cron expressions have five fields (`minute hour day-of-month month day-of-week`) or six with
//! a leading seconds field. Each field takes `*`, numbers, ranges `a-b`, steps `*/n` and
//! `a-b/n`, and comma lists; months and weekdays also take three-letter names (`jan`, `mon`),
//! and weekday 7 is Sunday like 0. As in classic cron, when both day fields are restricted a
//! day matches if either does. Times are UTC.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Timelike, Utc};

/// A sync's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Only when triggered (`POST /syncs/{name}/run`).
    Manual,
    /// Back to back: poll again as soon as a run ends (after the service's poll interval).
    Continuous,
    /// Every interval, at its multiples since the Unix epoch (UTC).
    Every(Duration),
    /// At the times a cron expression names.
    Cron(Box<Cron>),
}

impl Schedule {
    /// Parses `manual`, `continuous`, `hourly`, `daily`, `weekly`, an interval (`250ms`,
    /// `30s`, `15m`, `1h`, `1d`) or a cron expression. The error says what is expected.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let t = s.trim();
        let keyword = match t {
            "manual" => return Ok(Schedule::Manual),
            "continuous" => return Ok(Schedule::Continuous),
            "hourly" => Some("0 * * * *"),
            "daily" => Some("0 0 * * *"),
            "weekly" => Some("0 0 * * mon"),
            _ => None,
        };
        if let Some(expr) = keyword {
            let mut cron = Cron::parse(expr)?;
            cron.text = t.to_string();
            return Ok(Schedule::Cron(Box::new(cron)));
        }
        if t.split_whitespace().count() >= 5 {
            return Cron::parse(t).map(|c| Schedule::Cron(Box::new(c)));
        }
        match crate::duration::parse_duration(t) {
            Some(d) if !d.is_zero() => Ok(Schedule::Every(d)),
            Some(_) => Err(format!(
                "`{s}`: an interval must be longer than zero (or use `continuous`)"
            )),
            None => Err(format!(
                "`{s}`: write `manual`, `continuous`, `hourly`, `daily`, `weekly`, an interval like `15m`, or a cron expression like `*/5 * * * *`"
            )),
        }
    }

    /// The first time strictly after `after` at which a run is due, or `None` (manual and
    /// continuous runs are not timed). Intervals are multiples of their length since the Unix
    /// epoch, so runs do not drift and do not depend on when the service started.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Manual | Schedule::Continuous => None,
            Schedule::Every(d) => {
                let step = ChronoDuration::from_std(*d).ok()?.num_milliseconds().max(1);
                let n = after.timestamp_millis().div_euclid(step) + 1;
                DateTime::from_timestamp_millis(n.checked_mul(step)?)
            }
            Schedule::Cron(c) => c.next_after(after),
        }
    }

    /// Whether runs are timed (not `manual` or `continuous`).
    pub fn is_timed(&self) -> bool {
        matches!(self, Schedule::Every(_) | Schedule::Cron(_))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Manual => f.write_str("manual"),
            Schedule::Continuous => f.write_str("continuous"),
            Schedule::Every(d) => write!(f, "every {d:?}"),
            Schedule::Cron(c) if !c.text.contains(' ') => f.write_str(&c.text),
            Schedule::Cron(c) => write!(f, "cron {}", c.text),
        }
    }
}

/// A schedule as the config writes it (`hourly`, `15m`, `*/5 * * * *`, …), parsed when the
/// config is read: a bad one is an error naming its key. Shown as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSetting {
    text: String,
    parsed: Schedule,
}

impl ScheduleSetting {
    /// Parses `text` ([`Schedule::parse`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(ScheduleSetting {
            parsed: Schedule::parse(text)?,
            text: text.to_string(),
        })
    }

    /// The schedule.
    pub fn parsed(&self) -> &Schedule {
        &self.parsed
    }

    /// As the config wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ScheduleSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for ScheduleSetting {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl<'de> serde::Deserialize<'de> for ScheduleSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ScheduleSetting::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month / day-of-week fields were `*` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses five or six fields.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "`{text}`: a cron expression has 5 fields (minute hour day month weekday) or 6 (with seconds first), not {n}"
                ))
            }
        };
        let field = |v: &str, name: &str, lo: u32, hi: u32, names: &[&str]| {
            parse_field(v, lo, hi, names).map_err(|e| format!("`{text}`: {name} field `{v}`: {e}"))
        };
        let mut weekdays = field(rest[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            seconds: field(sec, "seconds", 0, 59, &[])?,
            minutes: field(rest[0], "minute", 0, 59, &[])?,
            hours: field(rest[1], "hour", 0, 23, &[])?,
            days: field(rest[2], "day-of-month", 1, 31, &[])?,
            months: field(rest[3], "month", 1, 12, &MONTHS)?,
            weekdays,
            any_day: rest[2] == "*" || rest[2] == "?",
            any_weekday: rest[4] == "*" || rest[4] == "?",
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first matching second strictly after `after`; `None` if none within eight years
    /// (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_nanosecond(0)? + ChronoDuration::seconds(1);
        let limit = after + ChronoDuration::days(8 * 366);
        while t <= limit {
            if self.months & (1 << t.month()) == 0 {
                // First second of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = t
                    .with_day(1)?
                    .with_hour(0)?
                    .with_minute(0)?
                    .with_second(0)?
                    .with_month(m)?
                    .with_year(y)?;
                continue;
            }
            if !self.day_matches(&t) {
                t = t.with_hour(0)?.with_minute(0)?.with_second(0)? + ChronoDuration::days(1);
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)?.with_second(0)? + ChronoDuration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.with_second(0)? + ChronoDuration::minutes(1);
                continue;
            }
            if self.seconds & (1 << t.second()) == 0 {
                t += ChronoDuration::seconds(1);
                continue;
            }
            return Some(t);
        }
        None
    }
}

/// One field as a bit set of the values it allows.
fn parse_field(v: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Month names count from 1, weekday names from 0 (Sunday).
            let first = if names.len() == 12 { 1 } else { 0 };
            return Ok(i as u32 + first);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("`{s}` is not a number from {lo} to {hi}"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in v.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step `{s}` is not a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (value(r)?, hi),
                None => {
                    let n = value(r)?;
                    (n, n)
                }
            },
        };
        if a > b {
            return Err(format!("range {a}-{b} is backwards"));
        }
        let mut n = a;
        while n <= b {
            bits |= 1 << n;
            n += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        Schedule::parse(expr)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn cron_fires_at_the_named_times() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-30T10:07:12Z"),
            "2026-11-30T10:15:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-30T10:15:00Z"),
            "2026-11-30T10:30:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2026-11-30T03:00:00Z"),
            "2026-12-01T03:00:00+00:00"
        );
        // Monday to Friday at 09:30; 2026-12-05 is a Saturday.
        assert_eq!(
            next("30 9 * * mon-fri", "2026-12-04T10:00:00Z"),
            "2026-12-07T09:30:00+00:00"
        );
        // Month boundaries and years.
        assert_eq!(
            next("0 0 1 jan *", "2026-11-30T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 12 31 * *", "2026-11-30T00:00:00Z"),
            "2026-12-31T12:00:00+00:00"
        );
        // Both day fields restricted: either matches (the 1st, or a Sunday).
        assert_eq!(
            next("0 0 1 * 0", "2026-11-30T00:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * 7", "2026-12-01T00:00:00Z"),
            "2026-12-06T00:00:00+00:00"
        );
        // Leap day.
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        // Six fields: seconds first; lists and ranges with steps.
        assert_eq!(
            next("*/10 * * * * *", "2026-11-30T10:00:01Z"),
            "2026-11-30T10:00:10+00:00"
        );
        assert_eq!(
            next("0 5,35 8-18/2 * * *", "2026-11-30T09:00:00Z"),
            "2026-11-30T10:05:00+00:00"
        );
        assert_eq!(
            next("15/20 * * * *", "2026-11-30T10:36:00Z"),
            "2026-11-30T10:55:00+00:00"
        );
    }

    #[test]
    fn a_cron_that_never_fires_says_none() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(Utc::now()), None);
    }

    #[test]
    fn intervals_are_on_the_wall_clock_without_drift() {
        let origin = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        let s = Schedule::parse("30s").unwrap();
        assert_eq!(
            s.next_after(origin - ChronoDuration::seconds(5)),
            Some(origin)
        );
        assert_eq!(
            s.next_after(origin),
            Some(origin + ChronoDuration::seconds(30))
        );
        // A run that ended late does not shift the grid.
        assert_eq!(
            s.next_after(origin + ChronoDuration::milliseconds(31_200)),
            Some(origin + ChronoDuration::seconds(60))
        );
        // 15 minutes: :00, :15, :30, :45; an hour: :00 — whenever the service started.
        assert_eq!(
            next("15m", "2026-11-30T10:37:12Z"),
            "2026-11-30T10:45:00+00:00"
        );
        assert_eq!(
            next("1h", "2026-11-30T10:37:12Z"),
            "2026-11-30T11:00:00+00:00"
        );
        assert_eq!(
            next("1d", "2026-11-30T10:37:12Z"),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(Schedule::parse("manual").unwrap().next_after(origin), None);
        assert_eq!(Schedule::parse("continuous").unwrap(), Schedule::Continuous);
    }

    #[test]
    fn hourly_daily_and_weekly_are_on_the_wall_clock() {
        assert_eq!(
            next("hourly", "2026-11-30T10:37:12Z"),
            "2026-11-30T11:00:00+00:00"
        );
        assert_eq!(
            next("hourly", "2026-11-30T11:00:00Z"),
            "2026-11-30T12:00:00+00:00"
        );
        assert_eq!(
            next("daily", "2026-11-30T10:37:12Z"),
            "2026-12-01T00:00:00+00:00"
        );
        // 2026-12-04 is a Friday: the next Monday is the 7th.
        assert_eq!(
            next("weekly", "2026-12-04T10:37:12Z"),
            "2026-12-07T00:00:00+00:00"
        );
        assert_eq!(Schedule::parse("hourly").unwrap().to_string(), "hourly");
        assert_eq!(
            Schedule::parse("*/5 * * * *").unwrap().to_string(),
            "cron */5 * * * *"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_expected() {
        for (text, says) in [
            ("soon", "write `manual`, `continuous`, `hourly`"),
            ("0s", "longer than zero"),
            ("61 * * * *", "minute field `61`: 61 is outside 0-59"),
            ("* * * * * * *", "5 fields"),
            ("*/0 * * * *", "step `0`"),
            ("0 0 * foo *", "month field `foo`"),
            ("0 20-10 * * *", "backwards"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
