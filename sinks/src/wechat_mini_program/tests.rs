//! WeChat mini program subscribe message, against the request and answers of WeChat's
//! documentation (`cgi-bin/message/subscribe/send`): one openid per call; a user who did not
//! accept the subscription (43101) fails alone.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;
use crate::util::token::{Answer, errcode_answer};
use crate::wechat_official_account::{BUSY_CODES, TOKEN_CODES};

fn answer(body: &str) -> Result<Answer<Value>, SendError> {
    errcode_answer(NAME, body, &TOKEN_CODES, &BUSY_CODES)
}

#[test]
fn the_documented_subscribe_message() {
    let b = test_batch(
        Channel::MiniProgram,
        r#"{"templateId":"TEMPLATE_ID","page":"index","miniprogramState":"developer","data":{"number01":"339208499","date01":"2015年01月05日","site01":"TIT创意园","site02":"广州市新港中路397号"}}"#,
    );
    assert_eq!(
        WechatMiniProgram::payload(&b, "OPENID"),
        json!({"touser": "OPENID", "template_id": "TEMPLATE_ID", "page": "index",
            "miniprogram_state": "developer", "lang": "zh_CN",
            "data": {"number01": {"value": "339208499"}, "date01": {"value": "2015年01月05日"},
                "site01": {"value": "TIT创意园"}, "site02": {"value": "广州市新港中路397号"}}})
    );
    // austin's `path` names the page; the released version is the default.
    let b = test_batch(
        Channel::MiniProgram,
        r#"{"templateId":"T","path":"pages/order"}"#,
    );
    let v = WechatMiniProgram::payload(&b, "OPENID");
    assert_eq!(
        (v["page"].as_str(), v["miniprogram_state"].as_str()),
        (Some("pages/order"), Some("formal"))
    );
}

#[test]
fn answers() {
    assert!(matches!(
        answer(r#"{"errcode":0,"errmsg":"ok","msgid":3077519}"#),
        Ok(Answer::Done(_))
    ));
    // The user refused (or never accepted) the subscription: that receiver fails for good.
    let e = answer(r#"{"errcode":43101,"errmsg":"user refuse to accept the msg"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert_eq!(
        e.reason(),
        "wechat_mini_program: 43101 user refuse to accept the msg"
    );
    let e = answer(r#"{"errcode":40003,"errmsg":"invalid openid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = answer(r#"{"errcode":45047,"errmsg":"out of send limit"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert!(matches!(
        answer(r#"{"errcode":40001,"errmsg":"invalid credential"}"#),
        Ok(Answer::TokenRejected(_))
    ));
}
