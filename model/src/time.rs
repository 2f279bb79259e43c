//! Event-time helpers: the job's time zone, local dates and the night window.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The local date of an instant in `tz`.
pub fn local_date(tz: Tz, t: Millis) -> NaiveDate {
    to_utc(t).with_timezone(&tz).date_naive()
}

/// The local calendar day of an instant as a day number (days since 1970-01-01 locally).
pub fn local_day(tz: Tz, t: Millis) -> i32 {
    local_date(tz, t).num_days_from_ce()
}

/// The instant that ends local day `day` (as returned by [`local_day`]).
pub fn end_of_local_day(tz: Tz, day: i32) -> Millis {
    let date = NaiveDate::from_num_days_from_ce_opt(day + 1).unwrap_or(NaiveDate::MAX);
    local_instant(tz, date, NaiveTime::MIN)
}

/// An instant as a UTC date-time (saturating outside chrono's range).
pub fn to_utc(t: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The instant of a local wall-clock time. In a DST gap the first valid instant after it is
/// taken; in a DST fold, the earlier one.
pub fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> Millis {
    let naive = date.and_time(time);
    for step in 0..=120 {
        let probe = naive + Duration::minutes(step);
        if let Some(dt) = tz.from_local_datetime(&probe).earliest() {
            return dt.timestamp_millis();
        }
    }
    Utc.from_utc_datetime(&naive).timestamp_millis()
}

/// Parses `HH:MM`.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .ok()
}

/// A local-time window such as `00:00-08:00` (start inclusive, end exclusive); a window whose
/// end is before its start wraps midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NightWindow {
    /// First minute inside the window.
    pub start: NaiveTime,
    /// First minute after the window.
    pub end: NaiveTime,
}

impl NightWindow {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Option<NightWindow> {
        let (a, b) = s.split_once('-')?;
        Some(NightWindow {
            start: parse_hhmm(a)?,
            end: parse_hhmm(b)?,
        })
    }

    /// Whether a local time of day is inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start == self.end {
            false
        } else if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn night_windows() {
        let w = NightWindow::parse("00:00-08:00").unwrap();
        assert!(w.contains(hm(0, 0)) && w.contains(hm(7, 59)) && !w.contains(hm(8, 0)));
        let w = NightWindow::parse("22:00-06:00").unwrap();
        assert!(w.contains(hm(23, 0)) && w.contains(hm(1, 0)) && !w.contains(hm(12, 0)));
        assert!(NightWindow::parse("25:00-01:00").is_none());
    }

    #[test]
    fn local_days() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        // 2025-11-21T16:30Z is 2025-11-22 00:30 in Shanghai.
        let t = 1_763_742_600_000;
        assert_eq!(
            local_date(tz, t),
            NaiveDate::from_ymd_opt(2025, 11, 22).unwrap()
        );
        let end = end_of_local_day(tz, local_day(tz, t));
        assert_eq!(
            local_date(tz, end),
            NaiveDate::from_ymd_opt(2025, 11, 23).unwrap()
        );
        assert_eq!(
            local_date(tz, end - 1),
            NaiveDate::from_ymd_opt(2025, 11, 22).unwrap()
        );
    }
}
