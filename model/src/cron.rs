//! Cron expressions, as austin's `expectPushTime` (Quartz: `sec min hour day month weekday
//! [year]`, `?` for "no particular value") or as crontab writes them (`min hour day month
//! weekday`), evaluated in the job's time zone.
//!
//! Each field takes `*`, `?` (day and weekday), numbers, names (`JAN`–`DEC`, `SUN`–`SAT`),
//! ranges `a-b`, steps `*/n`, `a/n`, `a-b/n` and lists of those. Weekdays count from Sunday:
//! Quartz's 1–7, crontab's 0–6 (and 7). When both day and weekday are restricted, a day
//! matching either one is a match (crontab's rule; Quartz asks for a `?` in one of them).
//!
//! Quartz's month-relative days work in both forms: in the day field `L` (the month's last
//! day), `L-3` (three days before it), `15W` (the weekday nearest the 15th, within the
//! month), `LW` (the month's last weekday), `L-3W` (the weekday nearest the day three before
//! the last); in the weekday field `6L` or `FRIL` (the month's
//! last Friday, Quartz numbering), `6#3` or `FRI#3` (its third Friday) and `L` alone
//! (Saturday). They mix with plain items in a list.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::template::{Template, TemplateType};

/// A template's campaign, checked as far as the template alone tells: `cron` and `crowd`
/// together, on a `template_type = "cron"` template of a job with a topic to send to
/// (`kafka`), an expression that reads. `Ok(None)`: the template is no campaign. A pure
/// function of the template, so a live change is judged the same on every replay.
pub fn campaign_cron(t: &Template, kafka: bool) -> Result<Option<Cron>, String> {
    let expr = match (&t.cron, &t.crowd) {
        (None, None) => return Ok(None),
        (Some(e), Some(crowd)) => {
            let inside = std::path::Path::new(crowd).components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            if !inside || crowd.is_empty() {
                return Err(format!(
                    "crowd: `{crowd}` must name a file under the templates file's folder (relative, without ..), e.g. crowds/NAME.csv"
                ));
            }
            e
        }
        (Some(_), None) => {
            return Err(
                "cron without crowd; add crowd = \"crowds/NAME.csv\" (a CSV with a userId column)"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err("crowd without cron; add cron = \"0 0 10 * * ?\" (when it is sent)".into());
        }
    };
    if t.template_type != TemplateType::Cron {
        return Err("cron is for template_type = \"cron\"; set it".into());
    }
    if !kafka {
        return Err("cron: a campaign is sent to the job's Kafka topic; this job reads a file (source.kind = \"kafka\", or remove cron)".into());
    }
    Cron::parse(expr)
        .map(Some)
        .map_err(|why| format!("cron: {why}"))
}

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
    /// Month-relative days (`L`, `L-n`, `nW`, `LW`), matched besides `days`.
    day_rules: Vec<Relative>,
    /// Month-relative weekdays (`dL`, `d#k`), matched besides `weekdays`.
    weekday_rules: Vec<Relative>,
    /// Whether day and weekday were both restricted (then either matches).
    either_day: bool,
}

/// A day named relative to its month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relative {
    /// `L`, `L-n`: the month's last day, or the day `n` days before it.
    LastDay(u32),
    /// `nW`: the weekday (Monday to Friday) nearest day `n`, within its month.
    NearestWeekday(u32),
    /// `LW`, `L-nW`: the weekday (Monday to Friday) nearest the month's last day, or the day
    /// `n` days before it.
    LastWeekday(u32),
    /// `dL`: the month's last weekday `d` (Sunday 0).
    LastOf(u32),
    /// `d#k`: the month's `k`-th weekday `d` (Sunday 0).
    Nth(u32, u32),
}

impl Relative {
    fn matches(self, d: NaiveDate) -> bool {
        let last = u32::from(d.num_days_in_month());
        let weekday = d.weekday().num_days_from_sunday();
        match self {
            Relative::LastDay(n) => n < last && d.day() == last - n,
            Relative::NearestWeekday(n) => n <= last && d.day() == nearest_weekday(d, n, last),
            Relative::LastWeekday(n) => n < last && d.day() == nearest_weekday(d, last - n, last),
            Relative::LastOf(w) => weekday == w && d.day() + 7 > last,
            Relative::Nth(w, k) => weekday == w && (d.day() - 1) / 7 + 1 == k,
        }
    }
}

/// The day of `d`'s month that is the weekday nearest day `n` (Quartz: a Saturday moves to
/// Friday, a Sunday to Monday, never out of the month).
fn nearest_weekday(d: NaiveDate, n: u32, last: u32) -> u32 {
    let Some(target) = d.with_day(n) else {
        return 0;
    };
    match target.weekday().num_days_from_sunday() {
        6 if n == 1 => 3,
        6 => n - 1,
        0 if n == last => n - 2,
        0 => n + 1,
        _ => n,
    }
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
            if f[i].contains('?') {
                // As Quartz: `?` is "no specific value", for the day or the weekday only.
                return Err(format!(
                    "{name} `{}`: ? stands only for the day of month or the weekday; write *",
                    f[i]
                ));
            }
            bits(f[i], lo, hi, names, shift).map_err(|why| format!("{name} `{}`: {why}", f[i]))
        };
        let seconds = field(0, "second", 0, 59, &[], 0)?;
        let minutes = field(1, "minute", 0, 59, &[], 0)?;
        let hours = field(2, "hour", 0, 23, &[], 0)?;
        let (day_items, day_rules) =
            day_relatives(f[3]).map_err(|why| format!("day of month `{}`: {why}", f[3]))?;
        let days = or_none(&day_items, |s| bits(s, 1, 31, &[], 0))
            .map_err(|why| format!("day of month `{}`: {why}", f[3]))?;
        let months = field(4, "month", 1, 12, &MONTHS, 1)?;
        // Quartz counts weekdays 1 (Sunday) to 7; crontab 0 (Sunday) to 6, and 7 for Sunday.
        let (lo, shift) = if quartz { (1, 1) } else { (0, 0) };
        let weekday_of = |n: u32| if quartz { n - 1 } else { n % 7 };
        let in_weekday = |why| format!("weekday `{}`: {why}", f[5]);
        let (weekday_items, weekday_rules) =
            weekday_relatives(f[5], quartz, lo, shift, weekday_of).map_err(in_weekday)?;
        let w =
            or_none(&weekday_items, |s| bits(s, lo, 7, &WEEKDAYS, shift)).map_err(in_weekday)?;
        let weekdays = if quartz {
            w >> 1
        } else {
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
            day_rules,
            weekday_rules,
            either_day: restricted(f[3]) && restricted(f[5]),
        })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let day = self.days & (1 << d.day()) != 0 || self.day_rules.iter().any(|r| r.matches(d));
        let weekday = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0
            || self.weekday_rules.iter().any(|r| r.matches(d));
        let year = self.years.is_empty() || self.years.contains(&d.year());
        year && self.months & (1 << d.month()) != 0
            && if self.either_day {
                day || weekday
            } else {
                day && weekday
            }
    }

    /// The first year its year field names (`None`: any year).
    pub fn first_year(&self) -> Option<i32> {
        self.years.iter().min().copied()
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

/// A day field's month-relative items (`L`, `L-n`, `nW`, `LW`, `L-nW`), and the rest as a list.
fn day_relatives(s: &str) -> Result<(String, Vec<Relative>), String> {
    let mut rest = Vec::new();
    let mut rules = Vec::new();
    for item in s.split(',') {
        if item.is_empty() {
            return Err("an empty item in the list".into());
        }
        let upper = item.to_ascii_uppercase();
        let rule = if upper == "L" {
            Relative::LastDay(0)
        } else if upper == "LW" {
            Relative::LastWeekday(0)
        } else if let Some(n) = upper.strip_prefix("L-") {
            let (n, weekday) = n.strip_suffix('W').map_or((n, false), |n| (n, true));
            match n.parse::<u32>() {
                Ok(n) if n <= 30 && weekday => Relative::LastWeekday(n),
                Ok(n) if n <= 30 => Relative::LastDay(n),
                _ => return Err(format!("`{item}`: L-n and L-nW need n from 0 to 30")),
            }
        } else if let Some(n) = upper.strip_suffix('W') {
            match n.parse::<u32>() {
                Ok(n) if (1..=31).contains(&n) => Relative::NearestWeekday(n),
                _ => return Err(format!("`{item}`: nW needs a day from 1 to 31, e.g. 15W")),
            }
        } else if upper.contains(['L', 'W', '#']) {
            return Err(format!(
                "`{item}`: a day takes L, L-n, nW, LW or L-nW (# belongs to the weekday field)"
            ));
        } else {
            rest.push(item);
            continue;
        };
        rules.push(rule);
    }
    Ok((rest.join(","), rules))
}

/// A weekday field's month-relative items (`dL`, `d#k`), and the rest as a list (`L` alone
/// is Saturday, as in Quartz).
fn weekday_relatives(
    s: &str,
    quartz: bool,
    lo: u32,
    shift: u32,
    weekday_of: impl Fn(u32) -> u32,
) -> Result<(String, Vec<Relative>), String> {
    let mut rest = Vec::new();
    let mut rules = Vec::new();
    let day = |d: &str| match number(d, &WEEKDAYS, shift)? {
        n if (lo..=7).contains(&n) => Ok(weekday_of(n)),
        n => Err(format!("`{n}` is outside {lo}-7")),
    };
    for item in s.split(',') {
        if item.is_empty() {
            return Err("an empty item in the list".into());
        }
        let upper = item.to_ascii_uppercase();
        if upper == "L" {
            rest.push(if quartz { "7" } else { "6" });
        } else if let Some((d, k)) = upper.split_once('#') {
            match k.parse::<u32>() {
                Ok(k) if (1..=5).contains(&k) => rules.push(Relative::Nth(day(d)?, k)),
                _ => return Err(format!("`{item}`: d#k needs k from 1 to 5, e.g. 6#3")),
            }
        } else if let Some(d) = upper.strip_suffix('L').filter(|d| !d.is_empty()) {
            rules.push(Relative::LastOf(day(d)?));
        } else if upper.contains('W') && !upper.contains("WED") {
            return Err(format!("`{item}`: W belongs to the day field (e.g. 15W)"));
        } else {
            rest.push(item);
        }
    }
    Ok((rest.join(","), rules))
}

/// `parse(list)`, or no values when every item was month-relative.
fn or_none(list: &str, parse: impl Fn(&str) -> Result<u64, String>) -> Result<u64, String> {
    if list.is_empty() { Ok(0) } else { parse(list) }
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
        if !(1970..=2099).contains(&lo) || !(1970..=2099).contains(&hi) {
            return Err(format!("`{item}` is not within 1970-2099"));
        }
        if lo > hi {
            return Err(format!(
                "`{item}` runs backwards; write the earlier year first"
            ));
        }
        years.extend((lo..=hi).step_by(step as usize).map(|y| y as i32));
    }
    Ok(years)
}

/// The values one field allows, as a bit set (bit `v` for value `v`).
fn bits(s: &str, lo: u32, hi: u32, names: &[&str], shift: u32) -> Result<u64, String> {
    if s.contains(['L', 'W', '#']) && !names.iter().any(|n| s.to_ascii_uppercase().contains(n)) {
        return Err("L, W and # name days only in the day and weekday fields".into());
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
        // Either end outside the field: `99/5` fired at :39 (99 wrapped), `70-5` named no
        // second at all (and a look for its next time scanned five years a second at a time).
        if !(lo..=hi).contains(&a) || !(lo..=hi).contains(&b) {
            return Err(format!("`{item}` is outside {lo}-{hi}"));
        }
        // As Quartz: a range whose end is below its start runs past the field's end and on
        // from its start (hours `22-2`, weekdays `FRI-MON`).
        // Crontab's weekdays 0-7 name Sunday twice: a week is still 7.
        let span = if names == &WEEKDAYS[..] {
            7
        } else {
            hi - lo + 1
        };
        let end = if a > b { b + span } else { b };
        for v in (a..=end).step_by(step as usize) {
            set |= 1 << (lo + (v - lo) % span);
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

    /// Checks each `expression | after | next time` line of `table` in `tz` (`//` lines are
    /// comments).
    fn check_table(tz: Tz, table: &str) {
        for line in table.lines().map(str::trim) {
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let [expr, after, then] = line.split('|').map(str::trim).collect::<Vec<_>>()[..] else {
                panic!("not `expression | after | next`: {line}")
            };
            assert_eq!(next(expr, tz, after), then, "{expr}");
        }
    }

    #[test]
    fn quartz_and_crontab_expressions_name_the_times_they_say() {
        check_table(
            SHANGHAI,
            "
            // austin's daily 10 o'clock, in the job's zone.
            0 0 10 * * ?          | 2026-12-07 09:59:59 | 2026-12-07 10:00:00 Mon
            0 0 10 * * ?          | 2026-12-07 10:00:00 | 2026-12-08 10:00:00 Tue
            // Weekdays: Quartz 2-6 and crontab 1-5 are Monday to Friday; names too.
            0 30 9 ? * 2-6        | 2026-12-11 10:00:00 | 2026-12-14 09:30:00 Mon
            30 9 * * 1-5          | 2026-12-11 10:00:00 | 2026-12-14 09:30:00 Mon
            0 30 9 ? * MON-FRI    | 2026-12-11 10:00:00 | 2026-12-14 09:30:00 Mon
            // Sunday is 1 in Quartz, 0 and 7 in crontab.
            0 0 8 ? * 1           | 2026-12-07 00:00:00 | 2026-12-13 08:00:00 Sun
            0 8 * * 0             | 2026-12-07 00:00:00 | 2026-12-13 08:00:00 Sun
            0 8 * * 7             | 2026-12-07 00:00:00 | 2026-12-13 08:00:00 Sun
            0 0 8 ? * SUN         | 2026-12-07 00:00:00 | 2026-12-13 08:00:00 Sun
            // Steps, lists, months by name, a year.
            */15 * * * * ?        | 2026-12-07 10:00:16 | 2026-12-07 10:00:30 Mon
            0 0 0 1,15 JAN,JUL ?  | 2026-02-01 00:00:00 | 2026-07-01 00:00:00 Wed
            0 0 12 11 11 ? 2027   | 2026-12-01 00:00:00 | 2027-11-11 12:00:00 Thu
            // `a/1` runs to the field's end (cronmaker's \"every day at 12\"), every minute from 0.
            0 0 12 1/1 * ? *      | 2026-12-07 13:00:00 | 2026-12-08 12:00:00 Tue
            0 0/1 * * * ?         | 2026-12-07 13:00:00 | 2026-12-07 13:01:00 Mon
            0 0 12 * * ? 2026/1   | 2026-12-31 13:00:00 | 2027-01-01 12:00:00 Fri
            // A day field of `*/2` restricts nothing of the weekday: odd days that are Mondays.
            0 9 */2 * 1           | 2026-12-07 10:00:00 | 2026-12-21 09:00:00 Mon
            // Both day and weekday restricted: either one.
            0 9 13 * 1            | 2026-12-08 00:00:00 | 2026-12-13 09:00:00 Sun
            // A range past the field's end wraps, as in Quartz: hours 22 to 2, Friday to
            // Monday (also crontab's 5-1), the 30th to the 2nd, every other hour from 22 to 3.
            0 0 22-2 * * ?        | 2026-12-07 02:00:00 | 2026-12-07 22:00:00 Mon
            0 0 22-2 * * ?        | 2026-12-07 23:00:00 | 2026-12-08 00:00:00 Tue
            0 0 9 ? * FRI-MON     | 2026-12-08 10:00:00 | 2026-12-11 09:00:00 Fri
            0 0 9 ? * 6-2         | 2026-12-13 10:00:00 | 2026-12-14 09:00:00 Mon
            0 9 * * 5-1           | 2026-12-13 10:00:00 | 2026-12-14 09:00:00 Mon
            0 9 * * 5-1/2         | 2026-12-12 10:00:00 | 2026-12-13 09:00:00 Sun
            0 9 * * 5-1/2         | 2026-12-13 10:00:00 | 2026-12-18 09:00:00 Fri
            0 9 * * 6-1/2         | 2026-12-12 10:00:00 | 2026-12-14 09:00:00 Mon
            0 0 9 30-2 * ?        | 2026-12-03 00:00:00 | 2026-12-30 09:00:00 Wed
            0 0 9 30-2 * ?        | 2026-12-31 10:00:00 | 2027-01-01 09:00:00 Fri
            0 0 22-3/2 * * ?      | 2026-12-07 22:30:00 | 2026-12-08 00:00:00 Tue
            0 0 22-3/2 * * ?      | 2026-12-08 00:30:00 | 2026-12-08 02:00:00 Tue
            0 0 22-3/2 * * ?      | 2026-12-08 02:30:00 | 2026-12-08 22:00:00 Tue
            ",
        );
        // 31 February never comes.
        assert!(
            Cron::parse("0 0 0 31 2 ?")
                .unwrap()
                .next_after(SHANGHAI, 0)
                .is_none()
        );
    }

    #[test]
    fn days_relative_to_the_month_are_quartz_s() {
        check_table(
            SHANGHAI,
            "
            // The last day, three days before it, the last weekday (31 Jan 2027 is a Sunday).
            0 0 10 L * ?          | 2026-12-07 00:00:00 | 2026-12-31 10:00:00 Thu
            0 0 10 L-3 * ?        | 2026-12-07 00:00:00 | 2026-12-28 10:00:00 Mon
            0 0 10 LW * ?         | 2027-01-01 00:00:00 | 2027-01-29 10:00:00 Fri
            // The weekday nearest the day before the last (Saturday 27 Feb 2027), and the
            // fourth before it (Sunday 27 Dec 2026).
            0 0 10 L-1W * ?       | 2027-02-01 00:00:00 | 2027-02-26 10:00:00 Fri
            0 0 10 L-4W * ?       | 2026-12-01 00:00:00 | 2026-12-28 10:00:00 Mon
            // Nearest weekday: Sunday 15 Nov moves to Monday; Saturday 1 Aug stays in August.
            0 0 10 15W * ?        | 2026-11-01 00:00:00 | 2026-11-16 10:00:00 Mon
            0 0 10 1W * ?         | 2026-07-31 00:00:00 | 2026-08-03 10:00:00 Mon
            // 31W in a 30-day month does not fire.
            0 0 10 31W * ?        | 2026-11-01 00:00:00 | 2026-12-31 10:00:00 Thu
            // The last Friday and the third Friday, in Quartz and crontab numbering and by name.
            0 0 10 ? * 6L         | 2026-12-01 00:00:00 | 2026-12-25 10:00:00 Fri
            0 0 10 ? * FRIL       | 2026-12-01 00:00:00 | 2026-12-25 10:00:00 Fri
            0 10 * * 5L           | 2026-12-01 00:00:00 | 2026-12-25 10:00:00 Fri
            0 0 10 ? * 6#3        | 2026-12-01 00:00:00 | 2026-12-18 10:00:00 Fri
            0 10 * * FRI#3        | 2026-12-01 00:00:00 | 2026-12-18 10:00:00 Fri
            // A fifth Monday comes only in some months.
            0 0 10 ? * 2#5        | 2026-12-01 00:00:00 | 2027-03-29 10:00:00 Mon
            // `L` alone as a weekday is Saturday; relative items mix with plain ones.
            0 0 10 ? * L          | 2026-12-07 00:00:00 | 2026-12-12 10:00:00 Sat
            0 0 10 1,L * ?        | 2026-12-07 00:00:00 | 2026-12-31 10:00:00 Thu
            0 0 10 1,L * ?        | 2026-12-31 10:00:00 | 2027-01-01 10:00:00 Fri
            0 0 10 ? * 2,6#3      | 2026-12-15 00:00:00 | 2026-12-18 10:00:00 Fri
            ",
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
            ("0 99/5 * * * ?", "minute `99/5`: `99/5` is outside 0-59"),
            ("70-5 * * * * ?", "second `70-5`: `70-5` is outside 0-59"),
            ("0 0 25-3 * * ?", "hour `25-3`: `25-3` is outside 0-23"),
            ("0 0 10 5-0 * ?", "`5-0` is outside 1-31"),
            (
                "0 0 10 L-31 * ?",
                "day of month `L-31`: `L-31`: L-n and L-nW need n from 0 to 30",
            ),
            ("0 0 10 32W * ?", "nW needs a day from 1 to 31"),
            ("0 0 10 2#1 * ?", "# belongs to the weekday field"),
            (
                "0 0 10 ? * 2#6",
                "weekday `2#6`: `2#6`: d#k needs k from 1 to 5",
            ),
            ("0 0 10 ? * 8L", "`8` is outside 1-7"),
            ("0 0 10 ? * 2W", "W belongs to the day field"),
            ("0 0 L * * ?", "hour `L`: L, W and # name days only"),
            ("0 0 10 L, * ?", "day of month `L,`: an empty item"),
            ("0 0 10 ? * ,6L", "weekday `,6L`: an empty item"),
            (
                "0 0 10 * FOO ?",
                "month `FOO`: `FOO` is not a number nor a name (JAN-DEC)",
            ),
            ("0 0 10 * * ? 1800", "year `1800`"),
            (
                "0 0 */0 * * ?",
                "the step after / must be a positive number",
            ),
            (
                "0 0 10 * * ? 2030-2027",
                "year `2030-2027`: `2030-2027` runs backwards",
            ),
            ("10 * * *", "has 4 fields"),
            (
                "0 ? 10 * * ?",
                "minute `?`: ? stands only for the day of month or the weekday",
            ),
            ("0 0 10 * ? *", "month `?`"),
        ] {
            let e = Cron::parse(expr).err().unwrap_or_default();
            assert!(e.contains(why), "{expr}: {e}");
        }
    }
}
