//! tidings' own webhook: the request is the message as JSON, signed as the module documents
//! (Stripe-style `sha256=` over `timestamp.body`); the receiving service answers with its
//! HTTP status only.

use reqwest::StatusCode;
use serde_json::json;
use tidings_model::Channel;

use super::*;
use crate::util::kit::test_batch;

#[test]
fn the_payload_is_the_message_with_its_receivers() {
    let b = test_batch(Channel::Webhook, r#"{"content":"deploy 42 done"}"#);
    let body: serde_json::Value =
        serde_json::from_slice(&Webhook::payload(&b, &["ops".into()])).unwrap();
    assert_eq!(
        body,
        json!({"message_id": "m1", "template_id": 7, "channel": "webhook",
            "receivers": ["ops"], "content": {"content": "deploy 42 done"}})
    );
    // A content model that is not JSON travels as null rather than failing the call.
    let b = test_batch(Channel::Webhook, "not json");
    let body: serde_json::Value = serde_json::from_slice(&Webhook::payload(&b, &[])).unwrap();
    assert_eq!(body["content"], serde_json::Value::Null);
}

#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
    // hmac.new(b"whsec", b"1700000000." + body, sha256).hexdigest(), with Python.
    let body = br#"{"message_id":"m1","template_id":7,"channel":"webhook","receivers":["ops"],"content":{"content":"deploy 42 done"}}"#;
    assert_eq!(
        sign::webhook("whsec", 1_700_000_000, body),
        "sha256=a071f747ea56fe652aa93aff1ee59f74c2f1748ce91d75b031e889a1435aa0bd"
    );
}

#[test]
fn answers_are_judged_by_their_status() {
    let judge = |code: u16| http::status(NAME, StatusCode::from_u16(code).unwrap(), "{}");
    assert!(judge(200).is_ok() && judge(202).is_ok() && judge(204).is_ok());
    // Rate limited or down: retried.
    assert!(matches!(judge(429), Err(SendError::Transient(_))));
    assert!(matches!(judge(503), Err(SendError::Transient(_))));
    // A refused signature: not retried as is.
    assert!(matches!(judge(401), Err(SendError::Unauthorized(_))));
    assert!(matches!(judge(403), Err(SendError::Unauthorized(_))));
    // The service rejects the message itself.
    assert!(matches!(judge(422), Err(SendError::Permanent(_))));
}
