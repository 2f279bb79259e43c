//! Receivers: splitting a `receiver` list and validating each receiver by `id_type`.

use phonenumber::country;

use crate::template::IdType;

/// More receivers than this in one MessageParam rejects the message (CONTRACT §1).
pub const MAX_RECEIVERS: usize = 100;

/// Splits a comma-separated receiver list: entries trimmed, empty ones dropped, repeats
/// collapsed (first occurrence kept, order preserved).
pub fn split_receivers(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !out.iter().any(|seen| seen == r) {
            out.push(r.to_string());
        }
    }
    out
}

/// Validates receivers by id type. Built once per job; the phone region comes from the job.
#[derive(Debug, Clone)]
pub struct ReceiverValidator {
    region: country::Id,
}

impl ReceiverValidator {
    /// A validator for phone numbers of `region` (ISO 3166 code such as `CN`).
    pub fn new(region: &str) -> Option<ReceiverValidator> {
        region
            .to_ascii_uppercase()
            .parse()
            .ok()
            .map(|region| ReceiverValidator { region })
    }

    /// `Ok` when `receiver` is valid for `id_type`, else the reason.
    pub fn check(&self, id_type: IdType, receiver: &str) -> Result<(), String> {
        match id_type {
            IdType::Phone => self.check_phone(receiver),
            IdType::Email => check_email(receiver),
            _ if receiver.trim().is_empty() => Err("empty receiver".into()),
            _ => Ok(()),
        }
    }

    fn check_phone(&self, receiver: &str) -> Result<(), String> {
        let number = phonenumber::parse(Some(self.region), receiver)
            .map_err(|e| format!("not a phone number: {e}"))?;
        if !number.is_valid() {
            return Err(format!(
                "not a valid phone number for region {:?}",
                self.region
            ));
        }
        match number.number_type(&phonenumber::metadata::DATABASE) {
            phonenumber::Type::Mobile | phonenumber::Type::FixedLineOrMobile => Ok(()),
            other => Err(format!("not a mobile number ({other:?})")),
        }
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
