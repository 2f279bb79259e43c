use super::*;
use std::sync::Arc;
use tidings_model::{Channel, MessageMeta};

pub(crate) fn batch(content: &str) -> SendBatch {
    SendBatch {
        meta: Arc::new(MessageMeta {
            message_id: "m1".into(),
            template_id: 7,
            business_id: 1,
            biz_id: None,
            content: content.into(),
            event_time: 0,
            seq: 0,
        }),
        channel: Channel::DingDingRobot,
        receivers: vec![],
    }
}

#[test]
fn body_mentions_receivers_or_everyone() {
    let b = batch(r#"{"content":"build 7 done"}"#);
    let v = DingTalkRobot::body(&b, &["13800138000".into()]);
    assert_eq!(
        v,
        serde_json::json!({"msgtype": "text", "text": {"content": "build 7 done"},
            "at": {"atMobiles": ["13800138000"], "isAtAll": false}})
    );
    let v = DingTalkRobot::body(
        &batch(r#"{"sendType":"markdown","title":"t","content":"**x**"}"#),
        &["@all".into()],
    );
    assert_eq!(v["msgtype"], "markdown");
    assert_eq!(v["at"]["isAtAll"], true);
}
