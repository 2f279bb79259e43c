//! Rendering `{$name}` placeholders in a template's content model.

use serde_json::{Map, Value};

/// Errors rendering content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A placeholder has no value in the message's `variables`.
    #[error("missing variable `{0}`")]
    MissingVariable(String),
}

/// The variables of one message, as strings (numbers and booleans are written as JSON writes
/// them; nested values as compact JSON).
pub type Variables = Map<String, Value>;

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Renders one string: every `{$name}` is replaced by `variables[name]`.
pub fn render_str(s: &str, vars: &Variables) -> Result<String, RenderError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{$") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.get(name) {
                    Some(v) => out.push_str(&value_text(v)),
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
        ];
        for (tpl, v, want) in cases {
            let got = render_str(tpl, &vars(v.clone()));
            match want {
                Ok(s) => assert_eq!(got.as_deref(), Ok(*s), "{tpl}"),
                Err(name) => assert_eq!(got, Err(RenderError::MissingVariable(name.to_string()))),
            }
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
}
