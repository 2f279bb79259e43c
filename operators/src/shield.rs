//! Night shield (docs/states.md step 6): inside the night window, `night_drop` drops and
//! `night_delay` defers to the next `release_at`.

use chrono::NaiveTime;
use chrono_tz::Tz;
use tidings_model::Shield;
use tidings_model::time::{Millis, NightWindow, local_instant, to_utc};

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Send,
    /// NIGHT_SHIELD.
    Drop,
    /// NIGHT_SHIELD_NEXT_SEND, released at this instant.
    DeferUntil(Millis),
}

/// The job's night rule.
#[derive(Debug, Clone, Copy)]
pub struct NightShield {
    /// The night, in local time.
    pub window: NightWindow,
    /// When deferred messages are released, local time.
    pub release_at: NaiveTime,
    /// The job's time zone.
    pub tz: Tz,
}

impl NightShield {
    /// Decides for a message of a template with `shield` at event time `t`.
    pub fn decide(&self, shield: Shield, t: Millis) -> Decision {
        if shield == Shield::None {
            return Decision::Send;
        }
        let local = to_utc(t).with_timezone(&self.tz);
        if !self.window.contains(local.time()) {
            return Decision::Send;
        }
        match shield {
            Shield::None => Decision::Send,
            Shield::NightDrop => Decision::Drop,
            Shield::NightDelay => {
                let date = local.date_naive();
                let mut release = local_instant(self.tz, date, self.release_at);
                if release <= t {
                    // The last representable day has no next morning: release at the end of time.
                    release = date.succ_opt().map_or(Millis::MAX, |next| {
                        local_instant(self.tz, next, self.release_at)
                    });
                }
                Decision::DeferUntil(release)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn at(tz: Tz, d: u32, h: u32, m: u32) -> Millis {
        tz.from_local_datetime(
            &NaiveDate::from_ymd_opt(2025, 11, d)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap(),
        )
        .unwrap()
        .timestamp_millis()
    }

    #[test]
    fn table() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let day = NightShield {
            window: NightWindow::parse("00:00-08:00").unwrap(),
            release_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            tz,
        };
        let wrap = NightShield {
            window: NightWindow::parse("22:00-06:00").unwrap(),
            ..day
        };
        let cases = [
            (day, Shield::None, at(tz, 22, 1, 0), Decision::Send),
            (day, Shield::NightDrop, at(tz, 22, 1, 0), Decision::Drop),
            (day, Shield::NightDrop, at(tz, 22, 8, 0), Decision::Send),
            (
                day,
                Shield::NightDelay,
                at(tz, 22, 0, 0),
                Decision::DeferUntil(at(tz, 22, 9, 0)),
            ),
            (
                day,
                Shield::NightDelay,
                at(tz, 22, 7, 59),
                Decision::DeferUntil(at(tz, 22, 9, 0)),
            ),
            (day, Shield::NightDelay, at(tz, 22, 12, 0), Decision::Send),
            (
                wrap,
                Shield::NightDelay,
                at(tz, 22, 23, 0),
                Decision::DeferUntil(at(tz, 23, 9, 0)),
            ),
            (
                wrap,
                Shield::NightDelay,
                at(tz, 22, 5, 0),
                Decision::DeferUntil(at(tz, 22, 9, 0)),
            ),
            (wrap, Shield::NightDrop, at(tz, 22, 21, 59), Decision::Send),
        ];
        for (i, (rule, shield, t, want)) in cases.into_iter().enumerate() {
            assert_eq!(rule.decide(shield, t), want, "case {i}");
        }
    }

    /// A zone that skipped a whole day (Samoa went from UTC-10 to UTC+14 over 2011-12-30): a
    /// message of the 29th's night is released at the first instant after the missing 09:00,
    /// never before its own time (a 2-hour search for a valid minute fell back to reading
    /// 09:00 as UTC, 30 minutes before the message).
    #[test]
    fn a_skipped_day_releases_after_the_message_never_before() {
        let tz = chrono_tz::Pacific::Apia;
        let rule = NightShield {
            window: NightWindow::parse("22:00-08:00").unwrap(),
            release_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            tz,
        };
        let local = |d: u32, h: u32, m: u32| {
            tz.from_local_datetime(
                &NaiveDate::from_ymd_opt(2011, 12, d)
                    .unwrap()
                    .and_hms_opt(h, m, 0)
                    .unwrap(),
            )
            .unwrap()
            .timestamp_millis()
        };
        let t = local(29, 23, 30);
        assert_eq!(
            rule.decide(Shield::NightDelay, t),
            Decision::DeferUntil(local(31, 0, 0))
        );
    }

    /// Issue 12: any instant is decided without a panic.
    #[test]
    fn extreme_times_never_panic() {
        for tz in [chrono_tz::Asia::Shanghai, chrono_tz::America::Los_Angeles] {
            let rule = NightShield {
                window: NightWindow::parse("22:00-08:00").unwrap(),
                release_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                tz,
            };
            for t in [i64::MIN, -1, 0, 253_402_300_800_000, i64::MAX] {
                for shield in [Shield::None, Shield::NightDrop, Shield::NightDelay] {
                    if let Decision::DeferUntil(r) = rule.decide(shield, t) {
                        assert!(r > t || t > 253_402_300_800_000, "{t}: {r}");
                    }
                }
            }
        }
    }
}
