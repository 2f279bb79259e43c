//! Cron expressions, as austin's `expectPushTime` (Quartz: `sec min hour day month weekday
//! [year]`, `?` for "no particular value") or as crontab writes them (`min hour day month
//! weekday`), evaluated in the job's time zone.
//!
//! Each field takes `*`, `?` (day and weekday), numbers, names (`JAN`–`DEC`, `SUN`–`SAT`),
//! ranges `a-b`, steps `*/n`, `a/n`, `a-b/n` and lists of those. Weekdays count from Sunday:
//! Quartz's 1–7, crontab's 0–6 (and 7). When both day and weekday are restricted, a day
//! matching either one is a match (crontab's rule; Quartz asks for a `?` in one of them).
//! Quartz's `L`, `W` and `#` are refused with the reason.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// A parsed cron expression: the allowed values of each field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Sunday is bit 0.
    weekdays: u64,
    /// Years from 1970, as a list (empty: every year).
    years: Vec<i32>,
    /// Whether day and weekday were both restricted (then either matches).
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// How far ahead [`Cron::next_after`] looks (an expression that never matches, e.g. 30 FEB).
const HORIZON_DAYS: i64 = 366 * 5;

impl Cron {
    /// Parses `text`; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (quartz, f) = match fields.len() {
            5 => (false, [&["0"][..], &fields[..]].concat()),
            6 | 7 => (true, fields.clone()),
            n => {
                return Err(format!(
                    "`{text}` has {n} fields; write 6 (sec min hour day month weekday, as austin's \"0 0 10 * * ?\") or 5 (min hour day month weekday)"
                ));
            }
        };
        let field = |i: usize, name: &str, lo: u32, hi: u32, names: &[&str], shift: u32| {
            bits(f[i], lo, hi, names, shift).map_err(|why| format!("{name} `{}`: {why}", f[i]))
        };
        let seconds = field(0, "second", 0, 59, &[], 0)?;
        let minutes = field(1, "minute", 0, 59, &[], 0)?;
        let hours = field(2, "hour", 0, 23, &[], 0)?;
        let days = field(3, "day of month", 1, 31, &[], 0)?;
        let months = field(4, "month", 1, 12, &MONTHS, 1)?;
        // Quartz counts weekdays 1 (Sunday) to 7; crontab 0 (Sunday) to 6, and 7 for Sunday.
        let weekdays = if quartz {
            field(5, "weekday", 1, 7, &WEEKDAYS, 1)? >> 1
        } else {
            let w = field(5, "weekday", 0, 7, &WEEKDAYS, 0)?;
            (w | (w >> 7)) & 0x7f
        };
        let years = match f.get(6) {
            None => Vec::new(),
            Some(y) if is_any(y) => Vec::new(),
            Some(y) => years_of(y).map_err(|why| format!("year `{y}`: {why}"))?,
        };
        // As Vixie cron: a field that starts with `*` (or `?`), `*/2` too, restricts nothing
        // of the other.
        let restricted = |s: &str| !s.starts_with(['*', '?']);
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            years,
            either_day: restricted(f[3]) && restricted(f[5]),
        })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let day = self.days & (1 << d.day()) != 0;
        let weekday = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        let year = self.years.is_empty() || self.years.contains(&d.year());
        year && self.months & (1 << d.month()) != 0
            && if self.either_day {
                day || weekday
            } else {
                day && weekday
            }
    }

    /// The first local time after `after` (to the second) that the expression names,
    /// within five years. A local time a clock change skips is passed over; one it repeats
    /// is taken at its first occurrence.
    pub fn next_after(&self, tz: Tz, after_ms: i64) -> Option<i64> {
        let after = tz.timestamp_millis_opt(after_ms).single()?.naive_local();
        let mut t = after.with_nanosecond(0)? + chrono::Duration::seconds(1);
        let end = t + chrono::Duration::days(HORIZON_DAYS);
        while t < end {
            if !self.day_matches(t.date()) {
                t = NaiveDateTime::from(t.date().succ_opt()?);
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)?.with_second(0)? + chrono::Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.with_second(0)? + chrono::Duration::minutes(1);
                continue;
            }
            if self.seconds & (1 << t.second()) == 0 {
                t += chrono::Duration::seconds(1);
                continue;
            }
            match tz.from_local_datetime(&t).earliest() {
                Some(at) if at.timestamp_millis() > after_ms => return Some(at.timestamp_millis()),
                // A repeated hour's second occurrence, or a skipped local time.
                _ => t += chrono::Duration::seconds(1),
            }
        }
        None
    }

    /// The last time in `(from_ms, to_ms]` that the expression names, if any.
    pub fn last_in(&self, tz: Tz, from_ms: i64, to_ms: i64) -> Option<i64> {
        let mut last = None;
        let mut at = from_ms;
        while let Some(next) = self.next_after(tz, at).filter(|&n| n <= to_ms) {
            last = Some(next);
            at = next;
        }
        last
    }
}

fn is_any(s: &str) -> bool {
    s == "*" || s == "?"
}

/// The years a year field names (its own range: 1970–2099).
fn years_of(s: &str) -> Result<Vec<i32>, String> {
    let mut years = Vec::new();
    for item in s.split(',') {
        let (range, step, stepped) = split_step(item)?;
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (number(a, &[], 0)?, number(b, &[], 0)?),
            None if range == "*" => (1970, 2099),
            None => {
                let y = number(range, &[], 0)?;
                (y, if stepped { 2099 } else { y })
            }
        };
        if !(1970..=2099).contains(&lo) || !(1970..=2099).contains(&hi) || lo > hi {
            return Err(format!("`{item}` is not within 1970-2099"));
        }
        years.extend((lo..=hi).step_by(step as usize).map(|y| y as i32));
    }
    Ok(years)
}

/// The values one field allows, as a bit set (bit `v` for value `v`).
fn bits(s: &str, lo: u32, hi: u32, names: &[&str], shift: u32) -> Result<u64, String> {
    if s.contains(['L', 'W', '#']) && !names.iter().any(|n| s.to_ascii_uppercase().contains(n)) {
        return Err("L, W and # are not supported; name the days, e.g. 1,15 or MON-FRI".into());
    }
    let mut set = 0u64;
    for item in s.split(',') {
        if item.is_empty() {
            return Err("an empty item in the list".into());
        }
        let (range, step, stepped) = split_step(item)?;
        let (a, b) = if is_any(range) {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, names, shift)?, number(b, names, shift)?)
        } else {
            let a = number(range, names, shift)?;
            (a, if stepped { hi } else { a })
        };
        if a < lo || b > hi {
            return Err(format!("`{item}` is outside {lo}-{hi}"));
        }
        if a > b {
            return Err(format!(
                "`{item}` runs backwards; write the smaller value first"
            ));
        }
        for v in (a..=b).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

/// An item's range and its step; `a/n` (a step after a single value) runs to the field's end.
fn split_step(item: &str) -> Result<(&str, u32, bool), String> {
    match item.split_once('/') {
        None => Ok((item, 1, false)),
        Some((range, step)) => match step.parse::<u32>() {
            Ok(n) if n > 0 => Ok((range, n, true)),
            _ => Err(format!(
                "`{item}`: the step after / must be a positive number"
            )),
        },
    }
}

fn number(s: &str, names: &[&str], shift: u32) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    names
        .iter()
        .position(|n| *n == upper)
        .map(|i| i as u32 + shift)
        .ok_or_else(|| match names.first() {
            Some(_) => format!(
                "`{s}` is not a number nor a name ({}-{})",
                names[0],
                names[names.len() - 1]
            ),
            None => format!("`{s}` is not a number"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

    fn at(tz: Tz, s: &str) -> i64 {
        tz.from_local_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap())
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn next(expr: &str, tz: Tz, after: &str) -> String {
        let n = Cron::parse(expr)
            .unwrap()
            .next_after(tz, at(tz, after))
            .unwrap();
        tz.timestamp_millis_opt(n)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S %a")
            .to_string()
    }

    #[test]
    fn quartz_and_crontab_expressions_name_the_times_they_say() {
        let s = SHANGHAI;
        // austin's daily 10 o'clock, in the job's zone.
        assert_eq!(
            next("0 0 10 * * ?", s, "2026-12-07 09:59:59"),
            "2026-12-07 10:00:00 Mon"
        );
        assert_eq!(
            next("0 0 10 * * ?", s, "2026-12-07 10:00:00"),
            "2026-12-08 10:00:00 Tue"
        );
        // Weekdays: Quartz 2-6 and crontab 1-5 are Monday to Friday; names too.
        for e in ["0 30 9 ? * 2-6", "30 9 * * 1-5", "0 30 9 ? * MON-FRI"] {
            assert_eq!(
                next(e, s, "2026-12-11 10:00:00"),
                "2026-12-14 09:30:00 Mon",
                "{e}"
            );
        }
        // Sunday is 1 in Quartz, 0 and 7 in crontab.
        for e in ["0 0 8 ? * 1", "0 8 * * 0", "0 8 * * 7", "0 0 8 ? * SUN"] {
            assert_eq!(
                next(e, s, "2026-12-07 00:00:00"),
                "2026-12-13 08:00:00 Sun",
                "{e}"
            );
        }
        // Steps, lists, months by name, a year.
        assert_eq!(
            next("*/15 * * * * ?", s, "2026-12-07 10:00:16"),
            "2026-12-07 10:00:30 Mon"
        );
        assert_eq!(
            next("0 0 0 1,15 JAN,JUL ?", s, "2026-02-01 00:00:00"),
            "2026-07-01 00:00:00 Wed"
        );
        assert_eq!(
            next("0 0 12 11 11 ? 2027", s, "2026-12-01 00:00:00"),
            "2027-11-11 12:00:00 Thu"
        );
        // `a/1` runs to the field's end (cronmaker's "every day at 12"), every minute from 0.
        assert_eq!(
            next("0 0 12 1/1 * ? *", s, "2026-12-07 13:00:00"),
            "2026-12-08 12:00:00 Tue"
        );
        assert_eq!(
            next("0 0/1 * * * ?", s, "2026-12-07 13:00:00"),
            "2026-12-07 13:01:00 Mon"
        );
        assert_eq!(
            next("0 0 12 * * ? 2026/1", s, "2026-12-31 13:00:00"),
            "2027-01-01 12:00:00 Fri"
        );
        // A day field of `*/2` restricts nothing of the weekday: odd days that are Mondays.
        assert_eq!(
            next("0 9 */2 * 1", s, "2026-12-07 10:00:00"),
            "2026-12-21 09:00:00 Mon"
        );
        // Both day and weekday restricted: either one.
        assert_eq!(
            next("0 9 13 * 1", s, "2026-12-08 00:00:00"),
            "2026-12-13 09:00:00 Sun"
        );
        // 31 February never comes.
        assert!(
            Cron::parse("0 0 0 31 2 ?")
                .unwrap()
                .next_after(s, 0)
                .is_none()
        );
    }

    #[test]
    fn a_clock_change_skips_or_repeats_local_times() {
        let ny: Tz = chrono_tz::America::New_York;
        // 2026-03-08 02:30 does not exist in New York; the next 02:30 is the day after.
        assert_eq!(
            next("0 30 2 * * ?", ny, "2026-03-08 00:00:00"),
            "2026-03-09 02:30:00 Mon"
        );
        // 2026-11-01 01:30 comes twice; it fires once.
        let c = Cron::parse("0 30 1 * * ?").unwrap();
        let first = c.next_after(ny, at(ny, "2026-11-01 00:00:00")).unwrap();
        let second = c.next_after(ny, first).unwrap();
        assert_eq!(second - first, 25 * 3_600_000);
    }

    #[test]
    fn the_last_time_in_a_window() {
        let c = Cron::parse("0 */10 * * * ?").unwrap();
        let s = SHANGHAI;
        let last = c.last_in(
            s,
            at(s, "2026-12-07 09:45:00"),
            at(s, "2026-12-07 10:05:00"),
        );
        assert_eq!(last, Some(at(s, "2026-12-07 10:00:00")));
        assert_eq!(
            c.last_in(
                s,
                at(s, "2026-12-07 10:00:00"),
                at(s, "2026-12-07 10:05:00")
            ),
            None
        );
    }

    #[test]
    fn a_bad_expression_says_which_field_and_why() {
        for (expr, why) in [
            ("0 0 10 * * ? * 1", "has 8 fields"),
            ("0 0 25 * * ?", "hour `25`: `25` is outside 0-23"),
            (
                "0 0 10 L * ?",
                "day of month `L`: L, W and # are not supported",
            ),
            (
                "0 0 10 ? * 2#1",
                "weekday `2#1`: L, W and # are not supported",
            ),
            (
                "0 0 10 * FOO ?",
                "month `FOO`: `FOO` is not a number nor a name (JAN-DEC)",
            ),
            ("0 0 10 * * ? 1800", "year `1800`"),
            (
                "0 0 */0 * * ?",
                "the step after / must be a positive number",
            ),
            ("0 0 10 5-1 * ?", "runs backwards"),
            ("10 * * *", "has 4 fields"),
        ] {
            let e = Cron::parse(expr).err().unwrap_or_default();
            assert!(e.contains(why), "{expr}: {e}");
        }
    }
}
