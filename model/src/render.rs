//! Rendering `{$name}` placeholders in a template's content model.

use serde_json::{Map, Value};

/// Errors rendering content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A placeholder has no value in the message's `variables`.
    #[error("missing variable `{0}`")]
    MissingVariable(String),
    /// A placeholder's value is `null`: it has no value, like a missing one.
    #[error("missing variable `{0}`: its value is null; give it a string, number or boolean")]
    NullVariable(String),
    /// A placeholder's value is an empty or blank string: austin refuses it as missing (its
    /// `ContentHolderUtil` checks `StrUtil.isBlank`), and "Your code is ." is never meant.
    #[error(
        "missing variable `{0}`: its value is empty or blank; give it the text to fill the placeholder"
    )]
    BlankVariable(String),
    /// A placeholder's value is an object or an array: there is no one text for it.
    #[error(
        "variable `{0}` is {1}: a placeholder takes a string, number or boolean, not an object or array"
    )]
    NotText(String, &'static str),
}

pub use crate::variables::Variables;

/// Writes the text of variable `name` (`v`) at the end of `out`: a string by `text` (as it is,
/// or escaped for JSON); a number straight into it, not through a `String` of its own (an
/// allocation and a copy per number, ~100 instructions), as a boolean, with nothing to escape.
fn push_value(
    out: &mut String,
    name: &str,
    v: &Value,
    text: impl Fn(&mut String, &str),
) -> Result<(), RenderError> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            return Err(RenderError::BlankVariable(name.to_string()));
        }
        Value::String(s) => text(out, s),
        Value::Number(n) => push_number(out, n),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => return Err(RenderError::NullVariable(name.to_string())),
        Value::Array(_) => return Err(RenderError::NotText(name.to_string(), "an array")),
        Value::Object(_) => return Err(RenderError::NotText(name.to_string(), "an object")),
    }
    Ok(())
}

/// A number as serde_json writes it (its `Display` is its JSON): a whole number's digits by
/// itoa straight into `out`, as serde_json's own `Display` makes them but without the
/// formatter's machinery around them (~150 instructions a number); a fraction through its
/// `Display` (serde_json's own float formatting). Writing into a `String` cannot fail.
fn push_number(out: &mut String, n: &serde_json::Number) {
    if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{n}");
    }
}

/// Where the first `{$` of `s` starts. A search for the byte `{` (memchr) and a look at the
/// next: `str::find("{$")` builds a two-way searcher on each call, which cost more than the
/// search itself on a template's short text (bench/instructions.sh).
fn placeholder(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find('{') {
        let at = from + i;
        if s.as_bytes().get(at + 1) == Some(&b'$') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Renders one string: every `{$name}` is replaced by `variables[name]`.
pub fn render_str(s: &str, vars: &Variables) -> Result<String, RenderError> {
    let mut out = String::with_capacity(s.len());
    render_into(&mut out, s, vars, String::push_str)?;
    Ok(out)
}

/// A string leaf's text and placeholders, in order.
enum Segment<'a> {
    /// Text as it is (between placeholders; or, from a `{$` without its closing brace, all
    /// the rest).
    Text(&'a str),
    /// The name inside a `{$name}`.
    Var(&'a str),
}

/// The segments of `s`: what a render writes for it, read once here for both the one-off
/// render ([`render_into`]) and a template's plan ([`JsonPlan::of`]).
fn segments(s: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = s;
    let mut next_var = None;
    std::iter::from_fn(move || {
        if let Some(name) = next_var.take() {
            return Some(Segment::Var(name));
        }
        if rest.is_empty() {
            return None;
        }
        let text = match placeholder(rest) {
            Some(start) => {
                let after = &rest[start + 2..];
                match after.find('}') {
                    Some(end) => {
                        next_var = Some(&after[..end]);
                        let text = &rest[..start];
                        rest = &after[end + 1..];
                        text
                    }
                    // No closing brace: the rest is text.
                    None => std::mem::take(&mut rest),
                }
            }
            None => std::mem::take(&mut rest),
        };
        Some(Segment::Text(text))
    })
}

/// Renders `s` at the end of `out`, the text between placeholders and a string variable's
/// value written by `text` (as it is, or escaped for JSON).
fn render_into(
    out: &mut String,
    s: &str,
    vars: &Variables,
    text: impl Fn(&mut String, &str),
) -> Result<(), RenderError> {
    for segment in segments(s) {
        match segment {
            Segment::Text(t) => text(out, t),
            Segment::Var(name) => push_var(out, name, vars, &text)?,
        }
    }
    Ok(())
}

/// The value of variable `name` at the end of `out` (a string's by `text`), or why it has none.
fn push_var(
    out: &mut String,
    name: &str,
    vars: &Variables,
    text: impl Fn(&mut String, &str),
) -> Result<(), RenderError> {
    match vars.get(name) {
        Some(v) => push_value(out, name, v, text),
        None => Err(RenderError::MissingVariable(name.to_string())),
    }
}

/// Renders every string leaf of a content model; returns the rendered model.
pub fn render(
    content: &Map<String, Value>,
    vars: &Variables,
) -> Result<Map<String, Value>, RenderError> {
    let mut out = Map::new();
    for (k, v) in content {
        out.insert(k.clone(), render_value(v, vars)?);
    }
    Ok(out)
}

fn render_value(v: &Value, vars: &Variables) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) => Value::String(render_str(s, vars)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(render(map, vars)?),
        other => other.clone(),
    })
}

/// One top-level field of a content model rendered with `vars` (`None`: the model has no such
/// field).
pub fn render_field(
    content: &Map<String, Value>,
    name: &str,
    vars: &Variables,
) -> Result<Option<Value>, RenderError> {
    content.get(name).map(|v| render_value(v, vars)).transpose()
}

/// A content model rendered with `vars`, as compact JSON: the same text as
/// `serde_json::to_string(&render(content, vars)?)`, with the same first error, written
/// straight into the text (no rendered model is built: its keys, strings and nodes were ~5
/// allocations per request; serde's way cost ~1,500 instructions a request,
/// bench/instructions.sh). Laid out first ([`JsonPlan`]); a template keeps its plan
/// (`Template::render`), so a message only fills it in.
pub fn render_json(content: &Map<String, Value>, vars: &Variables) -> Result<String, RenderError> {
    JsonPlan::of(content).render(vars)
}

/// A content model laid out once for [`render_json`]'s text: its JSON cut at its
/// placeholders, the text between them already escaped. [`JsonPlan::render`] writes the same
/// text with the same first error as `render_json`, without walking the model, looking for
/// placeholders or escaping its own text again for every message (~1,000 instructions a request
/// for a one-line SMS model, bench/MEASURED.md "Content rendered from a plan").
#[derive(Debug, Clone, Default)]
pub struct JsonPlan {
    pieces: Vec<Piece>,
    /// The bytes of the text pieces (what a render needs at least).
    text_len: usize,
}

#[derive(Debug, Clone)]
enum Piece {
    /// JSON text as it is written.
    Text(String),
    /// The value of this variable, inside a JSON string.
    Var(String),
}

impl JsonPlan {
    /// The plan of `content`.
    pub fn of(content: &Map<String, Value>) -> JsonPlan {
        let mut plan = Planner::default();
        plan.map(content);
        plan.flush();
        plan.done
    }

    /// The content rendered with `vars`: [`render_json`]'s text, or its first error.
    pub fn render(&self, vars: &Variables) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.text_len + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => push_var(&mut out, name, vars, push_escaped)?,
            }
        }
        Ok(out)
    }
}

/// Lays out a [`JsonPlan`]: a content model's JSON text, cut at its placeholders.
#[derive(Default)]
struct Planner {
    done: JsonPlan,
    /// The text since the last placeholder.
    text: String,
}

impl Planner {
    fn flush(&mut self) {
        if !self.text.is_empty() {
            self.done.text_len += self.text.len();
            self.done
                .pieces
                .push(Piece::Text(std::mem::take(&mut self.text)));
        }
    }

    fn map(&mut self, map: &Map<String, Value>) {
        self.text.push('{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            self.text.push('"');
            push_escaped(&mut self.text, k);
            self.text.push_str("\":");
            self.value(v);
        }
        self.text.push('}');
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                self.text.push('"');
                for segment in segments(s) {
                    match segment {
                        Segment::Text(t) => push_escaped(&mut self.text, t),
                        Segment::Var(name) => {
                            self.flush();
                            self.done.pieces.push(Piece::Var(name.to_string()));
                        }
                    }
                }
                self.text.push('"');
            }
            Value::Array(items) => {
                self.text.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    self.value(item);
                }
                self.text.push(']');
            }
            Value::Object(map) => self.map(map),
            Value::Number(n) => push_number(&mut self.text, n),
            Value::Bool(b) => self.text.push_str(if *b { "true" } else { "false" }),
            Value::Null => self.text.push_str("null"),
        }
    }
}

/// What JSON writes for byte `b` inside a string, as serde_json writes it: 0 for the byte
/// itself; `u` for `\u00XX` (lower-case hex); else the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `s` escaped as a JSON string's inside, at the end of `out`: its runs that need no escape
/// copied whole.
fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        // Every escaped byte is ASCII, so `from..i` lies on character boundaries.
        out.push_str(&s[from..i]);
        out.push('\\');
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push(e as char);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Variables {
        v.as_object().unwrap().clone().into()
    }

    #[test]
    fn table() {
        let cases: &[(&str, Value, Result<&str, &str>)] = &[
            (
                "Your code is {$code}.",
                json!({"code": "4711"}),
                Ok("Your code is 4711."),
            ),
            ("{$a}{$b}", json!({"a": 1, "b": true}), Ok("1true")),
            ("no placeholders", json!({}), Ok("no placeholders")),
            ("dangling {$x", json!({}), Ok("dangling {$x")),
            ("{$missing}", json!({}), Err("missing")),
            ("price {$p}", json!({"p": 9.5}), Ok("price 9.5")),
            ("{$n}", json!({"n": -12}), Ok("-12")),
            ("{$b}", json!({"b": false}), Ok("false")),
        ];
        for (tpl, v, want) in cases {
            let got = render_str(tpl, &vars(v.clone()));
            match want {
                Ok(s) => assert_eq!(got.as_deref(), Ok(*s), "{tpl}"),
                Err(name) => assert_eq!(got, Err(RenderError::MissingVariable(name.to_string()))),
            }
        }
    }

    /// `null`, `""` and blank are no value (like a missing variable); objects and arrays have
    /// no one text.
    #[test]
    fn null_and_structured_values_are_refused() {
        let cases: &[(Value, &str)] = &[
            (
                json!({"code": null}),
                "missing variable `code`: its value is null",
            ),
            (json!({"code": {"a": 1}}), "variable `code` is an object"),
            (json!({"code": [1, 2]}), "variable `code` is an array"),
            // Empty and blank, as austin refuses them ("Your code is ." is never meant).
            (
                json!({"code": ""}),
                "missing variable `code`: its value is empty or blank",
            ),
            (
                json!({"code": " \t"}),
                "missing variable `code`: its value is empty or blank",
            ),
        ];
        for (v, want) in cases {
            let err = render_str("Your code is {$code}.", &vars(v.clone())).unwrap_err();
            assert!(err.to_string().contains(want), "{v}: {err}");
        }
        // A null that no placeholder uses is harmless.
        assert_eq!(
            render_str("hi", &vars(json!({"unused": null}))).as_deref(),
            Ok("hi")
        );
    }

    /// A number variable is written as serde_json writes it, whole or not, in text and in a
    /// content model's JSON.
    #[test]
    fn numbers_as_serde_json_writes_them() {
        for n in [
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(123456789.125),
        ] {
            let want = serde_json::to_string(&n).unwrap();
            let v = vars(json!({ "n": n }));
            assert_eq!(render_str("{$n}", &v).unwrap(), want);
            let model = json!({"a": "{$n}", "b": n});
            let got = render_json(model.as_object().unwrap(), &v).unwrap();
            assert_eq!(got, format!("{{\"a\":\"{want}\",\"b\":{want}}}"));
        }
    }

    #[test]
    fn nested_models() {
        let content = json!({"title": "Hi {$n}", "data": {"first": {"value": "{$n}"}}, "n": 3});
        let out = render(content.as_object().unwrap(), &vars(json!({"n": "Ann"}))).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"title": "Hi Ann", "data": {"first": {"value": "Ann"}}, "n": 3})
        );
    }

    /// A JSON value of a content model or of variables: nested objects and arrays of
    /// strings with and without placeholders (some of them escaped or non-ASCII), numbers,
    /// booleans and nulls.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-c{}$\"\\\\\n\t\r\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f} é码]{0,12}"
                .prop_map(Value::String),
            "(x|\\{\\$[a-c]\\}|\\{\\$|\"|码){0,5}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\"]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    use proptest::prelude::*;

    proptest! {
        /// The JSON written from the model's plan (`render_json`, and a plan made first) is the
        /// rendered model's JSON, and fails with the same error.
        #[test]
        fn render_json_is_the_rendered_models_json(
            content in prop::collection::btree_map("[a-d]{1,3}", any_value(), 0..5),
            vars in prop::collection::btree_map("[a-c]", any_value(), 0..4),
        ) {
            let content: Map<String, Value> = content.into_iter().collect();
            let vars: Variables = vars.into_iter().collect();
            let want = render(&content, &vars).map(|m| serde_json::to_string(&m).unwrap());
            prop_assert_eq!(&render_json(&content, &vars), &want);
            // And from the model's plan.
            prop_assert_eq!(JsonPlan::of(&content).render(&vars), want);
        }

        /// The placeholder search finds what `str::find("{$")` finds, in any text.
        #[test]
        fn placeholder_is_the_first_open_brace_dollar(s in "[{$}a\u{e9}\u{4e2d}]{0,12}") {
            prop_assert_eq!(placeholder(&s), s.find("{$"));
        }
    }

    #[test]
    fn render_json_examples() {
        let content =
            json!({"title": "Hi {$n}", "data": {"v": ["{$n}", 1, null, "a\"b"]}, "k": "{$k}"});
        let content = content.as_object().unwrap();
        assert_eq!(
            render_json(content, &vars(json!({"n": "Ann \"A\"", "k": 2.5}))).unwrap(),
            r#"{"data":{"v":["Ann \"A\"",1,null,"a\"b"]},"k":"2.5","title":"Hi Ann \"A\""}"#
        );
        assert_eq!(
            render_json(content, &vars(json!({"n": "x"}))),
            Err(RenderError::MissingVariable("k".into()))
        );
    }
}
