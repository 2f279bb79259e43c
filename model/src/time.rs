//! Event-time helpers: the job's time zone, local dates and the night window.

use std::cell::Cell;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The wall clock: ms since the Unix epoch (0 if the system clock is before it). Decisions
/// never read it; it stamps processing times, ages and file names.
///
/// Read as the system's seconds and nanoseconds and made ms in plain integers: `SystemTime`'s
/// checked `duration_since` and `as_millis` in `u128` cost ~120 instructions more, once per
/// message sent (bench/MEASURED.md "The clocks read as integers").
#[cfg(unix)]
pub fn wall_ms() -> Millis {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_REALTIME) {
        Ok(t) => (t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000).max(0),
        Err(_) => 0,
    }
}

#[cfg(not(unix))]
pub fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A monotonic clock in ns from an arbitrary start (the clock `Instant` reads): the difference
/// of two readings is the time between them, without `Instant`'s checked subtraction.
#[cfg(unix)]
pub fn monotonic_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    // The monotonic clock cannot fail where the system runs (std's `Instant` expects it too).
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec() as u64)
    })
}

#[cfg(not(unix))]
pub fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// The earliest event time a record may carry: 2000-01-01T00:00:00Z. An earlier one is a dead
/// letter (a zero, negative or seconds-instead-of-milliseconds `ts` is a producer's mistake).
pub const MIN_EVENT_TIME: Millis = 946_684_800_000;

/// The latest event time a record may carry whatever the wall clock says:
/// 9999-12-31T23:59:59.999Z (a clock that far out is broken; chrono's dates end soon after).
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// How far ahead of the wall clock an event time may be by default: one day. A later one is a
/// dead letter, never a watermark that would evict every dedup window.
pub const DEFAULT_MAX_FUTURE_MS: Millis = 86_400_000;

/// Whether `t` is a sane event time at wall-clock `now`: `Err` names the value and the bound.
pub fn check_event_time(t: Millis, now: Millis, max_future_ms: Millis) -> Result<(), String> {
    if t < MIN_EVENT_TIME {
        return Err(format!(
            "event time {t} ms ({}) is before 2000-01-01T00:00:00Z ({MIN_EVENT_TIME} ms): \
             `ts` must be milliseconds since the Unix epoch",
            describe(t)
        ));
    }
    let bound = now.saturating_add(max_future_ms.max(0));
    if t > bound {
        return Err(format!(
            "event time {t} ms ({}) is more than {max_future_ms} ms ahead of the wall clock \
             ({}); the bound is {bound} ms (source.max_future_ms)",
            describe(t),
            describe(now)
        ));
    }
    if t > MAX_EVENT_TIME {
        return Err(format!(
            "event time {t} ms ({}) is after 9999-12-31T23:59:59.999Z ({MAX_EVENT_TIME} ms)",
            describe(t)
        ));
    }
    Ok(())
}

/// An instant as RFC 3339, or `out of range` when chrono cannot represent it.
fn describe(t: Millis) -> String {
    DateTime::from_timestamp_millis(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "out of range".into())
}

/// The local date of an instant in `tz`. Rows and rules ask this for nearly every message,
/// mostly of a few days (a replay's event day beside today's): the thread remembers the last
/// [`REMEMBERED`] days' bounds, the one answered last first, and answers inside them without
/// the zone's lookup (inside a day whose offset changes, the zone is asked each time).
#[inline]
pub fn local_date(tz: Tz, t: Millis) -> NaiveDate {
    // The day answered last, asked first, in the caller: a row's, a rule's and the next
    // message's instants mostly fall in it (4 asks a request).
    if let Some(d) = LAST_DAYS.with(|c| c.as_array_of_cells()[0].get())
        && d.stable
        && d.tz == tz
        && d.start <= t
        && t < d.end
    {
        return d.date;
    }
    remembered_date(tz, t)
}

/// [`local_date`] from the days the thread remembers, or the zone's lookup.
fn remembered_date(tz: Tz, t: Millis) -> NaiveDate {
    let direct = || to_utc(t).with_timezone(&tz).date_naive();
    let mut days = LAST_DAYS.with(Cell::get);
    if let Some((i, d)) = days.iter().enumerate().find_map(|(i, d)| {
        d.filter(|d| d.tz == tz && d.start <= t && t < d.end)
            .map(|d| (i, d))
    }) {
        // A day whose offset changes is remembered only so as not to be measured again.
        if !d.stable {
            return direct();
        }
        // Answered last: to the front.
        days[..=i].rotate_right(1);
        LAST_DAYS.with(|c| c.set(days));
        return d.date;
    }
    let date = direct();
    if let Some(day) = LocalDay::of(tz, date)
        && day.start <= t
        && t < day.end
    {
        // The one answered longest ago goes.
        let mut kept = [Some(day); REMEMBERED];
        kept[1..].copy_from_slice(&days[..REMEMBERED - 1]);
        LAST_DAYS.with(|c| c.set(kept));
    }
    date
}

/// Local days a thread remembers for [`local_date`].
const REMEMBERED: usize = 4;

/// A local day and the instants that bound it, `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct LocalDay {
    tz: Tz,
    start: Millis,
    end: Millis,
    date: NaiveDate,
    /// Whether its offset is the same from its first instant to its last (then every instant
    /// between has `date`); a day the offset changes is answered by the zone each time.
    stable: bool,
}

impl LocalDay {
    /// `date` in `tz` (`None` if its bounds are not in order).
    fn of(tz: Tz, date: NaiveDate) -> Option<LocalDay> {
        let start = local_instant(tz, date, NaiveTime::MIN);
        let end = end_of_local_day(tz, date.num_days_from_ce());
        let offset = |t: Millis| tz.offset_from_utc_datetime(&to_utc(t).naive_utc()).fix();
        (start < end).then(|| LocalDay {
            tz,
            start,
            end,
            date,
            stable: offset(start) == offset(end - 1),
        })
    }
}

thread_local! {
    /// The days [`local_date`] remembers, the one answered last first.
    static LAST_DAYS: Cell<[Option<LocalDay>; REMEMBERED]> = const { Cell::new([None; REMEMBERED]) };
}

/// The local calendar day of an instant as a day number (days since 1970-01-01 locally).
pub fn local_day(tz: Tz, t: Millis) -> i32 {
    local_date(tz, t).num_days_from_ce()
}

/// The instant that ends local day `day` (as returned by [`local_day`]).
pub fn end_of_local_day(tz: Tz, day: i32) -> Millis {
    match day
        .checked_add(1)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
    {
        Some(date) => local_instant(tz, date, NaiveTime::MIN),
        None if day < 0 => Millis::MIN,
        None => Millis::MAX,
    }
}

/// An instant as a UTC date-time, clamped to chrono's range less two days at each end so that
/// its local time exists in every time zone (chrono panics on a local time out of its range).
/// Event times that far out are dead letters long before they get here; this keeps the admin
/// API's `at=` and restored state total.
pub fn to_utc(t: Millis) -> DateTime<Utc> {
    const MARGIN: Millis = 2 * 86_400_000;
    let lo = DateTime::<Utc>::MIN_UTC.timestamp_millis() + MARGIN;
    let hi = DateTime::<Utc>::MAX_UTC.timestamp_millis() - MARGIN;
    DateTime::from_timestamp_millis(t.clamp(lo, hi)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The instant of a local wall-clock time. In a DST gap the first valid instant after it is
/// taken; in a DST fold, the earlier one.
pub fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> Millis {
    let naive = date.and_time(time);
    // Two days of minutes: a zone that skipped a whole day (Pacific/Apia's 2011-12-30) has no
    // valid minute for 24 hours (a 2-hour search fell back to reading the time as UTC, an
    // instant a day early).
    for step in 0..=2 * 24 * 60 {
        let Some(probe) = naive.checked_add_signed(Duration::minutes(step)) else {
            break;
        };
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

    /// The clocks read as integers agree with `SystemTime` and `Instant`.
    #[test]
    fn the_clocks_read_as_std_reads_them() {
        let std_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as Millis
        };
        let (before, ours, after) = (std_ms(), wall_ms(), std_ms());
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        let (start, std_start) = (monotonic_ns(), std::time::Instant::now());
        // Until std's clock has moved a millisecond (a spin on the condition, not a sleep).
        let std_elapsed = loop {
            let e = std_start.elapsed();
            if e >= std::time::Duration::from_millis(1) {
                break e;
            }
            std::hint::spin_loop();
        };
        // Ours started before std's and ends after it: it holds std's interval.
        let ours = monotonic_ns() - start;
        assert!(ours >= 1_000_000, "{ours}");
        assert!(
            u128::from(ours) >= std_elapsed.as_nanos(),
            "{ours} {std_elapsed:?}"
        );
    }

    /// The remembered day answers as the zone's lookup does: across DST changes in both
    /// directions, a day skipped whole (Apia, 2011-12-30), half-hour offsets, and zones
    /// taken in turn on one thread.
    #[test]
    fn local_dates_from_the_remembered_day_are_the_zones_own() {
        let zones: [Tz; 9] = [
            chrono_tz::Asia::Shanghai,
            chrono_tz::America::New_York,
            chrono_tz::Europe::London,
            chrono_tz::America::Sao_Paulo,
            chrono_tz::Africa::Cairo,
            chrono_tz::America::Havana,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Pacific::Apia,
            chrono_tz::Asia::Kolkata,
        ];
        let direct = |tz: Tz, t: Millis| to_utc(t).with_timezone(&tz).date_naive();
        // 2011-03-01 to 2012-03-01 in steps of 17 minutes, each zone in turn, then one
        // zone at a time (the remembered day reused).
        let (from, to, step) = (1_298_937_600_000i64, 1_330_560_000_000i64, 17 * 60_000);
        let mut t = from;
        while t < to {
            for &tz in &zones {
                assert_eq!(local_date(tz, t), direct(tz, t), "{tz} at {t}");
            }
            t += step * 7;
        }
        for &tz in &zones {
            let mut t = from;
            while t < to {
                assert_eq!(local_date(tz, t), direct(tz, t), "{tz} at {t}");
                t += step;
            }
        }
        // Out of chrono's range: answered, not remembered.
        let tz = chrono_tz::Asia::Shanghai;
        assert_eq!(local_date(tz, Millis::MAX), direct(tz, Millis::MAX));
        assert_eq!(local_date(tz, Millis::MIN), direct(tz, Millis::MIN));
    }

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

    /// Extreme instants (any `i64`, including what a record's `ts` or an admin `at=` may hold)
    /// never panic.
    #[test]
    fn extremes_never_panic() {
        let tzs: [Tz; 3] = [
            "Asia/Shanghai".parse().unwrap(),
            "America/Los_Angeles".parse().unwrap(),
            "Pacific/Kiritimati".parse().unwrap(),
        ];
        let year_10000 = 253_402_300_800_000;
        for tz in tzs {
            for t in [
                i64::MIN,
                i64::MIN + 1,
                -1,
                0,
                year_10000,
                i64::MAX - 1,
                i64::MAX,
            ] {
                let day = local_day(tz, t);
                let _ = end_of_local_day(tz, day);
                let _ = end_of_local_day(tz, day - 1);
                let _ = to_utc(t).with_timezone(&tz).time();
            }
            for day in [i32::MIN, i32::MIN + 1, -1, 0, i32::MAX - 1, i32::MAX] {
                let _ = end_of_local_day(tz, day);
            }
            let _ = local_instant(
                tz,
                NaiveDate::MAX,
                NaiveTime::from_hms_opt(23, 59, 0).unwrap(),
            );
            let _ = local_instant(tz, NaiveDate::MIN, NaiveTime::MIN);
        }
        assert!(to_utc(i64::MAX) > to_utc(0), "saturates upwards");
        assert!(to_utc(i64::MIN) < to_utc(0), "saturates downwards");
    }

    #[test]
    fn event_time_range() {
        let now = 1_763_784_000_000;
        let day = DEFAULT_MAX_FUTURE_MS;
        assert!(check_event_time(now, now, day).is_ok());
        assert!(check_event_time(MIN_EVENT_TIME, now, day).is_ok());
        assert!(check_event_time(now + day, now, day).is_ok());
        let cases: [(Millis, &str); 6] = [
            (
                i64::MAX,
                "9223372036854775807 ms (out of range) is more than 86400000 ms ahead",
            ),
            (
                i64::MIN,
                "-9223372036854775808 ms (out of range) is before 2000-01-01",
            ),
            (-5, "is before 2000-01-01"),
            (MIN_EVENT_TIME - 1, "1999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "+10000-01-01T00:00:00.000Z"),
            (now + day + 1, "the bound is 1763870400000 ms"),
        ];
        for (t, want) in cases {
            let err = check_event_time(t, now, day).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
        // A wall clock near the end of time does not overflow the bound, and does not let
        // event times past year 9999 in.
        assert!(check_event_time(now, i64::MAX, i64::MAX).is_ok());
        let err = check_event_time(MAX_EVENT_TIME + 1, i64::MAX, day).unwrap_err();
        assert!(err.contains("is after 9999-12-31T23:59:59.999Z"), "{err}");
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
