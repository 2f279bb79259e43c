//! Deterministic identifiers and key hashes.
//!
//! Every hash here is xxh3 with its default seed: stable across runs, machines and versions of
//! tidings, unlike `std`'s `RandomState`, so that all workers agree where a key lives and a
//! replayed record gets the ids it had the first time.

use chrono::{Datelike, NaiveDate};
use xxhash_rust::xxh3::xxh3_128;

use crate::text::Text;

/// The id of one message (one MessageParam): a pure function of where its record came from.
///
/// `source` names the source (`file:<path>` or a Kafka topic), `partition` and `offset` locate
/// the record, `param` is the index of the param inside the request.
///
/// The hash of the parts laid end to end, in one call: the same digest a streaming hasher gives
/// them (ids never change; `message_ids_are_what_they_were`), for ~110 fewer instructions a
/// message (bench/MEASURED.md).
pub fn message_id(source: &str, partition: i32, offset: i64, param: u32) -> MessageId {
    hex32(hash_concat([
        source.as_bytes(),
        &[0],
        &partition.to_le_bytes(),
        &offset.to_le_bytes(),
        &param.to_le_bytes(),
    ]))
}

/// `format!("{:032x}", v)`, without the formatter's machinery (once per message on the hot
/// path: it was a hundredth of a worker's time in the 1M-request bench), and without a table
/// lookup per byte (`hex::encode_to_slice`: ~135 instructions): each half's 16 nibbles are
/// spread into a byte each and made digits together (~50).
fn hex32(v: u128) -> MessageId {
    let mut digits = [0u8; 32];
    digits[..16].copy_from_slice(&hex16((v >> 64) as u64));
    digits[16..].copy_from_slice(&hex16(v as u64));
    MessageId::ascii(digits)
}

/// The 16 lowercase hex digits of `h`, most significant first.
#[inline]
fn hex16(h: u64) -> [u8; 16] {
    const fn every_byte(b: u8) -> u128 {
        u128::from_ne_bytes([b; 16])
    }
    // Halves, quarters, bytes, nibbles: nibble k (from the least significant) ends in byte k.
    let x = u128::from(h);
    let x = (x | (x << 32)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF;
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF;
    let x = (x | (x << 4)) & every_byte(0x0F);
    // A nibble past 9 carries into its byte's bit 4 when 6 is added (never out of the byte).
    let letters = ((x + every_byte(6)) >> 4) & every_byte(1);
    (x + every_byte(b'0') + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// A message's id, as text: 32 hex digits for the ids tidings makes ([`message_id`]), kept
/// inline in the message's own facts (no allocation per message, and no second cache line
/// to fetch wherever a stage reads the id: grouping deliveries for a send, every tracking
/// row). Encoded as a string.
pub type MessageId = Text<32>;

/// austin's businessId: `templateType * 1_000_000 + templateId` followed by `yyyyMMdd`.
///
/// Saturates instead of overflowing: a template id above about 9.2e10 cannot be written in
/// austin's 64-bit form and gives `i64::MAX` (or `i64::MIN`) rather than a panic.
pub fn business_id(template_type_code: i64, template_id: i64, date: NaiveDate) -> i64 {
    let prefix = template_type_code
        .saturating_mul(1_000_000)
        .saturating_add(template_id);
    let day = i64::from(date.year()) * 10_000 + i64::from(date.month() * 100 + date.day());
    prefix.saturating_mul(100_000_000).saturating_add(day)
}

/// Key of the content dedup rule: (template, receiver, rendered content).
pub fn content_key(template_id: i64, receiver: &str, content: &str) -> u128 {
    hash_concat([
        b"c",
        &template_id.to_le_bytes(),
        receiver.as_bytes(),
        &[0],
        content.as_bytes(),
    ])
}

/// Key of the frequency dedup rule: (receiver, channel).
pub fn frequency_key(receiver: &str, channel: &str) -> u128 {
    hash_concat([b"f", receiver.as_bytes(), &[0], channel.as_bytes()])
}

/// xxh3-128 of the parts laid end to end. Up to [`SHORT`] bytes (an id from a source name of
/// up to 175 bytes, the keys of a text message) they are laid in a buffer on the stack, in the
/// caller: a part of a fixed length (a separator, an integer's bytes) is copied as such, not by
/// a `memcpy` call (~14 calls a request through the thread's buffer, bench/MEASURED.md).
/// Longer, in a buffer of the thread's, reused (an email's content: no allocation per key).
#[inline(always)]
fn hash_concat<const N: usize>(parts: [&[u8]; N]) -> u128 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        let mut n = 0;
        for p in parts {
            buf[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        return xxh3_128(&buf[..n]);
    }
    hash_concat_long(&parts)
}

/// The parts' length up to which [`hash_concat`] lays them on the stack.
const SHORT: usize = 192;

/// [`hash_concat`] of longer parts, concatenated in a buffer of the thread's, reused (a key per
/// receiver: no allocation, and no large stack buffer zeroed per key).
#[inline(never)]
fn hash_concat_long(parts: &[&[u8]]) -> u128 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        for p in parts {
            b.extend_from_slice(p);
        }
        let key = xxh3_128(&b);
        // A long content (an email's) does not stay held by the thread.
        if b.capacity() > 4096 {
            b.clear();
            b.shrink_to(512);
        }
        key
    })
}

/// The hasher of in-memory maps on the hot path (dedup key tables, receiver sets, routes):
/// foldhash, seeded at random per process like `std`'s `RandomState` but a few multiplies per
/// key instead of SipHash-1-3's rounds (its gain was not measured apart: bench/ANALYSIS.md).
/// Never used for anything that leaves the process or decides where a key lives.
pub type FastState = foldhash::fast::RandomState;

/// A `HashMap` with [`FastState`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;

/// A `HashSet` with [`FastState`].
pub type FastSet<T> = std::collections::HashSet<T, FastState>;

/// Routes a 128-bit key to a worker: the low 64 bits, which are as well mixed as the high.
pub fn route(key: u128) -> u64 {
    key as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `message_id("file:x", 0, 7, 0)` as every earlier version of tidings wrote it.
    const PINNED_FILE_X_0_7_0: &str = "6108d9a764c556094b498b64757218a9";

    /// How ids were made before they were hashed in one call: a streaming hasher fed part by part.
    fn streamed_message_id(source: &str, partition: i32, offset: i64, param: u32) -> MessageId {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(source.as_bytes());
        h.update(&[0]);
        h.update(&partition.to_le_bytes());
        h.update(&offset.to_le_bytes());
        h.update(&param.to_le_bytes());
        hex32(h.digest128())
    }

    proptest::proptest! {
        /// Sources of every length (a topic, a file path on either side of the stack buffer's
        /// size, a long one).
        #[test]
        fn message_ids_are_what_they_were(
            source in "\\PC{0,40}|[a-z/]{170,180}|[a-z/]{490,530}",
            partition in proptest::prelude::any::<i32>(),
            offset in proptest::prelude::any::<i64>(),
            param in proptest::prelude::any::<u32>(),
        ) {
            proptest::prop_assert_eq!(
                message_id(&source, partition, offset, param),
                streamed_message_id(&source, partition, offset, param)
            );
        }
    }

    #[test]
    fn hex_ids_are_the_formatters_zero_padded_hex() {
        for v in [
            0,
            1,
            0xf,
            u128::MAX,
            1 << 127,
            0x0123_4567_89ab_cdef << 60,
            u128::MAX / 3,
        ] {
            assert_eq!(hex32(v).as_str(), format!("{v:032x}"));
        }
        // Every digit at every place, and values of all kinds.
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        for place in 0..32 {
            for digit in 0..16u128 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                for v in [digit << (4 * place), x, !(digit << (4 * place))] {
                    assert_eq!(hex32(v).as_str(), format!("{v:032x}"));
                }
            }
        }
    }

    /// The keys are in checkpoints: they are the hash of the bytes they always hashed, laid
    /// out in a heap buffer as before, on either side of the stack buffer's size (`SHORT`) and
    /// of the thread buffer's.
    #[test]
    fn keys_hash_the_bytes_they_always_hashed() {
        let old_content = |t: i64, r: &str, c: &str| {
            let mut buf = Vec::new();
            buf.extend_from_slice(b"c");
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(r.as_bytes());
            buf.push(0);
            buf.extend_from_slice(c.as_bytes());
            xxh3_128(&buf)
        };
        let old_frequency = |r: &str, ch: &str| {
            let mut buf = Vec::new();
            buf.extend_from_slice(b"f");
            buf.extend_from_slice(r.as_bytes());
            buf.push(0);
            buf.extend_from_slice(ch.as_bytes());
            xxh3_128(&buf)
        };
        // 1 + 8 + 11 + 1 = 21 bytes before the content.
        for len in [
            0,
            1,
            SHORT - 22,
            SHORT - 21,
            SHORT - 20,
            490,
            491,
            492,
            493,
            2000,
        ] {
            let content = "码x".repeat(len / 4) + &"y".repeat(len % 4);
            assert_eq!(
                content_key(7, "13800138000", &content),
                old_content(7, "13800138000", &content),
                "content of {} bytes",
                content.len()
            );
        }
        // 1 + 1 + 3 = 5 bytes besides the receiver.
        for len in [SHORT - 6, SHORT - 5, SHORT - 4, 600] {
            let long = "r".repeat(len);
            assert_eq!(frequency_key(&long, "sms"), old_frequency(&long, "sms"));
        }
        assert_eq!(
            frequency_key("13800138000", "sms"),
            old_frequency("13800138000", "sms")
        );
        assert_eq!(
            content_key(1, "13800138000", r#"{"content":"4711"}"#),
            GOLDEN_CONTENT_KEY
        );
        assert_eq!(
            old_content(1, "13800138000", r#"{"content":"4711"}"#),
            GOLDEN_CONTENT_KEY
        );
    }

    /// `content_key(1, "13800138000", {"content":"4711"})` as checkpoints hold it.
    const GOLDEN_CONTENT_KEY: u128 = 22_531_274_805_924_779_738_660_350_456_073_215_980;

    #[test]
    fn business_id_matches_austin() {
        let d = NaiveDate::from_ymd_opt(2025, 11, 22).unwrap();
        assert_eq!(business_id(20, 1, d), 2000000120251122);
        assert_eq!(business_id(20, 1, d).to_string().len(), 16);
        assert_eq!(business_id(20, i64::MAX, d), i64::MAX);
        assert_eq!(business_id(20, i64::MIN, d), i64::MIN + 20251122);
        let _ = business_id(20, 1, NaiveDate::MAX);
        let _ = business_id(20, 1, NaiveDate::MIN);
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        // Pinned: ids are kept in tracking tables and checkpoints, and a replay must give the
        // ids it gave the first time.
        assert_eq!(message_id("file:x", 0, 7, 0).as_str(), PINNED_FILE_X_0_7_0);
        let a = message_id("file:x", 0, 7, 0);
        assert_eq!(a, message_id("file:x", 0, 7, 0));
        assert_ne!(a, message_id("file:x", 0, 7, 1));
        assert_ne!(a, message_id("file:x", 1, 7, 0));
        assert_eq!(a.len(), 32);
    }
}
