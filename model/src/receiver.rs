//! Receivers: splitting a `receiver` list and validating each receiver by `id_type`.

use std::borrow::Cow;

use phonenumber::country;

use crate::ids::FastSet;
use crate::template::IdType;

/// More receivers than this in one MessageParam rejects the message (docs/requests.md).
pub const MAX_RECEIVERS: usize = 100;

/// The longest phone receiver parsed, spaces and dashes included (E.164 has at most 15 digits).
pub const MAX_PHONE_CHARS: usize = 40;

/// Splits a comma-separated receiver list: entries trimmed, empty ones dropped, repeats
/// collapsed (first occurrence kept, order preserved). Linear in the list's length.
pub fn split_receivers(list: &str) -> Vec<String> {
    split_receivers_at_most(list, usize::MAX)
        .map(smallvec::SmallVec::into_vec)
        .unwrap_or_default()
}

/// [`split_receivers`] that stops at the first receiver past `max` distinct ones: the rest of
/// the list is neither copied nor compared, only its entries counted for the reason. One
/// receiver is held in place ([`crate::message::Receivers`]).
pub fn split_receivers_at_most<R: for<'a> From<&'a str>>(
    list: &str,
    max: usize,
) -> Result<smallvec::SmallVec<[R; 1]>, String> {
    // The first few distinct receivers are compared in place (most requests list one, and a
    // set would cost an allocation per request); past them, a set keeps the split linear.
    const FEW: usize = 8;
    let mut few: [&str; FEW] = [""; FEW];
    let mut seen: FastSet<&str> = FastSet::default();
    let mut distinct = 0usize;
    let mut out = smallvec::SmallVec::new();
    for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let new = if distinct < FEW {
            !few[..distinct].contains(&r)
        } else {
            if seen.is_empty() {
                seen.extend(few);
            }
            seen.insert(r)
        };
        if new {
            if distinct < FEW {
                few[distinct] = r;
            }
            distinct += 1;
            if out.len() == max {
                return Err(too_many(list, max));
            }
            out.push(R::from(r));
        }
    }
    Ok(out)
}

/// The receivers of a `receiver` list, as [`split_receivers_at_most`] gives them: a list of
/// one receiver with nothing to trim (most requests) is shared as it is, not copied.
pub fn receivers_of(
    list: &crate::Receiver,
    max: usize,
) -> Result<crate::message::Receivers, String> {
    // Nothing to trim when both ends are printable ASCII (a list ending in other bytes is
    // split, as any list with a comma).
    let printable = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    let bytes = list.as_bytes();
    if max > 0 && printable(bytes.first()) && printable(bytes.last()) && !bytes.contains(&b',') {
        return Ok(smallvec::smallvec![list.clone()]);
    }
    split_receivers_at_most(list, max)
}

/// The words of every refusal for too many receivers (the send API codes it apart: A0003).
pub const TOO_MANY_SAID: &str = " receivers listed, more than ";

/// Why `list` is refused for holding more than `max` distinct receivers.
fn too_many(list: &str, max: usize) -> String {
    let listed = list.split(',').filter(|r| !r.trim().is_empty()).count();
    format!(
        "{listed}{TOO_MANY_SAID}{max}: at most {max} per message \
         (read up to the {}th distinct one); split them over several messages",
        max.saturating_add(1)
    )
}

/// Validates receivers by id type. Built once per job; the phone region comes from the job.
#[derive(Debug, Clone)]
pub struct ReceiverValidator {
    region: country::Id,
    /// The region's country calling code (86 for CN).
    calling_code: u16,
}

impl ReceiverValidator {
    /// A validator for phone numbers of `region` (ISO 3166 code such as `CN`).
    pub fn new(region: &str) -> Option<ReceiverValidator> {
        let upper = region.to_ascii_uppercase();
        let calling_code = phonenumber::metadata::DATABASE
            .by_id(upper.as_str())?
            .country_code();
        upper.parse().ok().map(|region| ReceiverValidator {
            region,
            calling_code,
        })
    }

    /// The region's country calling code (86 for CN): what a phone receiver written in its
    /// national form (the normalised form of the job region's numbers) is dialled with.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// `Ok` when `receiver` is valid for `id_type`, else the reason.
    pub fn check(&self, id_type: IdType, receiver: &str) -> Result<(), String> {
        self.normalise(id_type, receiver).map(|_| ())
    }

    /// The form a valid receiver is stored, keyed and sent in, or why it is invalid.
    ///
    /// Phones: see [`ReceiverValidator::phone`]. Other id types are kept as written.
    pub fn normalise<'r>(
        &self,
        id_type: IdType,
        receiver: &'r str,
    ) -> Result<Cow<'r, str>, String> {
        match id_type {
            // Written in its normal form already (the common case): the caller keeps its own.
            IdType::Phone => self.phone(receiver).map(|n| {
                if n == receiver {
                    Cow::Borrowed(receiver)
                } else {
                    Cow::Owned(n)
                }
            }),
            IdType::Email => check_email(receiver).map(|()| Cow::Borrowed(receiver)),
            _ if receiver.trim().is_empty() => Err("empty receiver".into()),
            _ => Ok(Cow::Borrowed(receiver)),
        }
    }

    /// A phone receiver: digits, with spaces, dashes and one leading `+` allowed (no letters:
    /// libphonenumber would read them as keypad digits). It must be a mobile number of the
    /// job's region, or of its own region when written with `+` and a country code.
    ///
    /// The normalised form is digits only: a number with the job region's country calling code
    /// is its national significant number (`+86 138 0013 8000` → `13800138000`, the form austin and Chinese
    /// SMS providers use), any other region's is E.164 with its `+` (`+44 7911 123456` →
    /// `+447911123456`), so that one number is one receiver for dedup, whitelist and tracking.
    pub fn phone(&self, receiver: &str) -> Result<String, String> {
        let s = receiver.trim();
        if s.len() > MAX_PHONE_CHARS {
            return Err(format!(
                "not a phone number: {} characters, more than {MAX_PHONE_CHARS}",
                s.chars().count()
            ));
        }
        if let Some((i, c)) = s
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == ' ' || c == '-' || (c == '+' && i == 0)))
        {
            return Err(format!(
                "not a phone number: `{c}` at position {}; write digits only (spaces, dashes and a leading + with the country code are allowed)",
                s[..i].chars().count() + 1
            ));
        }
        if !s.bytes().any(|b| b.is_ascii_digit()) {
            return Err("not a phone number: no digits".into());
        }
        self.judge_phone(s, true)
    }

    /// [`ReceiverValidator::phone`] after its checks of the characters: `read` digits written
    /// plainly by `phone_plan::read` (`phonenumber`'s own steps, ~16,000 instructions fewer),
    /// anything else by `phonenumber` (tests hold the two alike).
    fn judge_phone(&self, s: &str, read: bool) -> Result<String, String> {
        let (code, national, kind, valid) =
            match read.then(|| crate::phone_plan::read(self.region.as_ref(), s)) {
                // No leading zero: valid is a known type (below).
                Some(Some(r)) => (
                    r.code,
                    r.national,
                    r.kind,
                    r.kind != phonenumber::Type::Unknown,
                ),
                _ => {
                    let number = phonenumber::parse(Some(self.region), s)
                        .map_err(|e| format!("not a phone number: {e}"))?;
                    // `is_valid` is `number_type(..) != Unknown` over the same metadata,
                    // written out with the national number's leading zeros; without any
                    // (every mobile plan) the two agree, so the type is looked up once
                    // (phone checks were ~10% of a file job's CPU).
                    let kind = crate::phone_plan::number_type(&number);
                    let valid = if number.national().zeros() == 0 {
                        kind != phonenumber::Type::Unknown
                    } else {
                        number.is_valid()
                    };
                    let national = number.national().to_string();
                    (number.code().value(), national, kind, valid)
                }
            };
        if !valid {
            return Err(if s.starts_with('+') {
                format!("not a valid phone number for country code +{code}")
            } else {
                format!("not a valid phone number for region {:?}", self.region)
            });
        }
        match kind {
            phonenumber::Type::Mobile | phonenumber::Type::FixedLineOrMobile => {}
            other => return Err(format!("not a mobile number ({other:?})")),
        }
        // E.164: `+`, the country code, the national number with its leading zeros.
        Ok(if code == self.calling_code {
            national
        } else {
            format!("+{code}{national}")
        })
    }
}

/// A practical email check: one `@`, a non-empty local part of printable characters without
/// spaces, and a domain of dot-separated labels (letters, digits, hyphens) with a TLD.
pub fn check_email(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("not a valid email address: {why}"));
    let Some((local, domain)) = s.rsplit_once('@') else {
        return bad("no @");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("local part empty or longer than 64");
    }
    if local.contains('@') || local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("local part has spaces or a second @");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("misplaced dot in local part");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || domain.len() > 253 {
        return bad("domain has no dot");
    }
    for l in &labels {
        let ok_chars = l.chars().all(|c| c.is_alphanumeric() || c == '-');
        if l.is_empty() || l.len() > 63 || !ok_chars || l.starts_with('-') || l.ends_with('-') {
            return bad("bad domain label");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.len() < 2 || tld.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("bad top-level domain");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(split_receivers(" a, b,,a ,c,"), vec!["a", "b", "c"]);
        assert!(split_receivers(" , ,").is_empty());
        // One receiver (no comma) as the split would give it.
        for (list, want) in [
            ("a", vec!["a"]),
            (" a\u{3000}", vec!["a"]),
            ("a b", vec!["a b"]),
            ("", vec![]),
            (" \t", vec![]),
        ] {
            assert_eq!(split_receivers(list), want, "{list:?}");
        }
        assert!(split_receivers_at_most::<String>("a", 0).is_err());
        assert!(
            split_receivers_at_most::<String>(" ", 0)
                .unwrap()
                .is_empty()
        );
    }

    /// A list of one receiver with nothing to trim is shared; any other list is split as
    /// `split_receivers_at_most` splits it.
    #[test]
    fn one_plain_receiver_is_shared_the_rest_split() {
        for list in [
            "a",
            " a",
            "a ",
            "a,b",
            "a,a",
            "",
            " ",
            ",",
            "a b",
            "a\u{3000}",
        ] {
            let shared = crate::Receiver::from(list);
            for max in [0, 1, 2, MAX_RECEIVERS] {
                let got = receivers_of(&shared, max);
                let want = split_receivers_at_most::<crate::Receiver>(list, max);
                assert_eq!(got, want, "{list:?} at most {max}");
            }
            let plain = ["a", "a b"].contains(&list);
            let got = receivers_of(&shared, 1).unwrap_or_default();
            assert_eq!(
                got.first()
                    .is_some_and(|r| std::sync::Arc::ptr_eq(r, &shared)),
                plain,
                "{list:?}"
            );
        }
    }

    /// Repeats are collapsed the same whether they fall among the first few receivers
    /// (compared in place) or after them (in a set), as a plain first-seen filter would.
    #[test]
    fn repeats_collapse_across_the_first_few() {
        for n in [1usize, 7, 8, 9, 17, 40] {
            // Each receiver listed twice, the repeats interleaved at varying distances.
            let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let mut list: Vec<&str> = Vec::new();
            for i in 0..n {
                list.push(&ids[i]);
                list.push(&ids[(i * 7) % (i + 1)]);
            }
            list.extend(ids.iter().rev().map(String::as_str));
            let mut want: Vec<&str> = Vec::new();
            for r in &list {
                if !want.contains(r) {
                    want.push(r);
                }
            }
            let got: Vec<String> = split_receivers(&list.join(","));
            assert_eq!(got, want, "n = {n}");
            let shared: Vec<crate::Receiver> = split_receivers_at_most(&list.join(","), n)
                .unwrap()
                .into_vec();
            assert_eq!(shared.len(), n);
            assert!(split_receivers_at_most::<String>(&list.join(","), n - 1).is_err());
        }
    }

    #[test]
    fn repeats_collapse_in_linear_time() {
        let list: Vec<String> = (0..200_000).map(|i| format!("u{i}")).collect();
        let all = split_receivers(&list.join(","));
        assert_eq!(all.len(), 200_000);
        assert_eq!(all[199_999], "u199999");
        let twice = format!("{},{}", list[..50].join(","), list[..50].join(","));
        assert_eq!(
            split_receivers_at_most::<String>(&twice, 100)
                .unwrap()
                .len(),
            50
        );
    }

    #[test]
    fn more_than_the_limit_is_refused_with_the_count() {
        let list: Vec<String> = (0..200_000).map(|i| format!("1{i:010}")).collect();
        let err = split_receivers_at_most::<String>(&list.join(","), MAX_RECEIVERS).unwrap_err();
        assert!(
            err.starts_with("200000 receivers listed, more than 100: at most 100 per message"),
            "{err}"
        );
        let exactly: Vec<String> = list[..100].to_vec();
        assert_eq!(
            split_receivers_at_most::<String>(&exactly.join(","), MAX_RECEIVERS)
                .unwrap()
                .len(),
            100
        );
    }

    /// Issue 11 item 4: digits only, a mobile number, stored in one normalised form.
    #[test]
    fn phone_table() {
        let v = ReceiverValidator::new("CN").unwrap();
        let ok: &[(&str, &str)] = &[
            ("13800138000", "13800138000"),
            ("+86 138 0013 8000", "13800138000"),
            ("+8613900139000", "13900139000"),
            ("138-0013-8000", "13800138000"),
            (" 15912345678 ", "15912345678"),
            ("86 13800138000", "13800138000"),
            // Foreign numbers keep their country code, in E.164.
            ("+44 7911 123456", "+447911123456"),
            ("+49 1512 3456789", "+4915123456789"),
            // The US plan does not tell mobile from fixed lines: libphonenumber says
            // FIXED_LINE_OR_MOBILE, which is accepted.
            ("+1 650-253-0000", "+16502530000"),
        ];
        for (raw, want) in ok {
            assert_eq!(v.phone(raw).as_deref(), Ok(*want), "{raw}");
            assert_eq!(
                v.normalise(IdType::Phone, raw).as_deref(),
                Ok(*want),
                "{raw}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("1380013800a", "`a` at position 11"),
            ("138OO138000", "`O` at position 4"),
            ("(010) 12345678", "`(` at position 1"),
            ("138+0013800", "`+` at position 4"),
            ("010-12345678", "not a mobile number"),
            ("+44 20 7946 0000", "not a mobile number"),
            ("+86 10 1234 5678", "not a mobile number"),
            (
                "+44 7911 12345",
                "not a valid phone number for country code +44",
            ),
            ("12345", "not a phone number"),
            ("1380013800", "not a valid phone number for region CN"),
            ("- -", "no digits"),
            ("1".repeat(41).leak(), "41 characters, more than 40"),
            ("", "no digits"),
        ];
        for (raw, want) in bad {
            let err = v.check(IdType::Phone, raw).unwrap_err();
            assert!(err.contains(want), "{raw}: {err}");
        }
        // Another job region: its own numbers are national, Chinese ones E.164.
        let gb = ReceiverValidator::new("GB").unwrap();
        assert_eq!(gb.phone("07911 123456").as_deref(), Ok("7911123456"));
        assert_eq!(
            gb.phone("+86 138 0013 8000").as_deref(),
            Ok("+8613800138000")
        );
    }

    proptest::proptest! {
        /// A phone read by `phone_plan::read` is judged as one parsed by `phonenumber`: the
        /// same normal form or the same reason.
        #[test]
        fn phones_read_plainly_are_judged_as_phonenumber_judges_them(
            region in proptest::sample::select(vec!["CN", "GB", "US", "IN", "DE", "IT", "AR", "MX", "RU"]),
            s in "[+]?([0-9 -]{0,18}|1[3-9][0-9]{9}|(86|44|1|7|39|54)[ -]?[0-9]{3,4}[ -]?[0-9]{4,7})",
        ) {
            let v = ReceiverValidator::new(region).unwrap();
            proptest::prop_assert_eq!(v.judge_phone(&s, true), v.judge_phone(&s, false));
        }
    }

    proptest::proptest! {
        /// Whatever a phone receiver holds, it is judged without a panic, and a valid one is
        /// its own normal form.
        #[test]
        fn any_phone_text_is_judged(s in "[+]?[0-9 +()a-z-]{0,45}") {
            let v = ReceiverValidator::new("CN").unwrap();
            if let Ok(n) = v.phone(&s) {
                let again = v.phone(&n);
                proptest::prop_assert_eq!(again.as_deref(), Ok(n.as_str()));
            }
        }
    }

    proptest::proptest! {
        /// The one lookup of a number's type decides validity as `is_valid` does, for numbers
        /// without leading zeros in any plan (shared country codes included).
        #[test]
        fn one_type_lookup_agrees_with_is_valid(
            code in proptest::sample::select(vec![1u16, 7, 33, 39, 44, 49, 61, 81, 86, 852, 886, 971]),
            digits in "[1-9][0-9]{3,12}",
        ) {
            if let Ok(n) = phonenumber::parse(None, format!("+{code}{digits}"))
                && n.national().zeros() == 0
            {
                let kind = n.number_type(&phonenumber::metadata::DATABASE);
                proptest::prop_assert_eq!(n.is_valid(), kind != phonenumber::Type::Unknown);
            }
        }
    }

    #[test]
    fn phones() {
        let v = ReceiverValidator::new("cn").unwrap();
        for ok in ["13800138000", "+8613900139000", "15912345678"] {
            assert!(v.check(IdType::Phone, ok).is_ok(), "{ok}");
        }
        for bad in ["12345", "abc", "01088886666", "1380013800"] {
            assert!(v.check(IdType::Phone, bad).is_err(), "{bad}");
        }
        assert!(ReceiverValidator::new("XX").is_none());
    }

    #[test]
    fn emails() {
        for ok in ["a@example.com", "ann.lee+x@mail.example.org", "b@例子.中国"] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@-x.com",
            "a@x..com",
            "a@x.1",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_ids_need_text() {
        let v = ReceiverValidator::new("CN").unwrap();
        assert!(v.check(IdType::UserId, "u1").is_ok());
        assert!(v.check(IdType::OpenId, " ").is_err());
    }
}
