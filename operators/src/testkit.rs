//! Fixtures of the operators' unit tests: times, epochs, deliveries and parks.

use std::sync::Arc;

use tidings_model::time::Millis;
use tidings_model::{Delivery, MessageMeta, ids};

use crate::Epoch;
use crate::event_time::EventTime;
use crate::park::Parked;

/// 2025-11-22 00:00 in Shanghai.
pub const DAY: Millis = 1_763_740_800_000;

/// `hh:mm` on 2025-11-22 in Shanghai.
pub fn at(hh: i64, mm: i64) -> Millis {
    DAY + (hh * 60 + mm) * 60_000
}

/// Epochs of one minute.
pub const EVENT: EventTime = EventTime {
    epoch_ms: 60_000,
    max_out_of_order_ms: 0,
    max_future_ms: 86_400_000,
};

/// The epoch of `t`.
pub fn epoch(t: Millis) -> Epoch {
    EVENT.epoch_of(t)
}

/// Receiver `index` of message `seq` of template 1 at `event_time`, with `content`.
pub fn delivery(
    seq: u128,
    index: u32,
    receiver: &str,
    event_time: Millis,
    content: &str,
) -> Delivery {
    let meta = Arc::new(MessageMeta {
        message_id: format!("m{seq}"),
        template_id: 1,
        business_id: 1,
        biz_id: None,
        content: content.into(),
        event_time,
        seq,
    });
    Delivery {
        content_key: ids::content_key(1, receiver, content),
        frequency_key: ids::frequency_key(receiver, "sms"),
        meta,
        receiver: receiver.into(),
        index,
        event_time,
    }
}

/// Receiver `index` of message `seq` at `event_time`, parked until `release_at`.
pub fn parked(release_at: Millis, event_time: Millis, seq: u128, index: u32) -> Parked {
    Parked {
        release_at,
        delivery: delivery(seq, index, "13800138000", event_time, "{}"),
    }
}
