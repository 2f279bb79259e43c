//! DingTalk custom robot, against the requests and answers of DingTalk's robot documentation
//! (`open.dingtalk.com/document/robots/custom-robot-access`). A robot posts one message to its
//! group: the answer is one errcode for every receiver (mentioned or not).

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

fn batch(content: &str) -> SendBatch {
    test_batch(Channel::DingDingRobot, content)
}

#[test]
fn body_mentions_receivers_or_everyone() {
    let b = batch(r#"{"content":"build 7 done"}"#);
    let v = DingTalkRobot::payload(&b, &["13800138000".into()]);
    assert_eq!(
        v,
        json!({"msgtype": "text", "text": {"content": "build 7 done"},
            "at": {"atMobiles": ["13800138000"], "isAtAll": false}})
    );
    let v = DingTalkRobot::payload(
        &batch(r#"{"sendType":"markdown","title":"t","content":"**x**"}"#),
        &["@all".into()],
    );
    assert_eq!(v["msgtype"], "markdown");
    assert_eq!(v["at"]["isAtAll"], true);
}

#[test]
fn the_documented_text_and_markdown_messages() {
    // The documentation's text example, mentioning one mobile.
    let v = DingTalkRobot::payload(
        &batch(r#"{"content":"我就是我, @150XXXXXXXX 是不一样的烟火"}"#),
        &["150XXXXXXXX".into()],
    );
    assert_eq!(
        v,
        json!({"msgtype": "text",
            "text": {"content": "我就是我, @150XXXXXXXX 是不一样的烟火"},
            "at": {"atMobiles": ["150XXXXXXXX"], "isAtAll": false}})
    );
    // Its markdown example: `title` is the notification's summary, `text` the body.
    let v = DingTalkRobot::payload(
        &batch(
            r#####"{"sendType":"markdown","title":"杭州天气","content":"#### 杭州天气 @150XXXXXXXX \n> 9度，西北风1级，空气良89，相对温度73%\n"}"#####,
        ),
        &["150XXXXXXXX".into()],
    );
    assert_eq!(
        v,
        json!({"msgtype": "markdown",
            "markdown": {"title": "杭州天气",
                "text": "#### 杭州天气 @150XXXXXXXX \n> 9度，西北风1级，空气良89，相对温度73%\n"},
            "at": {"atMobiles": ["150XXXXXXXX"], "isAtAll": false}})
    );
}

#[test]
fn accepted() {
    assert!(matches!(
        DingTalkRobot::judge(r#"{"errcode":0,"errmsg":"ok"}"#),
        Ok(Delivered::All)
    ));
}

#[test]
fn too_fast_is_retried() {
    // 20 messages per minute per robot; past it DingTalk answers 130101.
    let e = DingTalkRobot::judge(
        r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert_eq!(
        e.reason(),
        "dingtalk_robot: 130101 send too fast, exceed 20 times per minute"
    );
    let e = DingTalkRobot::judge(r#"{"errcode":-1,"errmsg":"系统繁忙"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    // The current error table's code for the same limit.
    let e =
        DingTalkRobot::judge(r#"{"errcode":410100,"errmsg":"发送速度太快而限流"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

#[test]
fn a_refused_signature_keyword_or_token_is_unauthorized() {
    for body in [
        r#"{"errcode":310000,"errmsg":"sign not match"}"#,
        r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
        r#"{"errcode":300001,"errmsg":"token is not exist"}"#,
        r#"{"errcode":400101,"errmsg":"access_token不存在"}"#,
    ] {
        let e = DingTalkRobot::judge(body).unwrap_err();
        assert!(matches!(e, SendError::Unauthorized(_)), "{body}: {e:?}");
    }
}

#[test]
fn other_refusals_fail_every_receiver_for_good() {
    // The month's webhook quota of a free organisation does not come back within a backoff.
    let e = DingTalkRobot::judge(r#"{"errcode":90030,"errmsg":"webhook over limit"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(e.reason().contains("90030 webhook over limit"));
    // Not JSON (a proxy's error page): worth another try.
    let e = DingTalkRobot::judge("<html>502 Bad Gateway</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}
