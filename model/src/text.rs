//! [`Text`]: a short string kept inline, a longer one shared. A message's id
//! ([`crate::ids::MessageId`]) is read wherever its deliveries are grouped and each of its
//! tracking rows is written; kept inline in the message's facts, it is no allocation per
//! message and no pointer to another cache line. (Receivers as `Text<22>` were measured too and
//! not kept: bench/MEASURED.md.)

use std::sync::Arc;

use arrayvec::ArrayString;

/// Text of up to `N` bytes kept inline, longer text behind an [`Arc`] (cloned by a count).
/// Compares, orders, hashes, prints and encodes (serde: a string) exactly as the `str` it
/// holds.
#[derive(Clone)]
pub struct Text<const N: usize>(Repr<N>);

/// Text of up to `N` bytes is always inline and longer text never: equal texts have equal
/// representations. Inline text is an `ArrayString`, which is read as a `str` without checking
/// its UTF-8 again: with the bytes kept by hand, `str::from_utf8` on every read of a message's
/// id cost ~470 instructions a request net (bench/MEASURED.md "A request's JSON read as a str").
#[derive(Clone)]
enum Repr<const N: usize> {
    Inline(ArrayString<N>),
    Shared(Arc<str>),
}

impl<const N: usize> Text<N> {
    /// The longest text kept inline (`N`).
    pub const INLINE: usize = N;

    /// `bytes`, all ASCII, as text filling the inline room (moved in whole, a fixed-size
    /// copy, not a copy of a length known only at run time).
    pub(crate) fn ascii(bytes: [u8; N]) -> Text<N> {
        match ArrayString::from_byte_string(&bytes) {
            Ok(inline) => Text(Repr::Inline(inline)),
            Err(_) => Text::from(""),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl<const N: usize> From<&str> for Text<N> {
    fn from(s: &str) -> Text<N> {
        match ArrayString::from(s) {
            Ok(inline) => Text(Repr::Inline(inline)),
            Err(_) => Text(Repr::Shared(s.into())),
        }
    }
}

impl<const N: usize> From<String> for Text<N> {
    fn from(s: String) -> Text<N> {
        if s.len() <= Self::INLINE {
            Text::from(s.as_str())
        } else {
            Text(Repr::Shared(s.into()))
        }
    }
}

impl<const N: usize> From<&String> for Text<N> {
    fn from(s: &String) -> Text<N> {
        Text::from(s.as_str())
    }
}

impl<const N: usize> From<Arc<str>> for Text<N> {
    fn from(s: Arc<str>) -> Text<N> {
        if s.len() <= Self::INLINE {
            Text::from(&*s)
        } else {
            Text(Repr::Shared(s))
        }
    }
}

impl<const N: usize> std::ops::Deref for Text<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for Text<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for Text<N> {
    /// Compares representations (see [`Repr`]).
    fn eq(&self, other: &Text<N>) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline(x), Repr::Inline(y)) => x == y,
            (Repr::Shared(x), Repr::Shared(y)) => x == y,
            _ => false,
        }
    }
}

impl<const N: usize> Eq for Text<N> {}

impl<const N: usize> PartialEq<str> for Text<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for Text<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> PartialEq<String> for Text<N> {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> std::hash::Hash for Text<N> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl<const N: usize> PartialOrd for Text<N> {
    fn partial_cmp(&self, other: &Text<N>) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for Text<N> {
    fn cmp(&self, other: &Text<N>) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl<const N: usize> std::fmt::Display for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> serde::Serialize for Text<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Text<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text<N>, D::Error> {
        struct Visit<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for Visit<N> {
            type Value = Text<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<N>, E> {
                Ok(Text::from(s))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Text<N>, E> {
                Ok(Text::from(s))
            }
        }
        d.deserialize_str(Visit::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any text is kept as it is, inline or not, and compares, orders, hashes and encodes as
    /// the string it is; a clone of a long one shares it.
    #[test]
    fn text_is_the_string_it_holds() {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let long = "x".repeat(33);
        for text in [
            "",
            "m1",
            "0123456789abcdef0123456789abcdef",
            "码码",
            long.as_str(),
        ] {
            let t = Text::<32>::from(text);
            assert_eq!(t.as_str(), text);
            assert_eq!(t, Text::<32>::from(text.to_string()));
            assert_eq!(t, Text::<32>::from(Arc::<str>::from(text)));
            assert_eq!(t, text);
            assert_eq!(&*t, text);
            assert_eq!(t.to_string(), text);
            assert_eq!(format!("{t:?}"), format!("{text:?}"));
            assert_eq!(state.hash_one(&t), state.hash_one(text));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<Text<32>>(&json).unwrap(), t);
        }
        let (a, b, x) = (
            Text::<32>::from("a"),
            Text::<32>::from("b"),
            Text::<32>::from("x"),
        );
        assert_eq!(a.cmp(&b), std::cmp::Ordering::Less);
        assert_eq!(
            Text::<32>::from(long.as_str()).cmp(&x),
            std::cmp::Ordering::Greater
        );
        assert!(serde_json::from_str::<Text<32>>("7").is_err());
        let shared = Text::<22>::from(long.as_str());
        let Repr::Shared(a) = &shared.0 else {
            panic!("inline")
        };
        let Repr::Shared(b) = &shared.clone().0 else {
            panic!("inline")
        };
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(size_of::<Text<32>>(), 40);
    }
}
