//! Cron schedules of character triggers: parsing and "which firing is due now".
//!
//! Times are always UTC. Accepted forms (whitespace-separated fields):
//!
//! - 6 fields: `sec min hour day-of-month month day-of-week` (`0 0 7 * * Mon`);
//! - 5 fields: `min hour day-of-month month day-of-week`, seconds are 0
//!   (`0 7 * * Mon`);
//! - 7 fields: the 6 above plus `year` (`0 0 7 * * Mon 2026-2030`);
//! - the shorthands `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//!
//! Days of week must be written as names (`Mon`, `Mon-Fri`, `Sat,Sun`) or `*`:
//! numbers are refused, because dialects disagree on them (classic cron counts
//! Sunday as 0, the parser used here as 1), and a silent off-by-one day is
//! worse than an error. When both day-of-month and day-of-week are restricted,
//! a time must match both.

use chrono::{DateTime, Duration, Utc};

/// A parsed cron expression, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as written (trimmed).
    text: String,
    schedule: cron::Schedule,
}

/// Two schedules are equal when they fire at the same times, however they
/// are written (`@daily` equals `0 0 * * *`).
impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.schedule.timeunitspec_eq(&other.schedule)
    }
}

impl Eq for CronSchedule {}

impl CronSchedule {
    /// Parses a cron expression; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (normalized, day_of_week) = match fields.as_slice() {
            [] => return Err("the expression is empty".to_owned()),
            [shorthand] if shorthand.starts_with('@') => ((*shorthand).to_owned(), None),
            // Standard five-field cron: fire at second 0.
            [_, _, _, _, dow] => (format!("0 {}", fields.join(" ")), Some(*dow)),
            [_, _, _, _, _, dow] | [_, _, _, _, _, dow, _] => (fields.join(" "), Some(*dow)),
            other => {
                return Err(format!(
                    "expected 5 fields (min hour day month weekday), 6 (sec min hour day month \
                     weekday) or 7 (… year), got {}",
                    other.len()
                ));
            }
        };
        if let Some(dow) = day_of_week
            && dow.bytes().any(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "day of week `{dow}` must use names (Mon, Mon-Fri, Sat,Sun) or `*`: cron \
                 dialects number the days differently"
            ));
        }
        let schedule = cron::Schedule::try_from(normalized).map_err(|e| parser_reason(&e))?;
        // A valid expression that never fires (e.g. 30 February) is a mistake.
        if schedule
            .after(&DateTime::<Utc>::UNIX_EPOCH)
            .next()
            .is_none()
        {
            return Err("the expression never fires".to_owned());
        }
        Ok(Self {
            text: text.trim().to_owned(),
            schedule,
        })
    }

    /// The expression as written in the character file (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The latest firing `t` with `now - max_lateness < t <= now`, or `None`
    /// when the schedule did not fire in that window.
    ///
    /// This is one backward search from `now` over the cron fields (years,
    /// months, days, hours, minutes, seconds), not a walk over every firing in
    /// the window, so it costs the same for a per-second schedule with a
    /// lateness of a year as for a weekly one.
    pub fn latest_due(&self, now: DateTime<Utc>, max_lateness: Duration) -> Option<DateTime<Utc>> {
        // The backward search yields firings strictly before its start; a
        // start one nanosecond past `now` makes a firing at exactly `now` count
        // (firings are whole seconds).
        let start = now.checked_add_signed(Duration::nanoseconds(1))?;
        let latest = self.schedule.after(&start).next_back()?;
        let after_window_start = match now.checked_sub_signed(max_lateness) {
            Some(window_start) => latest > window_start,
            // The window starts before any representable time, or (for a
            // hugely negative lateness) after `now`.
            None => max_lateness > Duration::zero(),
        };
        (after_window_start && latest <= now).then_some(latest)
    }

    /// The first firing strictly after `after`, if there is one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// The parser's reason on one line: its message echoes the expression and a
/// caret on the lines before the reason itself.
fn parser_reason(error: &cron::error::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("unparseable expression")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn per_second_cron_is_due_at_the_current_second() {
        let every_second = CronSchedule::parse("* * * * * *").unwrap();
        let now = at(2026, 3, 4, 10, 0, 7) + Duration::milliseconds(400);
        assert_eq!(
            every_second.latest_due(now, Duration::seconds(5)),
            Some(at(2026, 3, 4, 10, 0, 7))
        );
        // A huge lateness still answers at once with the latest firing.
        assert_eq!(
            every_second.latest_due(now, Duration::days(3650)),
            Some(at(2026, 3, 4, 10, 0, 7))
        );
        // Less than the 400 ms since the last firing: nothing is due.
        assert_eq!(
            every_second.latest_due(now, Duration::milliseconds(300)),
            None
        );
    }

    #[test]
    fn per_second_cron_with_long_lateness_is_fast() {
        let every_second = CronSchedule::parse("* * * * * *").unwrap();
        let now = at(2026, 3, 4, 10, 0, 7);
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(
                every_second
                    .latest_due(now, Duration::days(365 * 50))
                    .is_some()
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn weekly_cron_finds_last_monday_morning() {
        let weekly = CronSchedule::parse("0 0 7 * * Mon").unwrap();
        // Wednesday 2026-03-04; the Monday before is 2026-03-02.
        let wednesday = at(2026, 3, 4, 12, 0, 0);
        assert_eq!(
            weekly.latest_due(wednesday, Duration::days(3)),
            Some(at(2026, 3, 2, 7, 0, 0))
        );
        assert_eq!(weekly.latest_due(wednesday, Duration::days(2)), None);
        assert_eq!(weekly.next_after(wednesday), Some(at(2026, 3, 9, 7, 0, 0)));
    }

    #[test]
    fn five_field_form_fires_at_second_zero() {
        let daily = CronSchedule::parse("30 7 * * *").unwrap();
        let now = at(2026, 3, 4, 7, 30, 59);
        assert_eq!(
            daily.latest_due(now, Duration::minutes(1)),
            Some(at(2026, 3, 4, 7, 30, 0))
        );
        assert_eq!(daily.as_str(), "30 7 * * *");
        assert_eq!(daily, CronSchedule::parse("0 30 7 * * *").unwrap());
    }

    #[test]
    fn equal_schedules_fire_at_the_same_times() {
        let parse = |t| CronSchedule::parse(t).unwrap();
        assert_eq!(parse("@daily"), parse("0 0 * * *"));
        assert_eq!(
            parse("0 0 7 * * Mon-Fri"),
            parse("0 0 7 * * mon,tue,wed,thu,fri")
        );
        assert_ne!(parse("0 0 7 * * Mon"), parse("0 0 7 * * Tue"));
        assert_ne!(parse("0 0 7 * * *"), parse("1 0 7 * * *"));
    }

    #[test]
    fn seven_field_form_and_shorthand_parse() {
        let only_2027 = CronSchedule::parse("0 0 8 1 * * 2027").unwrap();
        assert_eq!(
            only_2027.next_after(at(2026, 3, 4, 0, 0, 0)),
            Some(at(2027, 1, 1, 8, 0, 0))
        );
        let daily = CronSchedule::parse("@daily").unwrap();
        assert_eq!(
            daily.latest_due(at(2026, 3, 4, 0, 0, 0), Duration::seconds(1)),
            Some(at(2026, 3, 4, 0, 0, 0))
        );
    }

    #[test]
    fn window_includes_now_and_excludes_its_start() {
        let monthly = CronSchedule::parse("0 0 8 1 * *").unwrap();
        let fire = at(2026, 4, 1, 8, 0, 0);
        // Firing exactly at `now` is due.
        assert_eq!(monthly.latest_due(fire, Duration::seconds(1)), Some(fire));
        // Firing exactly at `now - max_lateness` is not.
        let later = fire + Duration::hours(1);
        assert_eq!(monthly.latest_due(later, Duration::hours(1)), None);
        assert_eq!(
            monthly.latest_due(later, Duration::hours(1) + Duration::nanoseconds(1)),
            Some(fire)
        );
        // One second before the firing, the previous month's is the latest.
        assert_eq!(
            monthly.latest_due(fire - Duration::seconds(1), Duration::days(40)),
            Some(at(2026, 3, 1, 8, 0, 0))
        );
        assert_eq!(monthly.latest_due(fire, Duration::zero()), None);
        assert_eq!(monthly.latest_due(fire, Duration::seconds(-5)), None);
        assert_eq!(monthly.latest_due(fire, Duration::MAX), Some(fire));
        assert_eq!(monthly.latest_due(fire, Duration::MIN), None);
    }

    #[test]
    fn invalid_expressions_are_explained() {
        let cases = [
            ("", "empty"),
            ("* * *", "got 3"),
            (
                "0 0 25 * * *",
                "Hours must be less than 23. ('25' specified.)",
            ),
            ("0 61 * * * *", "Minutes"),
            ("0 0 7 * * Funday", "Funday"),
            ("0 0 7 * * 1", "names"),
            ("0 7 * * 1-5", "names"),
            ("0 0 0 30 Feb *", "never fires"),
        ];
        for (text, expected) in cases {
            let err = CronSchedule::parse(text).unwrap_err();
            assert!(err.contains(expected), "`{text}`: `{err}`");
            assert!(!err.contains('\n'), "`{text}`: `{err}`");
        }
    }
}
