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

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use phonenumber::{PhoneNumber, Type};
use regex::{Regex, RegexBuilder};

/// One descriptor's pattern and possible lengths.
struct Matcher {
    lengths: Vec<u16>,
    pattern: Regex,
}

impl Matcher {
    fn of(d: &Descriptor) -> Option<Matcher> {
        // Anchored at the start: the leftmost match starts at 0 exactly when some match does,
        // so `is_match` of `^(?:pattern)` is `find(..).start() == 0` without looking further.
        // (The pattern is read with the `x` flag: the newline ends a comment it may end with.)
        let anchored = format!("^(?:{}\n)", d.national_number().as_str());
        let pattern = RegexBuilder::new(&anchored)
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Matcher {
            lengths: d.possible_length().to_vec(),
            pattern,
        })
    }

    /// `Descriptor::is_match`: a possible length, and the pattern found at the start.
    fn is_match(&self, value: &str) -> bool {
        if !self.lengths.is_empty() && !self.lengths.contains(&(value.len() as u16)) {
            return false;
        }
        self.pattern.is_match(value)
    }
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
        let kinds = [
            (Type::PremiumRate, d.premium_rate()),
            (Type::TollFree, d.toll_free()),
            (Type::SharedCost, d.shared_cost()),
            (Type::Voip, d.voip()),
            (Type::PersonalNumber, d.personal_number()),
            (Type::Pager, d.pager()),
            (Type::Uan, d.uan()),
            (Type::Voicemail, d.voicemail()),
        ];
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
        })
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

thread_local! {
    /// Plans by region id, built on a thread's first number of the region (`None`: a pattern
    /// did not compile here).
    static PLANS: RefCell<HashMap<&'static str, Option<Rc<Plan>>>> = RefCell::new(HashMap::new());
}

/// The type of `number`: `PhoneNumber::number_type` over the default metadata.
pub(crate) fn number_type(number: &PhoneNumber) -> Type {
    let Some(meta) = number.metadata(&DATABASE) else {
        return Type::Unknown;
    };
    let plan = PLANS.with(|plans| {
        plans
            .borrow_mut()
            .entry(meta.id())
            .or_insert_with(|| Plan::of(meta).map(Rc::new))
            .clone()
    });
    match plan {
        // The national number as `phonenumber` types it: written without leading zeros.
        Some(plan) => plan.number_type(&number.national().value().to_string()),
        None => number.number_type(&DATABASE),
    }
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
