//! A kcat `-J` envelope read by hand: the file source's hot path for [`super::read_line`].
//!
//! It reads the shapes kcat and our own tools write (a flat object of strings, integers,
//! `null`, `true` and `false`, a `ts` that is a whole number, a string `payload`) in one pass,
//! and unescapes the payload into one buffer (`tidings_model::json::Cursor::string`). Anything else, or anything it is not sure
//! of, it leaves to serde (`None`), so a line it reads gets exactly what serde would give it:
//! `read_line`'s property test holds the two to each other over arbitrary lines.

use tidings_model::json::Cursor;

/// What a line is, when the scanner can tell.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// Not an envelope (no payload, or a request's own fields): the line goes on whole.
    Bare,
    /// An envelope: its `ts` (`None`: absent or `null`) and its payload, unescaped.
    Envelope { ts: Option<i64>, payload: Vec<u8> },
}

/// Reads `bytes` as serde would read `{ts, payload, code, messageTemplateId}` from it, or `None`
/// where it would have to guess.
pub(super) fn scan(bytes: &[u8]) -> Option<Scan> {
    let mut c = Cursor::new(bytes, 0);
    c.ws();
    c.eat(b'{')?;
    c.ws();
    let mut ts: Option<Option<i64>> = None;
    let mut payload: Option<Vec<u8>> = None;
    if c.eat(b'}').is_none() {
        loop {
            c.ws();
            let key = c.key()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            match key {
                b"ts" if ts.is_none() => ts = Some(c.i64_or_null()?),
                b"payload" if payload.is_none() => payload = Some(c.string()?.into_bytes()),
                // Twice: serde refuses the line ("duplicate field", before reading the value),
                // and so does its second probe: bare.
                b"ts" | b"payload" => return Some(Scan::Bare),
                // A request's own field (serde reads `null` as no field: left to it), at the top
                // level of what has parsed so far: whatever follows, serde makes the line bare
                // (it either parses and is not an envelope, or fails both probes).
                b"code" | b"messageTemplateId" if !c.at(b"null") => {
                    return Some(Scan::Bare);
                }
                b"code" | b"messageTemplateId" => return None,
                _ => c.skip()?,
            }
            c.ws();
            match c.byte()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    if !c.at_end() {
        return None;
    }
    Some(match payload {
        Some(payload) => Scan::Envelope {
            ts: ts.flatten(),
            payload,
        },
        None => Scan::Bare,
    })
}
