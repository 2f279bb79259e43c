//! A request's common shapes read by hand: the hot path of [`super::decode_request`] (read
//! straight into the request) and of [`super::parse`].
//!
//! It reads the objects producers write: `code`, `messageTemplateId`, `messageParam` or
//! `messageParamList` and `recallMessageIds`, each at most once; a `MessageParam`'s `bizId`,
//! `receiver`, `variables` and `extra`, each at most once; variables of strings, whole numbers,
//! `true`, `false` and `null`. Anything else (another field, a field given twice, a variable
//! given twice, a fraction, a nested value among the variables, a field name with an escape) it
//! leaves to serde (`None`), which reads it as before, with its own words for what is wrong.
//! What it reads, it reads as serde would: `str_and_bytes_read_alike` holds the two to each other, and
//! `common_requests_are_read_by_hand` checks that the common shapes do not fall back.
//!
//! A string without escapes is taken from the text in one piece (its end found eight bytes at a
//! time, as serde finds it too: `code` borrowed, the rest copied); what is saved is serde's
//! machinery around each value (its visitors, a scratch buffer, a copy per field).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{IdValue, Line, MessageParam, Object, Request};
use crate::json::Cursor;
use crate::variables::Variables;

/// `text` as serde reads it into a [`Line`], or `None` where serde must read it.
pub(super) fn read(text: &str) -> Option<Line<'_>> {
    read_with(text, |code, template_id, param, list, recall| Line {
        code,
        message_template_id: template_id,
        message_param: param.map(Object),
        message_param_list: list,
        recall_message_ids: recall,
        ts: None,
        payload: None,
    })
}

/// `text` read into a [`Request`] as [`read`] and then [`super::request_from`] would, or
/// `None` where serde must read it: the fields go from the reader's locals into the request,
/// not through a `Line` returned and moved (a `memcpy` call of ~250 bytes each time).
pub(super) fn request(text: &str) -> Option<Result<Request, String>> {
    read_with(text, super::request_of)
}

/// The top-level fields, each at most once, given to `make`.
#[inline(always)]
fn read_with<'a, T>(
    text: &'a str,
    make: impl FnOnce(
        Option<Cow<'a, str>>,
        Option<IdValue>,
        Option<MessageParam>,
        Option<Vec<Object<MessageParam>>>,
        Option<Vec<String>>,
    ) -> T,
) -> Option<T> {
    let mut r = Reader {
        text,
        c: Cursor::new(text.as_bytes(), 0),
    };
    let (mut code, mut template_id, mut param, mut list, mut recall) =
        (None, None, None, None, None);
    r.c.ws();
    r.fields(FIELDS, |r, key| {
        match key {
            b"code" => code = r.or_null(Reader::cow)?,
            b"messageTemplateId" => template_id = r.or_null(Reader::template_id)?,
            b"messageParam" => param = r.or_null(Reader::param)?,
            b"messageParamList" => list = r.or_null(|r| r.array(|r| r.param().map(Object)))?,
            b"recallMessageIds" => recall = r.or_null(|r| r.array(Reader::string))?,
            // Not among `FIELDS`: `fields` has left it to serde already.
            _ => return None,
        }
        Some(())
    })?;
    r.c.ws();
    r.c.at_end()
        .then(|| make(code, template_id, param, list, recall))
}

/// A request's fields read by hand.
const FIELDS: &[&[u8]] = &[
    b"code",
    b"messageTemplateId",
    b"messageParam",
    b"messageParamList",
    b"recallMessageIds",
];

/// A MessageParam's fields.
const PARAM_FIELDS: &[&[u8]] = &[b"bizId", b"receiver", b"variables", b"extra"];

struct Reader<'a> {
    /// The text, checked as UTF-8: a plain string's span is read from it.
    text: &'a str,
    c: Cursor<'a>,
}

impl<'a> Reader<'a> {
    /// A sequence between `open` and `close`, its items separated by commas, each read by
    /// `item` (an object's members, an array's values).
    #[inline]
    fn seq(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.c.eat(open)?;
        self.c.ws();
        if self.c.eat(close).is_some() {
            return Some(());
        }
        loop {
            self.c.ws();
            item(self)?;
            self.c.ws();
            match self.c.byte()? {
                b',' => continue,
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// The `:` after a member's name.
    #[inline]
    fn colon(&mut self) -> Option<()> {
        self.c.ws();
        self.c.eat(b':')?;
        self.c.ws();
        Some(())
    }

    /// An object of the fields `names`, each at most once (serde refuses a field given twice),
    /// each given to `member` (which reads its value). Another field, or a name with an escape
    /// (`plain` refuses it; serde would unescape it), is left to serde.
    #[inline]
    fn fields(
        &mut self,
        names: &[&[u8]],
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        let mut seen = 0u32;
        self.seq(b'{', b'}', |r| {
            let (a, b) = r.c.plain()?;
            let key = r.text.as_bytes().get(a..b)?;
            r.colon()?;
            let bit = 1 << names.iter().position(|&n| n == key)?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            member(r, key)
        })
    }

    /// An array, each item read by `item`.
    #[inline]
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        self.seq(b'[', b']', |r| {
            items.push(item(r)?);
            Some(())
        })?;
        Some(items)
    }

    /// An `Option`: `null` is `None` (as serde reads it), else `value`.
    fn or_null<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.c.word(b"null") {
            return Some(None);
        }
        value(self).map(Some)
    }

    /// A string: borrowed from the text when it has no escape.
    fn cow(&mut self) -> Option<Cow<'a, str>> {
        match self.c.plain() {
            Some((a, b)) => self.text.get(a..b).map(Cow::Borrowed),
            None => self.c.string().map(Cow::Owned),
        }
    }

    fn string(&mut self) -> Option<String> {
        self.cow().map(Cow::into_owned)
    }

    /// A string, shared: copied from the text once when it has no escape.
    fn shared(&mut self) -> Option<crate::Receiver> {
        self.cow().map(|s| crate::Receiver::from(&*s))
    }

    /// A template id: a whole number that fits in an `i64`, or a string (read by the
    /// request's own rule afterwards).
    fn template_id(&mut self) -> Option<IdValue> {
        if self.c.at(b"\"") {
            return self.string().map(IdValue::Text);
        }
        self.c.integer()?.as_i64().map(IdValue::Int)
    }

    /// A `MessageParam`.
    fn param(&mut self) -> Option<MessageParam> {
        let mut p = MessageParam {
            biz_id: None,
            receiver: None,
            variables: None,
            extra: None,
        };
        self.fields(PARAM_FIELDS, |r, key| {
            match key {
                b"bizId" => p.biz_id = r.or_null(Reader::string)?,
                b"receiver" => p.receiver = r.or_null(Reader::shared)?,
                b"variables" => p.variables = r.or_null(Reader::variables)?,
                b"extra" => p.extra = r.or_null(|r| r.map().map(Box::new))?,
                _ => return None,
            }
            Some(())
        })?;
        Some(p)
    }

    /// Variables of strings, whole numbers, `true`, `false` and `null`, each name given once.
    fn variables(&mut self) -> Option<Variables> {
        let mut vars = Variables::new();
        self.seq(b'{', b'}', |r| {
            let name = r.cow()?;
            r.colon()?;
            let value = r.scalar()?;
            // Twice: serde keeps the last; left to it.
            vars.insert(&name, value).is_none().then_some(())
        })?;
        Some(vars)
    }

    /// A map of strings, whole numbers, `true`, `false` and `null`, its keys given once each.
    fn map(&mut self) -> Option<Map<String, Value>> {
        let mut map = Map::new();
        self.seq(b'{', b'}', |r| {
            let key = r.string()?;
            r.colon()?;
            let value = r.scalar()?;
            // Twice: serde keeps the last; left to it.
            map.insert(key, value).is_none().then_some(())
        })?;
        Some(map)
    }

    /// A string, a whole number (as serde reads it into a `Number`), `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<Value> {
        Some(match self.c.peek()? {
            b'"' => Value::String(self.string()?),
            b'-' | b'0'..=b'9' => Value::Number(self.c.integer()?),
            _ if self.c.word(b"true") => Value::Bool(true),
            _ if self.c.word(b"false") => Value::Bool(false),
            _ if self.c.word(b"null") => Value::Null,
            _ => return None,
        })
    }
}
