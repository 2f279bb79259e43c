//! A phone number's type (mobile, fixed line, ...), as `phonenumber` decides it, with the
//! region's patterns compiled once per thread by us.
//!
//! `phonenumber` keeps its compiled patterns in one cache shared by every thread: each match
//! takes a global lock and looks its pattern up by hashing the pattern's whole text (hundreds
//! of characters), twice. That lookup was ~2,700 instructions of a ~5,000-instruction match,
//! and a Chinese mobile takes five matches to type: most of the ~58,000 instructions a phone
//! receiver cost (bench/MEASURED.md "Phone receivers"). [`number_type`] is
//! `phonenumber`'s `validator::number_type` step for step over the same metadata: the same
//! patterns (compiled with the same `x` flag), the same possible lengths, the same order of
//! types, so it gives the same answer (tests hold it to `phonenumber` over every region's example
//! numbers and random numbers of the busiest regions).

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::LazyLock;

use phonenumber::metadata::{DATABASE, Descriptor, Descriptors, Metadata};
use phonenumber::{PhoneNumber, Type, Validation};
use regex::{Regex, RegexBuilder};

/// One descriptor's pattern and possible lengths.
struct Matcher {
    lengths: Vec<u16>,
    /// `lengths` one bit each (`None`: a length past 63, looked for in the list).
    length_bits: Option<u64>,
    pattern: Anchored,
}

/// One of the metadata's patterns, compiled ([`anchored`]), and the first two digits a number
/// it matches can start with.
struct Anchored {
    re: Regex,
    /// Those digits, one bit each (`10 * d0 + d1`): a number whose first two are not among
    /// them is not asked of the pattern (a search costs ~200 instructions however soon it
    /// fails; bench/MEASURED.md "Phone patterns asked only of numbers they can match").
    /// `None`: no such list (the pattern can start with anything, or with more literals than
    /// the extractor lists).
    leading: Option<u128>,
}

impl Anchored {
    /// `pattern` compiled, or `None` where it does not compile here.
    fn of(pattern: &str) -> Option<Anchored> {
        Some(Anchored {
            re: anchored(pattern)?,
            leading: first_two_digits(pattern),
        })
    }

    /// Whether the pattern may match `value`: `false` only where it cannot.
    fn can_match(&self, value: &str) -> bool {
        can_start(self.leading, value)
    }

    /// The pattern found at the start of `value`.
    fn is_match(&self, value: &str) -> bool {
        self.can_match(value) && self.re.is_match(value)
    }

    /// The pattern's match at the start of `value`, if any.
    fn find<'v>(&self, value: &'v str) -> Option<regex::Match<'v>> {
        self.can_match(value).then(|| self.re.find(value)).flatten()
    }
}

/// Whether `value` starts with two digits `leading` (from [`first_two_digits`]) lists, or it
/// lists none, or `value` does not start with two digits.
fn can_start(leading: Option<u128>, value: &str) -> bool {
    match (leading, value.as_bytes()) {
        (Some(bits), [d0 @ b'0'..=b'9', d1 @ b'0'..=b'9', ..]) => {
            bits >> (10 * u32::from(d0 - b'0') + u32::from(d1 - b'0')) & 1 == 1
        }
        _ => true,
    }
}

/// The first two digits of a number `pattern` can match (as [`Anchored::leading`] keeps them),
/// from regex's own reading of it: the literals one of which every match starts with.
/// Phone numbers are ASCII digits, so `\d` is read as `[0-9]` here (`phonenumber`'s patterns
/// are Unicode: on ASCII text the two match alike).
fn first_two_digits(pattern: &str) -> Option<u128> {
    let hir = regex_syntax::ParserBuilder::new()
        .ignore_whitespace(true)
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&format!("(?:{pattern}\n)"))
        .ok()?;
    // Two digits are all that is asked: longer literals would only overflow the list.
    let seq = regex_syntax::hir::literal::Extractor::new()
        .limit_literal_len(2)
        .limit_total(200)
        .extract(&hir);
    let mut bits = 0u128;
    for literal in seq.literals()? {
        match literal.as_bytes() {
            [d0 @ b'0'..=b'9'] => bits |= 0x3ff << (10 * u32::from(d0 - b'0')),
            [d0 @ b'0'..=b'9', d1 @ b'0'..=b'9', ..] => {
                bits |= 1 << (10 * u32::from(d0 - b'0') + u32::from(d1 - b'0'));
            }
            // Empty, or not a digit: the pattern can start with anything.
            _ => return None,
        }
    }
    Some(bits)
}

/// `pattern` compiled as `phonenumber` compiles its metadata's patterns (the `x` flag), anchored
/// at the start: the leftmost match starts at 0 exactly when some match does, and then it is
/// the same match (same end, same groups), so `find(..)` with `start() == 0` is a match of
/// the anchored pattern without looking further. (The newline ends a comment the pattern may
/// end with.)
fn anchored(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&format!("^(?:{pattern}\n)"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

impl Matcher {
    fn of(d: &Descriptor) -> Option<Matcher> {
        Some(Matcher {
            lengths: d.possible_length().to_vec(),
            length_bits: d
                .possible_length()
                .iter()
                .try_fold(0u64, |bits, &l| (l < 64).then(|| bits | 1 << l)),
            pattern: Anchored::of(d.national_number().as_str())?,
        })
    }

    /// `Descriptor::is_match`: a possible length, and the pattern found at the start.
    fn is_match(&self, value: &str) -> bool {
        // (A length is compared as a `u16`, as `phonenumber` does, only where lengths past 63
        // are listed; a number is at most 17 digits here.)
        let possible = match self.length_bits {
            // No lengths: any.
            Some(0) => true,
            Some(bits) => value.len() < 64 && bits >> value.len() & 1 == 1,
            None => self.lengths.contains(&(value.len() as u16)),
        };
        if !possible {
            return false;
        }
        self.pattern.is_match(value)
    }
}

/// A region's special descriptors (premium rate, toll free, shared cost, VoIP, personal
/// number, pager, UAN, voicemail), in the order `number_type` tries them.
fn specials(d: &Descriptors) -> [(Type, Option<&Descriptor>); 8] {
    [
        (Type::PremiumRate, d.premium_rate()),
        (Type::TollFree, d.toll_free()),
        (Type::SharedCost, d.shared_cost()),
        (Type::Voip, d.voip()),
        (Type::PersonalNumber, d.personal_number()),
        (Type::Pager, d.pager()),
        (Type::Uan, d.uan()),
        (Type::Voicemail, d.voicemail()),
    ]
}

/// A region's descriptors, in the order `number_type` tries them.
struct Plan {
    general: Matcher,
    /// Premium rate, toll free, shared cost, VoIP, personal number, pager, UAN, voicemail.
    special: Vec<(Type, Matcher)>,
    fixed_line: Option<Matcher>,
    mobile: Option<Matcher>,
    /// The fixed-line and mobile patterns are the same text (then a fixed-line match is
    /// `FixedLineOrMobile`).
    same_pattern: bool,
    /// What reading a number written in the region takes (`phonenumber`'s parser): its
    /// country calling code, as a number and as text,
    code: u16,
    code_text: String,
    /// whether the region is its country code's only one (not a non-geographic `001`
    /// plan): then every number of the code is the region's (`region_of`),
    sole: bool,
    /// the general descriptor's lengths dialled only locally,
    local_lengths: Vec<u16>,
    /// the international dialling prefix (`00`, `011`, ...),
    idd: Option<Anchored>,
    /// the national prefix (`0`), the pattern of what is stripped as one and the rule that
    /// rewrites what is left,
    national_prefix: Option<String>,
    for_parsing: Option<Anchored>,
    transform: Option<String>,
    /// and, for a country code shared by several regions, the leading digits that say a
    /// number is this region's.
    leading_digits: Option<Anchored>,
}

impl Plan {
    /// `None` if a pattern does not compile here (then `phonenumber` types the number).
    fn of(meta: &Metadata) -> Option<Plan> {
        let d = meta.descriptors();
        // `Some(None)`: the region has no such descriptor; `None`: its pattern did not compile.
        let optional = |d: Option<&Descriptor>| match d {
            None => Some(None),
            Some(d) => Matcher::of(d).map(Some),
        };
        let kinds = specials(d);
        let mut special = Vec::new();
        for (kind, desc) in kinds {
            if let Some(m) = optional(desc)? {
                special.push((kind, m));
            }
        }
        Some(Plan {
            general: Matcher::of(d.general())?,
            special,
            fixed_line: optional(d.fixed_line())?,
            mobile: optional(d.mobile())?,
            same_pattern: d.fixed_line().map(|d| d.national_number().as_str())
                == d.mobile().map(|d| d.national_number().as_str()),
            code: meta.country_code(),
            code_text: meta.country_code().to_string(),
            sole: sole_region(meta.country_code()).is_some_and(|m| m.id() == meta.id()),
            local_lengths: d.general().possible_local_length().to_vec(),
            idd: compiled(meta.international_prefix().map(|p| p.as_str()))?,
            national_prefix: meta.national_prefix().map(str::to_owned),
            for_parsing: compiled(meta.national_prefix_for_parsing().map(|p| p.as_str()))?,
            transform: meta.national_prefix_transform_rule().map(str::to_owned),
            leading_digits: compiled(meta.leading_digits().map(|p| p.as_str()))?,
        })
    }

    /// `validator::length(meta, number, Type::Unknown)` for a national number of `len` digits.
    /// (The metadata `phonenumber` 0.3.10 loads gives no region's general descriptor any
    /// possible lengths, so this is `InvalidLength` throughout; it is kept step for step so
    /// that metadata which does give them is read alike too.)
    fn length(&self, len: usize) -> Validation {
        // `length` takes the general descriptor's possible lengths whatever the type asked
        // (when the type's own are not empty; for `Unknown` they are the general ones).
        let possible = &self.general.lengths;
        let (Some(&min), Some(&max)) = (possible.first(), possible.last()) else {
            return Validation::InvalidLength;
        };
        let len = len as u16;
        if self.local_lengths.contains(&len) {
            Validation::IsPossibleLocalOnly
        } else if len == min {
            Validation::IsPossible
        } else if len < min {
            Validation::TooShort
        } else if len > max {
            Validation::TooLong
        } else if possible.contains(&len) {
            Validation::IsPossible
        } else {
            Validation::InvalidLength
        }
    }

    /// `helper::national_number`: the national number once a national prefix (and a carrier
    /// code) the region's pattern finds at its start is stripped or rewritten. `None` where
    /// `phonenumber` would fail (a rewrite rule with no first group to take the carrier from).
    fn national_number<'a>(&self, national: &'a str) -> Option<Cow<'a, str>> {
        let Some(parsing) = &self.for_parsing else {
            return Some(Cow::Borrowed(
                self.national_prefix
                    .as_deref()
                    .and_then(|p| national.strip_prefix(p))
                    .unwrap_or(national),
            ));
        };
        // Most numbers have no national prefix: the pattern is asked first whether it matches
        // at all, without the search for its groups and their allocation (~700 instructions
        // a number; bench/MEASURED.md "A phone number's national prefix asked first").
        if !parsing.is_match(national) {
            return Some(Cow::Borrowed(national));
        }
        let parsing = &parsing.re;
        let Some(found) = parsing.captures(national) else {
            return Some(Cow::Borrowed(national));
        };
        let last = found.get(parsing.captures_len() - 1);
        match (&self.transform, last) {
            // `phonenumber` checks here that the number is viable and is not (the same
            // pattern, tested twice): never both.
            (None, _) | (_, None) => Some(Cow::Borrowed(&national[found.get(0)?.end()..])),
            (Some(rule), Some(_)) => {
                found.get(1)?;
                let rewritten = parsing.replace(national, rule.as_str()).into_owned();
                if self.general.is_match(national) && !self.general.is_match(&rewritten) {
                    Some(Cow::Borrowed(national))
                } else {
                    Some(Cow::Owned(rewritten))
                }
            }
        }
    }

    fn number_type(&self, value: &str) -> Type {
        if !self.general.is_match(value) {
            return Type::Unknown;
        }
        if let Some((kind, _)) = self.special.iter().find(|(_, m)| m.is_match(value)) {
            return *kind;
        }
        let mobile = |v| self.mobile.as_ref().is_some_and(|m| m.is_match(v));
        if self.fixed_line.as_ref().is_some_and(|m| m.is_match(value)) {
            return if self.same_pattern || mobile(value) {
                Type::FixedLineOrMobile
            } else {
                Type::FixedLine
            };
        }
        if mobile(value) {
            Type::Mobile
        } else {
            Type::Unknown
        }
    }
}

/// One of the metadata's optional patterns, compiled (`Some(None)`: the region has none;
/// `None`: it did not compile here).
fn compiled(pattern: Option<&str>) -> Option<Option<Anchored>> {
    pattern.map_or(Some(None), |p| Anchored::of(p).map(Some))
}

thread_local! {
    /// Plans by region id and country code (the non-geographic codes, 800, 870, 881 and the
    /// rest, share the id `001`), built on a thread's first number of the region (`None`: a
    /// pattern did not compile here).
    static PLANS: RefCell<crate::ids::FastMap<(&'static str, u16), Option<Rc<Plan>>>> =
        RefCell::new(crate::ids::FastMap::default());
}

/// The plan of a region (`None`: one of its patterns did not compile here).
fn plan_of(meta: &'static Metadata) -> Option<Rc<Plan>> {
    PLANS.with(|plans| {
        plans
            .borrow_mut()
            .entry((meta.id(), meta.country_code()))
            .or_insert_with(|| Plan::of(meta).map(Rc::new))
            .clone()
    })
}

/// The type of `number`: `PhoneNumber::number_type` over the default metadata.
pub(crate) fn number_type(number: &PhoneNumber) -> Type {
    let Some(meta) = number.metadata(&DATABASE) else {
        return Type::Unknown;
    };
    match plan_of(meta) {
        // The national number as `phonenumber` types it: written without leading zeros.
        Some(plan) => plan.number_type(&number.national().value().to_string()),
        None => number.number_type(&DATABASE),
    }
}

/// A phone number read as `phonenumber::parse` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    /// The country calling code.
    pub code: u16,
    /// The national significant number: digits, the first not a zero.
    pub national: String,
    /// Its type (`PhoneNumber::number_type`).
    pub kind: Type,
}

/// Country calling codes with a plan (`Database::by_code(..).is_some()`), by code.
static KNOWN_CODES: LazyLock<Vec<bool>> = LazyLock::new(|| {
    (0..1000u16)
        .map(|code| DATABASE.region(&code).is_some())
        .collect()
});

/// `text` read as `phonenumber::parse(Some(region), text)` reads it, and typed, when `text` is
/// ASCII digits, spaces and dashes after at most one `+` (the characters a phone receiver may
/// hold): `phonenumber`'s steps for such text (its two grammars', the international
/// prefix's, the country code's, the national prefix's, the region the number belongs to)
/// over the region's patterns compiled once per thread. `None` for any other text, a national
/// number with a leading zero, a pattern that did not compile here, and every text
/// `phonenumber` refuses: then `phonenumber` reads it (and says why it refuses). Tests hold
/// this to `phonenumber` over every region.
pub(crate) fn read(region: &str, text: &str) -> Option<Read> {
    let (plus, body) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return None;
    }
    let here = plan_of(DATABASE.by_id(region)?)?;
    let plain = !body.contains([' ', '-']);
    // The RFC 3966 grammar, tried first, takes text without spaces; after a `+`, the digits
    // up to the first dash are the country code, and no international prefix is looked for.
    let given = (plus && !plain && !body.contains(' '))
        .then(|| body.split_once('-'))
        .flatten()
        .filter(|(given, _)| !given.is_empty());
    let digits: Cow<str> = match given.map_or(body, |(_, rest)| rest) {
        d if d.bytes().all(|b| b.is_ascii_digit()) => Cow::Borrowed(d),
        d => Cow::Owned(d.chars().filter(char::is_ascii_digit).collect()),
    };
    let (code, national) = if let Some((given, _)) = given {
        // Viable: three digits (`is_viable`); then more than two (`country_code`).
        if digits.len() < 3 {
            return None;
        }
        let code: u16 = given.parse().ok()?;
        if !KNOWN_CODES.get(usize::from(code)).copied().unwrap_or(false) {
            return None;
        }
        (code, digits.as_ref())
    } else {
        // Otherwise (or without a `+`) the digits alike; plain text needs two digits to be
        // viable, or three after a `+`; with separators, this takes three.
        if digits.len() < if plain && !plus { 2 } else { 3 } {
            return None;
        }
        country_code(&here, plus, &digits)?
    };
    // `parse`: the region's national prefix stripped, kept when what it leaves is too short.
    let mut stripped = here.national_number(national)?;
    if let Some(prefix) = here.national_prefix.as_deref()
        && stripped.starts_with(prefix)
    {
        stripped = match stripped {
            Cow::Borrowed(s) => Cow::Borrowed(&s[prefix.len()..]),
            Cow::Owned(s) => Cow::Owned(s[prefix.len()..].to_owned()),
        };
    }
    let national = if here.length(stripped.len()) == Validation::TooShort {
        national.to_owned()
    } else {
        stripped.into_owned()
    };
    // Up to 16 digits are below 2^56 (10^16 < 2^56): only a longer number, or one a rule
    // rewrote, is read as a number to be sure.
    let small = national.len() <= 16 && national.bytes().all(|b| b.is_ascii_digit());
    if !(2..=17).contains(&national.len())
        || national.starts_with('0')
        || (!small && national.parse::<u64>().ok()? >= 1 << 56)
    {
        return None;
    }
    // `PhoneNumber::metadata` (`validator::source_for`): the region the number belongs to.
    // A number of the job region's own code, where that code is the region's alone, is the
    // region's: its plan is at hand (`region_of` and a second `plan_of` were ~570
    // instructions a number).
    let plan = if code == here.code && here.sole {
        here
    } else {
        plan_of(region_of(code, &national)?)?
    };
    let kind = plan.number_type(&national);
    Some(Read {
        code,
        national,
        kind,
    })
}

/// `helper::international_prefix` and `helper::country_code` for a number's digits: the
/// country code and what follows it. An international prefix at the start is dropped unless a
/// zero follows it; after it or a `+`, the country code comes next.
fn country_code<'a>(here: &Plan, plus: bool, digits: &'a str) -> Option<(u16, &'a str)> {
    let mut national = digits;
    let mut dialled = plus;
    if let Some(found) = here.idd.as_ref().and_then(|idd| idd.find(national))
        && !national[found.end()..].starts_with('0')
    {
        national = &national[found.end()..];
        dialled = true;
    }
    if dialled {
        if national.len() <= 2 || national.starts_with('0') {
            return None;
        }
        let (code, len) = (1..=3).find_map(|len| {
            let code: u16 = national[..len].parse().ok()?;
            KNOWN_CODES[usize::from(code)].then_some((code, len))
        })?;
        Some((code, &national[len..]))
    } else {
        // The region's code written without a `+`: dropped when what it leaves is the
        // region's and what it was is not.
        if national.starts_with(&here.code_text)
            && (!here.general.is_match(national) || !here.length(national.len()).is_possible())
        {
            national = &national[here.code_text.len()..];
        }
        Some((here.code, national))
    }
}

/// The region alone on country code `code` (not `001`, the non-geographic entities), if
/// `phonenumber` knows its id: every number of the code is that region's ([`region_of`]).
fn sole_region(code: u16) -> Option<&'static Metadata> {
    match DATABASE.region(&code)?[..] {
        [only] if only != "001" => {
            only.parse::<phonenumber::country::Id>().ok()?;
            DATABASE.by_id(only)
        }
        _ => None,
    }
}

/// `validator::source_for`: the region a number of country code `code` belongs to (`None`
/// where `phonenumber` finds none).
fn region_of(code: u16, national: &str) -> Option<&'static Metadata> {
    let regions = DATABASE.region(&code)?;
    if let [only] = regions[..] {
        return if only == "001" {
            DATABASE.by_code(&code)?.into_iter().next()
        } else {
            sole_region(code)
        };
    }
    for region in regions {
        let meta = DATABASE.by_id(region)?;
        let plan = plan_of(meta)?;
        let belongs = match &plan.leading_digits {
            Some(leading) => leading.is_match(national),
            None => plan.number_type(national) != Type::Unknown,
        };
        if belongs {
            region.parse::<phonenumber::country::Id>().ok()?;
            return Some(meta);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `number` parsed in `region` (if it parses) types as `phonenumber` types it.
    fn alike(region: phonenumber::country::Id, number: &str) -> bool {
        match phonenumber::parse(Some(region), number) {
            Ok(n) => {
                let (ours, theirs) = (number_type(&n), n.number_type(&DATABASE));
                assert_eq!(ours, theirs, "{region:?} {number}");
                true
            }
            Err(_) => false,
        }
    }

    /// Every region's own example numbers of each type, with a digit more and one fewer,
    /// national and with their country code.
    #[test]
    fn every_regions_examples_type_alike() {
        let mut checked = 0;
        for code in 1..1000u16 {
            for meta in DATABASE.by_code(&code).unwrap_or_default() {
                let Ok(region) = meta.id().parse::<phonenumber::country::Id>() else {
                    continue;
                };
                let d = meta.descriptors();
                let examples = [
                    Some(d.general()),
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.pager(),
                    d.uan(),
                    d.voicemail(),
                ];
                for e in examples
                    .into_iter()
                    .flatten()
                    .filter_map(Descriptor::example)
                {
                    for v in [
                        e.to_string(),
                        format!("{e}0"),
                        e[1..].to_string(),
                        format!("+{code}{e}"),
                    ] {
                        checked += usize::from(alike(region, &v));
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} numbers checked");
    }

    /// A pattern's leading digits admit every number the pattern matches: each example number
    /// (and a digit more and fewer), and each two-digit start followed by the pattern's own
    /// example's rest; and most patterns have such a list (else it saves nothing).
    #[test]
    fn leading_digits_admit_what_the_pattern_matches() {
        let (mut listed, mut all, mut checked) = (0, 0, 0);
        for meta in metas() {
            let Some(plan) = plan_of(meta) else { continue };
            let d = meta.descriptors();
            let mut pairs: Vec<(&Matcher, Option<&Descriptor>)> =
                vec![(&plan.general, Some(d.general()))];
            let specials = specials(d);
            for (kind, m) in &plan.special {
                pairs.push((
                    m,
                    specials.iter().find(|(k, _)| k == kind).and_then(|x| x.1),
                ));
            }
            pairs.extend(plan.fixed_line.as_ref().map(|m| (m, d.fixed_line())));
            pairs.extend(plan.mobile.as_ref().map(|m| (m, d.mobile())));
            for (m, desc) in pairs {
                all += 1;
                listed += usize::from(m.pattern.leading.is_some());
                let Some(e) = desc.and_then(Descriptor::example) else {
                    continue;
                };
                let mut numbers = vec![e.to_string(), format!("{e}0"), e[1..].to_string()];
                numbers.extend((0..100).map(|start| format!("{start:02}{}", &e[2.min(e.len())..])));
                for v in numbers {
                    let plain = m.lengths.is_empty() || m.lengths.contains(&(v.len() as u16));
                    assert_eq!(
                        m.is_match(&v),
                        plain && m.pattern.re.is_match(&v),
                        "{} {v}",
                        meta.id()
                    );
                    checked += 1;
                }
            }
        }
        // The international and national prefixes' patterns alike, over every start.
        for meta in metas() {
            let Some(plan) = plan_of(meta) else { continue };
            for prefix in [&plan.idd, &plan.for_parsing] {
                let Some(Anchored { re, leading }) = prefix else {
                    continue;
                };
                for start in 0..100 {
                    for rest in [
                        "",
                        "0",
                        "00",
                        "1",
                        "11",
                        "1234567",
                        "0012345678",
                        "99999999",
                        "86",
                    ] {
                        let v = format!("{start:02}{rest}");
                        if re.is_match(&v) {
                            assert!(can_start(*leading, &v), "{} {v}", meta.id());
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(
            listed * 2 > all,
            "{listed} of {all} patterns list their leading digits"
        );
        assert!(checked > 10_000, "{checked} numbers checked");
    }

    /// A region alone on its code reads its own numbers without looking for their region;
    /// one that shares its code (NANP's +1, +44's crown dependencies, +7) does not.
    #[test]
    fn a_region_alone_on_its_code_is_sole() {
        let sole = |id: &str| plan_of(DATABASE.by_id(id).unwrap()).unwrap().sole;
        assert!(sole("CN") && sole("DE") && sole("JP"));
        assert!(!sole("US") && !sole("CA") && !sole("GB") && !sole("RU"));
        for meta in metas().filter(|m| m.id() == "001") {
            assert!(
                plan_of(meta).is_none_or(|p| !p.sole),
                "001 +{}",
                meta.country_code()
            );
        }
        // What the shortcut takes for granted: `region_of` finds a sole region's own plan for
        // any number of its code.
        let mut sole_regions = 0;
        for meta in metas().filter(|m| plan_of(m).is_some_and(|p| p.sole)) {
            for national in ["1", "123456789", "99999999999"] {
                let found = region_of(meta.country_code(), national).map(Metadata::id);
                assert_eq!(
                    found,
                    Some(meta.id()),
                    "+{} {national}",
                    meta.country_code()
                );
            }
            sole_regions += 1;
        }
        assert!(sole_regions > 150, "{sole_regions} sole regions");
    }

    /// Every plan in the metadata (the non-geographic ones among them), by country code.
    fn metas() -> impl Iterator<Item = &'static Metadata> {
        (1..1000u16).flat_map(|code| DATABASE.by_code(&code).unwrap_or_default())
    }

    /// A plan's example numbers: general, fixed line, mobile, toll free, VoIP.
    fn examples(meta: &Metadata) -> impl Iterator<Item = &str> {
        let d = meta.descriptors();
        [
            Some(d.general()),
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.voip(),
        ]
        .into_iter()
        .flatten()
        .filter_map(Descriptor::example)
    }

    /// `text` read in `region` by [`read`] as `phonenumber` reads it: whatever `read` reads,
    /// `phonenumber` reads alike (country code, national number, type); and `read` reads every
    /// plain text `phonenumber` reads to a number without a leading zero that belongs to a
    /// region. Returns whether `read` read it.
    fn read_alike(region: phonenumber::country::Id, text: &str) -> bool {
        let ours = read(region.as_ref(), text);
        let theirs = phonenumber::parse(Some(region), text);
        match (&ours, &theirs) {
            (Some(r), Ok(n)) => {
                assert_eq!(
                    (r.code, r.national.as_str(), r.kind),
                    (
                        n.code().value(),
                        n.national().to_string().as_str(),
                        n.number_type(&DATABASE)
                    ),
                    "{region:?} {text}"
                );
                assert_eq!(n.national().zeros(), 0, "{region:?} {text}");
            }
            (Some(r), Err(e)) => panic!("{region:?} {text}: read {r:?}, phonenumber: {e}"),
            (None, Ok(n)) => {
                let body = text.strip_prefix('+').unwrap_or(text);
                let digits = body.bytes().filter(u8::is_ascii_digit).count();
                let readable = body
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
                    && (digits == body.len() || digits >= 3)
                    && n.national().zeros() == 0
                    && n.metadata(&DATABASE).is_some();
                assert!(!readable, "{region:?} {text}: not read; phonenumber: {n:?}");
            }
            (None, Err(_)) => {}
        }
        ours.is_some()
    }

    /// Every region's example numbers, written nationally, with the national prefix, with the
    /// country code (after `+`, after the region's international prefix, bare), with a digit
    /// more or fewer: read by every region with a plan of its own as `phonenumber` reads them.
    #[test]
    fn every_regions_examples_read_alike() {
        let regions: Vec<(phonenumber::country::Id, &Metadata)> = metas()
            .filter_map(|meta| Some((meta.id().parse().ok()?, meta)))
            .collect();
        let (mut read_count, mut tried) = (0, 0);
        for (region, meta) in &regions {
            let code = meta.country_code();
            for e in examples(meta) {
                let mut texts = vec![
                    e.to_string(),
                    format!("{e}0"),
                    e[1..].to_string(),
                    format!("+{code}{e}"),
                    format!("{code}{e}"),
                    format!("+{e}"),
                    format!("00{code}{e}"),
                    format!("011{code}{e}"),
                    // Spaces and dashes: the RFC 3966 grammar (a `+`, the country code up to
                    // the first dash) and the natural one.
                    format!("+{code}-{e}"),
                    format!("+{code} {e}"),
                    format!("+0{code}-{}-{}", &e[..1], &e[1..]),
                    format!("+-{code}{e}"),
                    format!("{code} {e}"),
                    format!("{}-{} ", &e[..2.min(e.len())], &e[2.min(e.len())..]),
                    format!("- {}", &e[..3.min(e.len())]),
                ];
                if let Some(p) = meta.national_prefix() {
                    texts.push(format!("{p}{e}"));
                    texts.push(format!("+{code}{p}{e}"));
                    // Too short once the prefix is stripped: kept whole.
                    texts.push(format!("{p}{}", &e[..2.min(e.len())]));
                }
                if let Some(p) = meta.preferred_international_prefix() {
                    texts.push(format!("{p}{code}{e}"));
                }
                // Read in its own region and in a few others.
                for (reader, _) in regions.iter().step_by(37).chain([&(*region, *meta)]) {
                    for t in &texts {
                        tried += 1;
                        read_count += usize::from(read_alike(*reader, t));
                    }
                }
            }
        }
        eprintln!("{read_count} of {tried} read");
        assert!(read_count > tried / 3, "{read_count} of {tried} read");
    }

    /// Numbers that begin with what a region's national-prefix pattern strips (carrier codes,
    /// prefixes that are rewritten), followed by the region's examples whole or cut short:
    /// read in that region as `phonenumber` reads them.
    #[test]
    fn national_prefixes_read_alike() {
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut read_count, mut skipped) = (0, 0);
        for meta in metas() {
            let (Ok(region), Some(parsing)) = (
                meta.id().parse::<phonenumber::country::Id>(),
                meta.national_prefix_for_parsing(),
            ) else {
                continue;
            };
            // The pattern as `phonenumber` compiles it, its `\d` as ASCII digits.
            // (Some end in `$`: a whole local number given its area code. Proptest cannot
            // generate from anchors; without it, the text ends with what it generates.)
            let pattern = parsing.as_str().replace('$', "");
            let Ok(prefixes) = proptest::string::string_regex(&format!("(?x-u:{pattern}\n)"))
            else {
                skipped += 1;
                continue;
            };
            let d = meta.descriptors();
            let examples: Vec<&str> = [d.general(), d.fixed_line().unwrap_or(d.general())]
                .into_iter()
                .chain(d.mobile())
                .filter_map(Descriptor::example)
                .collect();
            for _ in 0..40 {
                let prefix = prefixes.new_tree(&mut runner).unwrap().current();
                for e in &examples {
                    for cut in [e.len(), e.len() - 1, e.len() / 2, 1, 0] {
                        let text = format!("{prefix}{}", &e[..cut]);
                        if !text.is_empty() {
                            read_count += usize::from(read_alike(region, &text));
                        }
                    }
                }
            }
        }
        eprintln!("{read_count} read, {skipped} regions' patterns skipped");
        assert!(
            read_count > 1000 && skipped == 0,
            "{read_count} read, {skipped} skipped"
        );
    }

    /// The non-geographic codes (800, 808, 870, 881, ...) all have the region id `001`: each
    /// one's numbers, read one code after another on one thread, are typed by its own plan.
    #[test]
    fn non_geographic_codes_each_read_by_their_own_plan() {
        let mut read_count = 0;
        for round in 0..2 {
            for meta in metas().filter(|m| m.id() == "001") {
                let code = meta.country_code();
                for e in examples(meta) {
                    for text in [format!("+{code}{e}"), format!("+{code} {e}")] {
                        read_count += usize::from(read_alike(phonenumber::country::CN, &text));
                        // And the fallback's typing, through the same per-thread plans.
                        if let Ok(n) = phonenumber::parse(Some(phonenumber::country::CN), &text) {
                            assert_eq!(
                                number_type(&n),
                                n.number_type(&DATABASE),
                                "{text} (round {round})"
                            );
                        }
                    }
                }
            }
        }
        assert!(read_count > 10, "{read_count} read");
    }

    proptest! {
        /// Random plain digits read in regions of every kind (shared country codes, national
        /// prefix rules that rewrite, international prefixes of every shape) as `phonenumber`
        /// reads them.
        #[test]
        fn random_digits_read_alike(
            region in prop::sample::select(vec![
                "CN", "US", "CA", "GB", "JE", "DE", "IN", "HK", "TW", "JP", "SG", "RU", "KZ",
                "AR", "MX", "BR", "IT", "AU", "FR", "ID", "CO", "NG", "VA",
            ]),
            text in "\\+?(1[3-9][0-9]{9}|0{0,2}[0-9]{1,17}|(86|1|44|7|39|54|52|55)[0-9]{6,12})",
            dashes in prop::collection::vec((0..20usize, prop::sample::select(vec![" ", "-", " - ", "--"])), 0..3),
        ) {
            let mut text = text;
            for (at, sep) in dashes {
                // After the `+`, if any, at a character boundary (all ASCII).
                let at = at.min(text.len()).max(usize::from(text.starts_with('+')));
                text.insert_str(at.min(text.len()), sep);
            }
            read_alike(region.parse().unwrap(), text.trim());
        }
    }

    proptest! {
        /// Random digits in the busiest regions type as `phonenumber` types them.
        #[test]
        fn random_numbers_type_alike(
            region in prop::sample::select(vec!["CN", "US", "GB", "DE", "IN", "HK", "TW", "JP", "SG", "RU"]),
            number in "\\+?(1[3-9][0-9]{9}|[0-9]{4,15})",
        ) {
            alike(region.parse().unwrap(), &number);
        }
    }
}
