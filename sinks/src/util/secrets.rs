//! The secrets of an account's settings, and the scrubber every text leaving the account
//! (a SEND_FAIL reason, a recall answer, a health check line, a settings error) goes
//! through: each secret value, as written and percent-encoded, becomes `***`.
//!
//! An account knows its secrets from its `settings`:
//! - every value an `${ENV}` reference expanded to (whole values and parts of longer ones);
//! - every string under a secret-looking key (`secret`, `token`, `key`, `password`, `hook`);
//! - of every URL: its userinfo, its query values, and its path segments that look like
//!   tokens (6+ characters with a digit, or 20+ characters: a Feishu hook id, a Slack-style
//!   `/services/T0123/B0456/XyZ…` path) — `/open-apis/bot/v2/hook` stays readable.
//!
//! Values shorter than 4 characters are not scrubbed (they would blot out ordinary words and
//! are no secret worth the name).

use serde_json::{Map, Value};

/// What a secret becomes.
pub const MASK: &str = "***";
const MIN_LEN: usize = 4;

/// The secret values of one account, longest first.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

/// Rewrites every `${NAME}` inside `s` by `value(NAME)`; `$${` writes a literal `${`. A
/// malformed reference is an error naming it.
fn substitute(
    s: &str,
    mut value: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "`{after}` has no closing `}}`; write ${{NAME}} (or $${{ for a literal ${{)"
                ));
            };
            let name = &tail[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a variable reference; a name is letters, digits and _ (write $${{ for a literal ${{)"
                ));
            }
            out.push_str(&value(name)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every `${NAME}` inside `s` from the environment; `$${` writes a literal `${`.
/// Returns the text and the values the references expanded to. An unset variable or a
/// malformed reference is an error naming it.
pub fn expand(s: &str) -> Result<(String, Vec<String>), String> {
    let mut used = Vec::new();
    let out = substitute(s, |name| {
        let value = std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set; export it"))?;
        used.push(value.clone());
        Ok(value)
    })?;
    Ok((out, used))
}

/// Whether a settings key holds a secret by its name.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "key", "password", "hook"]
        .iter()
        .any(|w| k.contains(w))
}

/// Whether a URL path segment looks like a token rather than a word of the API.
fn token_like(segment: &str) -> bool {
    let n = segment.chars().count();
    (n >= 6 && segment.chars().any(|c| c.is_ascii_digit())) || n >= 20
}

/// The keys of `settings` whose values hold a secret written in clear rather than as an
/// `${ENV}` reference (what the scrubber would hide, once the references stand for a
/// placeholder): a value under a secret-looking key (a number too), a URL's userinfo, query
/// value or token-like path segment, or a malformed reference (`${…}` that is not a variable
/// name: likely a secret wrapped by mistake).
pub fn clear_secrets(settings: &Map<String, Value>) -> Vec<String> {
    fn walk(key: &str, path: String, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(text) => {
                let Some(bare) = with_placeholders(text) else {
                    out.push(path);
                    return;
                };
                let mut found = Secrets::default();
                let is_url = reqwest::Url::parse(bare.trim()).is_ok_and(|u| u.has_host());
                if secret_key(key) && !is_url {
                    found.add(bare.trim());
                }
                found.add_url_parts(&bare);
                // A URL whose base is a reference (`${BASE}/send?token=…`) reads as a path.
                if !is_url && (bare.contains('/') || bare.contains('?')) {
                    found.add_url_parts(&format!("http://x/{}", bare.trim()));
                }
                if !found.is_empty() {
                    out.push(path);
                }
            }
            Value::Number(n) if secret_key(key) && n.to_string().len() >= MIN_LEN => out.push(path),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(key, format!("{path}[{i}]"), item, out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    walk(k, format!("{path}.{k}"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in settings {
        walk(k, k.clone(), v, &mut out);
    }
    out
}

/// `text` with every `${NAME}` reference standing for a placeholder word (`x`: a host, a
/// path segment or a value that is no secret); `None` when a `${` is not a valid reference.
fn with_placeholders(text: &str) -> Option<String> {
    substitute(text, |_| Ok("x".to_string())).ok()
}

impl Secrets {
    /// The secrets of an account's `settings` (references expanded; one that cannot be is
    /// skipped here: the settings check reports it).
    pub fn of_settings(raw: &Map<String, Value>) -> Secrets {
        let mut s = Secrets::default();
        for (k, v) in raw {
            s.collect(k, v);
        }
        s
    }

    fn collect(&mut self, key: &str, v: &Value) {
        match v {
            Value::String(text) => {
                let (value, used) = expand(text).unwrap_or_else(|_| (text.clone(), Vec::new()));
                for u in &used {
                    self.add(u);
                }
                if secret_key(key) {
                    self.add(&value);
                }
                self.add_url_parts(&value);
            }
            Value::Array(items) => items.iter().for_each(|i| self.collect(key, i)),
            Value::Object(map) => map.iter().for_each(|(k, i)| self.collect(k, i)),
            _ => {}
        }
    }

    /// A URL's userinfo, query values and token-like path segments.
    pub fn add_url_parts(&mut self, text: &str) {
        let Ok(url) = reqwest::Url::parse(text.trim()) else {
            return;
        };
        if !url.has_host() {
            return;
        }
        self.add(url.username());
        if let Some(p) = url.password() {
            self.add(p);
        }
        for (_, v) in url.query_pairs() {
            self.add(&v);
        }
        if let Some(q) = url.query() {
            for part in q.split('&') {
                if let Some((_, v)) = part.split_once('=') {
                    self.add(v);
                }
            }
        }
        if let Some(segments) = url.path_segments() {
            for seg in segments.filter(|s| token_like(s)) {
                self.add(seg);
                if let Ok(decoded) = percent_encoding::percent_decode_str(seg).decode_utf8() {
                    self.add(&decoded);
                }
            }
        }
    }

    /// Adds one secret value (and its percent-encoded form, as it appears in URLs).
    pub fn add(&mut self, value: &str) {
        if value.chars().count() < MIN_LEN {
            return;
        }
        for v in [value.to_string(), crate::util::sign::percent(value)] {
            if !self.values.contains(&v) {
                self.values.push(v);
            }
        }
        // Longest first: a secret containing another is replaced whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for v in &other.values {
            if !self.values.contains(v) {
                self.values.push(v.clone());
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_inside_longer_strings() {
        let path = std::env::var("PATH").unwrap();
        let (v, used) = expand("a/${PATH}/b").unwrap();
        assert_eq!(v, format!("a/{path}/b"));
        assert_eq!(used, vec![path.clone()]);
        assert_eq!(expand("${PATH}").unwrap().0, path);
        assert_eq!(expand("cost $5, $${HOME}").unwrap().0, "cost $5, ${HOME}");
        let e = expand("x${TIDINGS_SURELY_UNSET_42}y").unwrap_err();
        assert!(e.contains("TIDINGS_SURELY_UNSET_42"), "{e}");
        assert!(expand("${oops").unwrap_err().contains("closing"));
        assert!(expand("${a b}").unwrap_err().contains("not a variable"));
    }

    #[test]
    fn secrets_in_clear_are_found_and_references_pass() {
        let raw: Map<String, Value> = serde_json::from_str(
            r#"{"secret_id": "${SMS_ID}", "secret_key": "${SMS_KEY}", "region": "ap-guangzhou",
                "url": "https://oapi.dingtalk.com/robot/send?access_token=${DT_TOKEN}",
                "hook": "https://open.feishu.cn/open-apis/bot/v2/hook/${FEISHU_HOOK}",
                "endpoint": "http://127.0.0.1:8080/open-apis/bot/v2/hook"}"#,
        )
        .unwrap();
        assert_eq!(clear_secrets(&raw), Vec::<String>::new());
        let raw: Map<String, Value> = serde_json::from_str(
            r#"{"secret_key": "s3cr3t-value", "nested": {"token": "abcd1234"},
                "url": "https://oapi.dingtalk.com/robot/send?access_token=deadbeef42",
                "hook": "https://open.feishu.cn/open-apis/bot/v2/hook/b7e2c1d0-aaaa-bbbb-cccc"}"#,
        )
        .unwrap();
        let mut found = clear_secrets(&raw);
        found.sort();
        assert_eq!(found, ["hook", "nested.token", "secret_key", "url"]);
        // A reference standing for the host or the base does not hide a token after it; a
        // secret wrapped in ${…} by mistake and a number under a secret key are in clear too.
        let raw: Map<String, Value> = serde_json::from_str(
            r#"{"url": "${DT_BASE}/robot/send?access_token=deadbeef42",
                "endpoint": "https://${HOST}/hook123456abc", "secret_key": "${kT9+/aZ==}",
                "password": 12345678, "port": 8080, "base": "https://${HOST}/open-apis/bot"}"#,
        )
        .unwrap();
        let mut found = clear_secrets(&raw);
        found.sort();
        assert_eq!(found, ["endpoint", "password", "secret_key", "url"]);
    }

    #[test]
    fn settings_secrets_are_scrubbed() {
        let raw: Map<String, Value> = serde_json::from_str(
            r#"{"hook": "b7e2c1d0-hook-id", "secret": "s3cr3t-value", "region": "ap-guangzhou",
                "url": "https://u:pa55word@hooks.example.com/services/T0123456/B0654321/XyZtok3nabcdef?key=QueryKey99",
                "endpoint": "http://127.0.0.1:8080/open-apis/bot/v2/hook"}"#,
        )
        .unwrap();
        let s = Secrets::of_settings(&raw);
        let text = "POST https://hooks.example.com/services/T0123456/B0654321/XyZtok3nabcdef?key=QueryKey99 \
                    with b7e2c1d0-hook-id and s3cr3t-value pa55word: ap-guangzhou /open-apis/bot/v2/hook";
        let shown = s.scrub(text);
        for secret in [
            "T0123456",
            "B0654321",
            "XyZtok3nabcdef",
            "QueryKey99",
            "b7e2c1d0-hook-id",
            "s3cr3t-value",
            "pa55word",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("ap-guangzhou") && shown.contains("/open-apis/bot/v2/hook"));
        assert!(shown.contains("hooks.example.com/services/***"), "{shown}");
    }
}
