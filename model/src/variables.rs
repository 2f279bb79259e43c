//! [`Variables`]: the values a message's placeholders are filled with.

use serde::de::Error as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::text::Text;

/// A variable's name: short names (`code`, `name`, `amount`…) inline.
type Name = Text<14>;

/// The variables of one message (`messageParam.variables`): each name once, a name given
/// twice keeping its last value, as serde's map reads it.
///
/// How a value fills a placeholder: a string as it is; a number as written (`4711`, `9.90`);
/// a boolean as JSON writes it (`true`); `null` is no value, like a missing variable (dead letter); an object
/// or array has no one text and is a dead letter too.
///
/// A request names a few: up to [`Variables::FEW`] are held in a list in the order given and
/// found by a scan, one in place and short names inline (a tree's node, a `String` per name and
/// the tree's walk cost ~450 instructions a request: bench/MEASURED.md); more go to a map, so
/// that a request of thousands is not scanned for each.
#[derive(Debug, Clone)]
pub enum Variables {
    /// At most [`Variables::FEW`], in the order given.
    Few(SmallVec<[(Name, Value); 1]>),
    /// More.
    Many(Map<String, Value>),
}

impl Default for Variables {
    fn default() -> Self {
        Variables::Few(SmallVec::new())
    }
}

impl Variables {
    /// The most variables held in a list.
    pub const FEW: usize = 16;

    /// No variables.
    pub fn new() -> Variables {
        Variables::default()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Variables::Few(list) => list
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v),
            Variables::Many(map) => map.get(name),
        }
    }

    /// Sets `name` to `value`; the value it had, if it had one.
    pub fn insert(&mut self, name: &str, value: Value) -> Option<Value> {
        match self {
            Variables::Few(list) => {
                if let Some((_, v)) = list.iter_mut().find(|(n, _)| n.as_str() == name) {
                    return Some(std::mem::replace(v, value));
                }
                if list.len() < Self::FEW {
                    list.push((Name::from(name), value));
                    return None;
                }
                let mut map: Map<String, Value> = list
                    .drain(..)
                    .map(|(n, v)| (n.as_str().to_string(), v))
                    .collect();
                map.insert(name.to_string(), value);
                *self = Variables::Many(map);
                None
            }
            Variables::Many(map) => map.insert(name.to_string(), value),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Variables::Few(list) => list.len(),
            Variables::Many(map) => map.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each name and value (in the order given while few, by name when many).
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Value)> + '_> {
        match self {
            Variables::Few(list) => Box::new(list.iter().map(|(n, v)| (n.as_str(), v))),
            Variables::Many(map) => Box::new(map.iter().map(|(n, v)| (n.as_str(), v))),
        }
    }
}

/// The same names with the same values, in whatever order or form they are held.
impl PartialEq for Variables {
    fn eq(&self, other: &Variables) -> bool {
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Variables {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Variables {
        let mut vars = Variables::new();
        for (name, value) in iter {
            vars.insert(name.as_ref(), value);
        }
        vars
    }
}

impl From<Map<String, Value>> for Variables {
    fn from(map: Map<String, Value>) -> Variables {
        if map.len() > Self::FEW {
            Variables::Many(map)
        } else {
            map.into_iter().collect()
        }
    }
}

/// A variable's value from its JSON text: a number that is not a whole number serde holds
/// exactly (`9.90`, `1e3`, `-0`, digits beyond 64 bits) keeps the text as written, as austin
/// fills its `Map<String, String>` (Jackson takes a number's text as it is): read as a float it
/// would fill `{$price}` with `9.9`, and an order number of 25 digits with `1.2345…e24`.
fn value_of(raw: &str) -> serde_json::Result<Value> {
    if let Some(b'-' | b'0'..=b'9') = raw.as_bytes().first() {
        // Beyond a float's range (`1e400`) serde refuses it as a number: its text is kept too
        // (the raw value already checked its syntax).
        return Ok(match serde_json::from_str::<serde_json::Number>(raw) {
            Ok(n) if n.is_u64() || n.is_i64() => Value::Number(n),
            _ => Value::String(raw.to_string()),
        });
    }
    serde_json::from_str(raw)
}

impl<'de> serde::Deserialize<'de> for Variables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Variables, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Variables;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of variables")
            }
            // In the order given, as the hand reader keeps them; a name given twice keeps its
            // last value, as serde's map does.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Variables, A::Error> {
                let mut vars = Variables::new();
                while let Some(name) = m.next_key::<String>()? {
                    let raw = m.next_value::<Box<RawValue>>()?;
                    vars.insert(&name, value_of(raw.get()).map_err(A::Error::custom)?);
                }
                Ok(vars)
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Looked up, replaced and counted as a map of the same entries, few or many, short names
    /// or long.
    #[test]
    fn variables_read_as_a_map_reads_them() {
        for n in [
            0,
            1,
            2,
            Variables::FEW - 1,
            Variables::FEW,
            Variables::FEW + 1,
            40,
        ] {
            let names: Vec<String> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        format!("a-rather-long-variable-name-{i}")
                    } else {
                        format!("v{i}")
                    }
                })
                .collect();
            let mut vars = Variables::new();
            let mut map = Map::new();
            for (i, name) in names.iter().enumerate() {
                assert_eq!(
                    vars.insert(name, json!(i)),
                    map.insert(name.clone(), json!(i))
                );
            }
            // Given again: the last value kept.
            for name in names.iter().step_by(2) {
                assert_eq!(
                    vars.insert(name, json!("again")),
                    map.insert(name.clone(), json!("again"))
                );
            }
            assert_eq!(vars.len(), map.len(), "{n}");
            for name in &names {
                assert_eq!(vars.get(name), map.get(name), "{name}");
            }
            assert_eq!(vars.get("missing"), None);
            assert_eq!(vars, Variables::from(map.clone()));
            let mut listed: Vec<(&str, &Value)> = vars.iter().collect();
            listed.sort_by_key(|(n, _)| *n);
            assert_eq!(
                listed,
                map.iter().map(|(n, v)| (n.as_str(), v)).collect::<Vec<_>>()
            );
            let read: Variables = serde_json::from_value(Value::Object(map)).unwrap();
            assert_eq!(read, vars);
        }
        assert_ne!(
            Variables::from_iter([("a", json!(1))]),
            Variables::from_iter([("a", json!(2))])
        );
        // Read by serde in the order given, a name given twice keeping its last value.
        let read: Variables = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        let listed: Vec<(&str, &Value)> = read.iter().collect();
        assert_eq!(listed, [("b", &json!(3)), ("a", &json!(2))]);
    }

    /// A number fills its placeholder as the producer wrote it (austin keeps a number's text):
    /// a price's trailing zero, an exponent, digits beyond 64 bits; a whole number of 64 bits
    /// stays a number, as the hand reader holds it.
    #[test]
    fn a_number_fills_its_placeholder_as_written() {
        let text = r#"{"price":9.90,"e":1E3,"z":-0,"order":123456789012345678901234,"huge":1e400,
            "n":-7,"u":18446744073709551615,"s":"9.90","t":true,"o":{"a":[1.50]}}"#;
        let vars: Variables = serde_json::from_str(text).unwrap();
        let rendered = crate::render::render_str(
            "{$price} {$e} {$z} {$order} {$huge} {$n} {$u} {$s} {$t}",
            &vars,
        )
        .unwrap();
        assert_eq!(
            rendered,
            "9.90 1E3 -0 123456789012345678901234 1e400 -7 18446744073709551615 9.90 true"
        );
        assert_eq!(vars.get("n"), Some(&json!(-7)));
        assert_eq!(vars.get("u"), Some(&json!(u64::MAX)));
        assert_eq!(vars.get("o"), Some(&json!({"a": [1.5]})));
        // Read from bytes, and from a value already parsed (a float's text is gone by then).
        let from_bytes: Variables = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(from_bytes, vars);
        let from_value: Variables = serde_json::from_value(json!({"p": 9.5, "n": 7})).unwrap();
        assert_eq!(from_value.get("n"), Some(&json!(7)));
        assert_eq!(from_value.get("p"), Some(&json!("9.5")));
        // Bad JSON inside is serde's error, as before.
        assert!(serde_json::from_str::<Variables>(r#"{"a":01}"#).is_err());
    }
}
