//! A JSON cursor for the two hot paths that read JSON by hand: the file source's kcat envelope
//! (`tidings_operators::event_time`) and a send request's common shapes ([`crate::request`]).
//! Each reads what it is sure of and leaves the rest to serde_json, which stays the reference:
//! their property tests hold every reading to serde's.
//!
//! The cursor reads bytes: a string's text is checked as UTF-8 once it is unescaped
//! ([`Cursor::string`]), or borrowed from a `str` the caller has checked ([`Cursor::plain`]).

/// The bytes a string cannot hold as they are: the quote, the backslash and control characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A high bit set in the lowest byte of `w` that is special (as [`SPECIAL`] says), and perhaps
/// in bytes above it: a quote, a backslash or a byte below 0x20 (the "has a byte less than"
/// trick, exact for the lowest such byte). The quote and the control bytes are one test: XOR
/// with 0x02 takes the quote (0x22) to 0x20 and every byte below 0x20 to a byte still below
/// 0x20, and no other byte to 0x20 or below.
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    below(w ^ (ONES * 0x02), 0x21) | below(w ^ (ONES * u64::from(b'\\')), 1)
}

/// The character each short escape (`\n`, `\"`...) stands for, by the byte after its
/// backslash; 0 where that byte makes no short escape.
static SHORT_ESCAPES: [u8; 256] = {
    let mut t = [0; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

/// The character a short escape (`\n`, `\"`...) stands for, after its backslash.
fn short_escape(c: u8) -> Option<u8> {
    Some(SHORT_ESCAPES[usize::from(c)]).filter(|&e| e != 0)
}

/// A place in a JSON text.
pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// At byte `i` of `b`.
    pub fn new(b: &'a [u8], i: usize) -> Cursor<'a> {
        Cursor { b, i }
    }

    /// The place: how many bytes are read.
    pub fn pos(&self) -> usize {
        self.i
    }

    /// Whether every byte is read.
    pub fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    /// The next byte, not taken.
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The next byte, taken.
    pub fn byte(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// Whether the literal `word` comes next.
    pub fn at(&self, word: &[u8]) -> bool {
        self.b[self.i..].starts_with(word)
    }

    /// Takes the literal `word` if it comes next.
    pub fn word(&mut self, word: &[u8]) -> bool {
        let at = self.at(word);
        if at {
            self.i += word.len();
        }
        at
    }

    pub fn eat(&mut self, want: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&want)).then(|| self.i += 1)
    }

    /// JSON's whitespace (not every ASCII space: serde refuses a form feed).
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A key without escapes, of printable ASCII (serde would unescape one with escapes, so
    /// `"t\u0073"` would be `ts`: left to it).
    pub fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.byte()? {
                b'"' => return self.b.get(start..self.i - 1),
                b'\\' => return None,
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }

    /// `null`, or a whole number that fits in 64 bits as serde reads it (serde's `as_i64`); anything
    /// else (a fraction, an exponent, a string: refused by serde with its own words) is `None`.
    pub fn i64_or_null(&mut self) -> Option<Option<i64>> {
        if self.word(b"null") {
            return Some(None);
        }
        self.integer()?.as_i64().map(Some)
    }

    /// A whole number as serde reads it into a `Number`: 0 to 2^64-1, or -2^63 to -1. `-0`,
    /// fractions, exponents and anything larger serde reads as a float: `None`.
    pub fn integer(&mut self) -> Option<serde_json::Number> {
        let negative = self.eat(b'-').is_some();
        let magnitude = self.digits()?;
        if negative {
            (1..=i64::MAX as u64 + 1)
                .contains(&magnitude)
                .then(|| (magnitude as i64).wrapping_neg().into())
        } else {
            Some(magnitude.into())
        }
    }

    /// An integer's digits (no leading zero, as JSON says), not followed by a fraction or an
    /// exponent.
    pub fn digits(&mut self) -> Option<u64> {
        let first = self.byte()?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut n = u64::from(first - b'0');
        while let Some(&d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            if first == b'0' {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    /// A field we do not read: a string of printable ASCII with simple escapes, an integer, or
    /// a literal. Arrays, objects, fractions and `\u` escapes are left to serde.
    pub fn skip(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => {
                self.i += 1;
                loop {
                    match self.byte()? {
                        b'"' => return Some(()),
                        b'\\' => {
                            short_escape(self.byte()?)?;
                        }
                        0x20..=0x7e => {}
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                self.eat(b'-');
                self.digits().map(|_| ())
            }
            _ => [&b"null"[..], b"true", b"false"]
                .into_iter()
                .any(|w| self.word(w))
                .then_some(()),
        }
    }

    /// A string without escapes or control characters: the span of its text, inside its quotes
    /// (the closing quote found eight bytes at a time). `None`, the cursor unmoved, for anything
    /// else: [`Cursor::string`] reads a string with escapes. The span is bytes: the caller
    /// reads it from a `str` it has checked, so it is UTF-8 as a whole (quotes are ASCII).
    pub fn plain(&mut self) -> Option<(usize, usize)> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut i = start;
        let found = loop {
            match self.b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
                Some(chunk) => {
                    let found = special_bytes(u64::from_le_bytes(*chunk));
                    if found != 0 {
                        break i + (found.trailing_zeros() / 8) as usize;
                    }
                    i += 8;
                }
                None => {
                    break i + self
                        .b
                        .get(i..)?
                        .iter()
                        .position(|&c| SPECIAL[usize::from(c)])?;
                }
            }
        };
        (self.b[found] == b'"').then(|| {
            self.i = found + 1;
            (start, found)
        })
    }

    /// A string, unescaped: the text serde would give, or `None` (not a string, a control
    /// character, a bad or lone-surrogate escape, invalid UTF-8: serde's probes decide).
    pub fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let b = self.b;
        let mut i = self.i;
        // Written by index into a zeroed list, eight bytes at a time while none of them needs
        // care: a chunk is stored whole and the place moved to its first special byte. By
        // index, not pushed: no check of the list's room but a bound, and the list's place
        // held in a register (an envelope's payload has a `\"` every few bytes, each ending a
        // chunk). The list grows only off this loop, when a character no longer fits: never
        // for a string within the text's next 256 bytes (what is written trails what is
        // read). Sized the text's rest (up to 256 bytes) and 8 more, so that a chunk can be
        // stored whole at the text's end; no larger, because the string returned keeps this
        // room (a file record holds its payload in it).
        let mut out = vec![0u8; (b.len() - i).min(256) + 8];
        let mut o = 0;
        loop {
            // (`first_chunk` after the place: no sum to check for overflow.)
            while let (Some(chunk), Some(to)) = (
                b.get(i..).and_then(<[u8]>::first_chunk::<8>),
                out.get_mut(o..).and_then(<[u8]>::first_chunk_mut::<8>),
            ) {
                // Read once, then stored (a store through `to` could be to the same bytes, for
                // all the compiler knows).
                let w = u64::from_le_bytes(*chunk);
                *to = w.to_le_bytes();
                let found = special_bytes(w);
                if found == 0 {
                    i += 8;
                    o += 8;
                    continue;
                }
                let clear = (found.trailing_zeros() / 8) as usize;
                i += clear;
                o += clear;
                // A short escape (a payload's `\"`: a score of them a request) is taken here
                // and the chunks go on.
                let c = match b.get(i..).and_then(<[u8]>::first_chunk::<2>) {
                    Some(&[b'\\', e]) => SHORT_ESCAPES[usize::from(e)],
                    _ => 0,
                };
                if c == 0 {
                    break;
                }
                to[clear] = c;
                o += 1;
                i += 2;
            }
            if out.len() < o + 4 {
                // Room for the longest character an escape writes (four bytes).
                out.resize(out.len() * 2 + 4, 0);
            }
            let c = *b.get(i)?;
            i += 1;
            if !SPECIAL[usize::from(c)] {
                out[o] = c;
                o += 1;
                continue;
            }
            match c {
                b'"' => break,
                b'\\' => {}
                _ => return None,
            }
            let escaped = *b.get(i)?;
            if escaped == b'u' {
                self.i = i + 1;
                let c = self.code_point()?;
                i = self.i;
                o += c.encode_utf8(&mut out[o..o + 4]).len();
                continue;
            }
            out[o] = short_escape(escaped)?;
            o += 1;
            i += 1;
        }
        self.i = i;
        out.truncate(o);
        String::from_utf8(out).ok()
    }

    /// The character of a `\u` escape (after the `u`), a surrogate pair read whole.
    pub fn code_point(&mut self) -> Option<char> {
        let high = self.hex4()?;
        let code = match high {
            0xd800..=0xdbff => {
                self.eat(b'\\')?;
                self.eat(b'u')?;
                let low = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return None;
                }
                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
            }
            0xdc00..=0xdfff => return None,
            c => c,
        };
        char::from_u32(code)
    }

    pub fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }
}

/// Strategies for the property tests of whatever reads JSON strings (here and in
/// `tidings_operators::event_time`, through the `testkit` feature).
#[cfg(any(test, feature = "testkit"))]
pub mod strategies {
    /// A JSON string as anyone might write it: raw characters, every short escape, `\u`
    /// escapes in either case (surrogate pairs for characters past the BMP); and, if `broken`,
    /// now and then a lone surrogate, a bad escape, a control character or a byte that is not
    /// UTF-8.
    pub fn json_string(broken: bool) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let hex = |n: u32, upper: bool| {
            if upper {
                format!("\\u{n:04X}")
            } else {
                format!("\\u{n:04x}")
            }
        };
        let good = prop_oneof![
            // Any character written as it is (one that must be escaped: an `x`).
            8 => any::<char>().prop_map(|c| match c {
                '"' | '\\' | '\0'..='\x1f' => "x".to_string(),
                c => c.to_string(),
            }),
            4 => "[a-z:{},]{1,12}",
            2 => prop_oneof![
                Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\b"), Just("\\f"), Just("\\n"),
                Just("\\r"), Just("\\t"),
            ]
            .prop_map(String::from),
            2 => (any::<char>(), any::<bool>()).prop_map(move |(c, upper)| {
                let mut units = [0; 2];
                c.encode_utf16(&mut units).iter().map(|&u| hex(u32::from(u), upper)).collect()
            }),
        ];
        let bad = prop_oneof![
            (0xd800..0xe000u32, any::<bool>())
                .prop_map(move |(u, upper)| hex(u, upper).into_bytes()),
            Just(b"\\x".to_vec()),
            Just(b"\\u12".to_vec()),
            Just(b"\\ud83d\\u0041".to_vec()),
            (0..0x20u8).prop_map(|c| vec![c]),
            Just(vec![0xc4]),
            Just(vec![0xe9, 0x80]),
            Just(vec![0x7f]),
        ];
        let piece = if broken {
            prop_oneof![8 => good.prop_map(String::into_bytes), 1 => bad].boxed()
        } else {
            good.prop_map(String::into_bytes).boxed()
        };
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| {
            let mut s = vec![b'"'];
            s.extend(pieces.concat());
            s.push(b'"');
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, prop_oneof};
    use strategies::json_string;

    /// A string cut short anywhere (in a run of plain bytes, after a backslash, inside a `\u`
    /// escape or between a surrogate pair's halves) is refused, never read past its end.
    #[test]
    fn a_string_cut_short_is_refused() {
        let whole = br#""abcdefghijklmnop\n\u00e9\ud83d\ude00 qrstuvwxyz""#;
        for end in 0..whole.len() {
            let mut c = Cursor::new(&whole[..end], 0);
            assert_eq!(
                c.string(),
                None,
                "{}",
                String::from_utf8_lossy(&whole[..end])
            );
            let mut c = Cursor::new(&whole[..end], 0);
            assert_eq!(c.plain(), None);
        }
        let mut c = Cursor::new(whole, 0);
        assert_eq!(
            c.string().as_deref(),
            Some("abcdefghijklmnop\né😀 qrstuvwxyz")
        );
        assert!(c.at_end());
    }

    #[test]
    fn special_bytes_finds_the_first_one() {
        for at in 0..8 {
            for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                for fill in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                    let mut bytes = [fill; 8];
                    bytes[at] = special;
                    // Anything after it may be flagged too; nothing before it.
                    let found = special_bytes(u64::from_le_bytes(bytes));
                    assert_eq!(found.trailing_zeros() / 8, at as u32, "{bytes:?}");
                }
            }
        }
        for fill in 0x20..=0xffu8 {
            if fill != b'"' && fill != b'\\' {
                assert_eq!(special_bytes(u64::from_le_bytes([fill; 8])), 0, "{fill}");
            }
        }
        // Every byte at every place, among bytes that are not special.
        for at in 0..8 {
            for byte in 0..=0xffu8 {
                for fill in (0..=0xffu8).filter(|&f| !SPECIAL[usize::from(f)]) {
                    let mut bytes = [fill; 8];
                    bytes[at] = byte;
                    let found = special_bytes(u64::from_le_bytes(bytes));
                    if SPECIAL[usize::from(byte)] {
                        assert_eq!(found.trailing_zeros() / 8, at as u32, "{bytes:?}");
                    } else {
                        assert_eq!(found, 0, "{bytes:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Digits of any length, leading zeros among them, then something or nothing: read as
        /// serde reads a whole number (0 to 2^64-1), or refused where serde reads a float or
        /// refuses the text.
        #[test]
        fn a_whole_number_is_read_as_serde_reads_it(
            digits in "[0-9]{1,24}",
            small in proptest::prelude::any::<u64>(),
            use_small in proptest::prelude::any::<bool>(),
            after in prop_oneof![Just(""), Just(","), Just("}"), Just(" "), Just(".5"), Just("e3"), Just("E1")],
        ) {
            let digits = if use_small { small.to_string() } else { digits };
            let line = format!("{digits}{after}");
            let mut c = Cursor::new(line.as_bytes(), 0);
            let ours = c.digits();
            let serde = serde_json::from_str::<serde_json::Value>(&digits)
                .ok()
                .and_then(|v| v.as_u64())
                .filter(|_| !after.starts_with(['.', 'e', 'E']));
            proptest::prop_assert_eq!(ours, serde);
            if ours.is_some() {
                proptest::prop_assert_eq!(c.pos(), digits.len());
            }
        }

        /// Any string, well written or not, of every length (past the buffer's first 256 bytes
        /// too; the pieces' lengths move where the eight-byte steps fall), read from the middle
        /// of a line: read as serde reads it, or refused where serde refuses it.
        #[test]
        fn a_string_is_read_as_serde_reads_it(
            text in json_string(true),
            pad in 0..8usize,
            times in prop_oneof![3 => Just(1usize), 1 => 2..40usize],
        ) {
            let mut line = vec![b' '; pad];
            line.push(b'"');
            line.extend_from_slice(&text[1..text.len() - 1].repeat(times));
            line.push(b'"');
            let mut c = Cursor { b: &line, i: pad };
            let serde = serde_json::from_slice::<String>(&line).ok();
            proptest::prop_assert_eq!(c.string(), serde.clone());
            if serde.is_some() {
                proptest::prop_assert_eq!(c.i, line.len());
            }
        }

        /// A string without escapes is found whole by `plain`; one with an escape or a control
        /// character, or without its closing quote, is left to `string`, the cursor unmoved.
        #[test]
        fn a_plain_string_is_found_whole(
            text in json_string(true),
            pad in 0..8usize,
            end in 0..3u8,
        ) {
            let mut line = vec![b' '; pad];
            line.extend_from_slice(&text);
            // Something after it, its closing quote the last byte, or no closing quote.
            match end {
                0 => line.extend_from_slice(b", 1"),
                1 => {}
                _ => drop(line.pop()),
            }
            let mut c = Cursor { b: &line, i: pad };
            let inner = &text[1..text.len() - 1];
            let plain = end < 2 && !inner.iter().any(|&b| b == b'\\' || b < 0x20);
            match c.plain() {
                Some((a, b)) => {
                    proptest::prop_assert!(plain);
                    proptest::prop_assert_eq!(&line[a..b], inner);
                    proptest::prop_assert_eq!(c.i, pad + text.len());
                }
                None => {
                    proptest::prop_assert!(!plain);
                    proptest::prop_assert_eq!(c.i, pad);
                }
            }
        }

        /// What serde writes, read back whole (control characters escaped by serde).
        #[test]
        fn a_string_is_read_back(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}", pad in 0..8usize) {
            let line = format!("{}{}", " ".repeat(pad), serde_json::to_string(&text).unwrap());
            let mut c = Cursor { b: line.as_bytes(), i: pad };
            proptest::prop_assert_eq!(c.string(), Some(text));
            proptest::prop_assert_eq!(c.i, line.len());
        }
    }
}
