//! Micro benches of the plain state machines: parse + validate, render, content and frequency
//! dedup, shield, rate-limit bookkeeping, tracking row building and Parquet writing.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use tidings_model::render::render;
use tidings_model::request::decode_line;
use tidings_model::template::Shield;
use tidings_model::time::{NightWindow, parse_hhmm};
use tidings_model::{Delivery, EventRow, MessageMeta, State, Templates};
use tidings_operators::SourceRecord;
use tidings_operators::dedup::{ContentDedup, FrequencyDedup};
use tidings_operators::shield::NightShield;
use tidings_operators::validate::Validator;
use tidings_sinks::tracking::redis::{RedisRow, UserTtl};
use tidings_sinks::tracking::{ParquetTracking, Tracking};

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

fn validate(c: &mut Criterion) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/templates.toml");
    let templates = Arc::new(Templates::load(&path).expect("demo templates"));
    let v = Validator::new(templates, chrono_tz::Asia::Shanghai);
    let payload = br#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000,13800138001","variables":{"code":"4711"}}}"#;
    let rec = SourceRecord {
        source: "tidings.send".into(),
        partition: 0,
        offset: 42,
        bytes: payload.to_vec(),
        read_time: 1_763_773_200_000,
        timestamp: Some(1_763_773_200_000),
        event_time: 1_763_773_200_000,
        late_by: 0,
        bad_time: None,
    };
    c.bench_function("parse_and_validate_2_receivers", |b| {
        b.iter(|| black_box(v.validate(black_box(&rec), 1_763_773_200_000)))
    });
}

fn render_content(c: &mut Criterion) {
    let content: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"title":"Order {$order}","content":"Hi {$name}, your order {$order} ships {$day}.","url":"https://example.com/o/{$order}"}"#,
    )
    .unwrap();
    let vars: tidings_model::render::Variables =
        serde_json::from_str(r#"{"name":"Ann","order":"A-77","day":"today"}"#).unwrap();
    c.bench_function("render_content_model", |b| {
        b.iter(|| black_box(render(black_box(&content), black_box(&vars))))
    });
}

fn shield(c: &mut Criterion) {
    let s = NightShield {
        window: NightWindow::parse("00:00-08:00").unwrap(),
        release_at: parse_hhmm("09:00").unwrap(),
        tz: chrono_tz::Asia::Shanghai,
    };
    c.bench_function("night_shield_decide", |b| {
        let mut t = 1_763_740_800_000i64;
        b.iter(|| {
            t += 60_000;
            black_box(s.decide(Shield::NightDelay, black_box(t)))
        })
    });
}

fn rate_limit(c: &mut Criterion) {
    let limiter = RateLimiter::direct(Quota::per_second(NonZeroU32::new(u32::MAX).unwrap()));
    c.bench_function("rate_limit_check", |b| {
        b.iter(|| black_box(limiter.check()))
    });
}

fn delivery(i: u64) -> Delivery {
    Delivery::new(
        Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: format!("m{i}").into(),
            template_id: 1,
            business_id: 2_000_000_120_251_122,
            biz_id: None,
            content: r#"{"content":"Your code is 4711."}"#.into(),
            event_time: 1_763_773_200_000,
            seq: i as u128,
        }),
        format!("1380013{i:04}").into(),
        0,
        1_763_773_200_000,
        (i as u128, i as u128),
    )
}

fn tracking(c: &mut Criterion) {
    let d = delivery(7);
    c.bench_function("tracking_row_build", |b| {
        b.iter(|| {
            let row = EventRow::of(black_box(&d), State::SendSuccess, None, 1_763_773_201_000);
            black_box(RedisRow::of(
                &row,
                UserTtl::EndOfDay(chrono_tz::Asia::Shanghai),
            ))
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/templates.toml");
    let templates = Arc::new(Templates::load(&path).expect("demo templates"));
    let rows: Vec<EventRow> = (0..10_000)
        .map(|i| EventRow::of(&delivery(i), State::SendSuccess, None, 1_763_773_201_000))
        .collect();
    let mut group = c.benchmark_group("parquet");
    group.sample_size(10);
    group.bench_function("write_10k_event_rows", |b| {
        let mut w = Tracking::Parquet(ParquetTracking::new(
            dir.path(),
            chrono_tz::Asia::Shanghai,
            templates.clone(),
            "bench",
            0,
        ));
        b.iter(|| {
            for r in &rows {
                w.event(r.clone());
            }
            w.flush().unwrap();
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    dedup,
    parse,
    validate,
    render_content,
    shield,
    rate_limit,
    tracking
);
criterion_main!(benches);
