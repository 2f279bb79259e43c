//! Micro benches of the plain state machines.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tidings_model::Templates;
use tidings_model::request::decode_line;
use tidings_operators::dedup::{ContentDedup, FrequencyDedup};

fn dedup(c: &mut Criterion) {
    let templates = Arc::new(Templates::default());
    c.bench_function("content_dedup_admit_100k_keys", |b| {
        b.iter(|| {
            let mut d = ContentDedup::new(1, 300_000, 0, templates.clone());
            for i in 0..100_000u128 {
                let _ = black_box(d.admit(i % 50_000, i as i64));
            }
        })
    });
    c.bench_function("frequency_dedup_admit_100k", |b| {
        b.iter(|| {
            let mut d = FrequencyDedup::new(5, chrono_tz::Asia::Shanghai, 0, templates.clone());
            for i in 0..100_000u128 {
                let _ = black_box(d.admit(i % 20_000, 1_763_740_800_000 + i as i64));
            }
        })
    });
}

fn parse(c: &mut Criterion) {
    let line = br#"{"ts":1763740859587,"key":"1","payload":"{\"code\":\"send\",\"messageTemplateId\":3,\"messageParam\":{\"receiver\":\"cid-013\",\"variables\":{\"sale\":\"80%\"}}}"}"#;
    c.bench_function("decode_envelope_line", |b| {
        b.iter(|| black_box(decode_line(black_box(line), 0)))
    });
}

criterion_group!(benches, dedup, parse);
criterion_main!(benches);
