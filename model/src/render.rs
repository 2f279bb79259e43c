//! Rendering `{$name}` placeholders in a template's content model.

use std::cell::Cell;

use serde::ser::{Error as _, Serialize, Serializer};
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
    /// A placeholder's value is an object or an array: there is no one text for it.
    #[error(
        "variable `{0}` is {1}: a placeholder takes a string, number or boolean, not an object or array"
    )]
    NotText(String, &'static str),
}

/// The variables of one message.
///
/// How a value fills a placeholder: a string as it is; a number or boolean as JSON writes it
/// (`4711`, `9.5`, `true`); `null` is no value, like a missing variable (dead letter); an object
/// or array has no one text and is a dead letter too.
pub type Variables = Map<String, Value>;

/// Writes the text of variable `name` (`v`) at the end of `out`: a number straight into it, not
/// through a `String` of its own (an allocation and a copy per number, ~100 instructions).
fn push_value(out: &mut String, name: &str, v: &Value) -> Result<(), RenderError> {
    use std::fmt::Write;
    match v {
        Value::String(s) => out.push_str(s),
        // Writing into a `String` cannot fail.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => return Err(RenderError::NullVariable(name.to_string())),
        Value::Array(_) => return Err(RenderError::NotText(name.to_string(), "an array")),
        Value::Object(_) => return Err(RenderError::NotText(name.to_string(), "an object")),
    }
    Ok(())
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
    let mut rest = s;
    while let Some(start) = placeholder(rest) {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.get(name) {
                    Some(v) => push_value(&mut out, name, v)?,
                    None => return Err(RenderError::MissingVariable(name.to_string())),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
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
/// `serde_json::to_string(&render(content, vars)?)`, with the same first error, written in one
/// pass (no rendered model is built: its keys, strings and nodes were ~5 allocations per
/// request).
pub fn render_json(content: &Map<String, Value>, vars: &Variables) -> Result<String, RenderError> {
    let failed = Cell::new(None);
    let text = serde_json::to_string(&Rendered {
        node: content,
        vars,
        failed: &failed,
    });
    match (text, failed.take()) {
        (_, Some(e)) => Err(e),
        (Ok(text), None) => Ok(text),
        // String keys and our own values: the only error is a render error, kept above.
        (Err(e), None) => unreachable!("a content model always serialises: {e}"),
    }
}

/// A node of a content model (a map or a value) serialised with each string leaf rendered as
/// it goes; the first render error is kept in `failed` and stops the serialiser.
struct Rendered<'a, T> {
    node: &'a T,
    vars: &'a Variables,
    failed: &'a Cell<Option<RenderError>>,
}

impl<'a, T> Rendered<'a, T> {
    /// The same renderer over another node.
    fn of<U>(&self, node: &'a U) -> Rendered<'a, U> {
        Rendered {
            node,
            vars: self.vars,
            failed: self.failed,
        }
    }
}

impl Serialize for Rendered<'_, Map<String, Value>> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.node.iter().map(|(k, v)| (k, self.of(v))))
    }
}

impl Serialize for Rendered<'_, Value> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.node {
            // No placeholder: the text as it is, not copied.
            Value::String(text) if placeholder(text).is_none() => s.serialize_str(text),
            Value::String(text) => match render_str(text, self.vars) {
                Ok(r) => s.serialize_str(&r),
                Err(e) => {
                    self.failed.set(Some(e));
                    Err(S::Error::custom("render error"))
                }
            },
            Value::Array(items) => s.collect_seq(items.iter().map(|v| self.of(v))),
            Value::Object(map) => self.of(map).serialize(s),
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Variables {
        v.as_object().unwrap().clone()
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

    /// `null` is no value (like a missing variable); objects and arrays have no one text.
    #[test]
    fn null_and_structured_values_are_refused() {
        let cases: &[(Value, &str)] = &[
            (
                json!({"code": null}),
                "missing variable `code`: its value is null",
            ),
            (json!({"code": {"a": 1}}), "variable `code` is an object"),
            (json!({"code": [1, 2]}), "variable `code` is an array"),
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
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-c{}$\"\\\\\n é码]{0,12}".prop_map(Value::String),
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
        /// The one-pass JSON is the rendered model's JSON, and fails with the same error.
        #[test]
        fn render_json_is_the_rendered_models_json(
            content in prop::collection::btree_map("[a-d]{1,3}", any_value(), 0..5),
            vars in prop::collection::btree_map("[a-c]", any_value(), 0..4),
        ) {
            let content: Map<String, Value> = content.into_iter().collect();
            let vars: Variables = vars.into_iter().collect();
            let want = render(&content, &vars).map(|m| serde_json::to_string(&m).unwrap());
            prop_assert_eq!(render_json(&content, &vars), want);
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
