//! DingTalk work notice, against the requests and answers of DingTalk's server API
//! documentation (`gettoken`, `topapi/message/corpconversation/asyncsend_v2`, `.../recall`):
//! an accepted call answers a `task_id` (what a recall takes); per-user results are only
//! known later (`getsendresult`), so an accepted call reached every receiver.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;
use crate::util::token::{Answer, errcode_answer};

fn app() -> DingTalkWorkNotice {
    DingTalkWorkNotice::new(
        DingTalkWorkNoticeConfig {
            app_key: "dingxxxxxxxx".into(),
            app_secret: "secret".into(),
            agent_id: 123,
            endpoint: None,
        },
        reqwest::Client::new(),
    )
}

fn answer(body: &str) -> Result<Answer<Value>, SendError> {
    errcode_answer(NAME, body, &TOKEN_CODES, &BUSY_CODES)
}

#[test]
fn the_documented_asyncsend_v2_body() {
    let b = test_batch(Channel::DingDingWorkNotice, r#"{"content":"123"}"#);
    assert_eq!(
        app().payload(&b, &["123".into(), "456".into()]),
        json!({"agent_id": 123, "userid_list": "123,456",
            "msg": {"msgtype": "text", "text": {"content": "123"}}})
    );
    // `@all` is the whole organisation.
    assert_eq!(
        app().payload(&b, &["@all".into()]),
        json!({"agent_id": 123, "to_all_user": true,
            "msg": {"msgtype": "text", "text": {"content": "123"}}})
    );
    let b = test_batch(
        Channel::DingDingWorkNotice,
        r##"{"sendType":"markdown","title":"周报","content":"# 本周 \n 完成 3 项"}"##,
    );
    assert_eq!(
        DingTalkWorkNotice::msg(&b),
        json!({"msgtype": "markdown", "markdown": {"title": "周报", "text": "# 本周 \n 完成 3 项"}})
    );
}

#[test]
fn an_accepted_call_is_tracked_by_its_task_id() {
    let Ok(Answer::Done(v)) = answer(r#"{"errcode":0,"errmsg":"ok","task_id":123}"#) else {
        panic!("accepted");
    };
    match DingTalkWorkNotice::delivered(&v) {
        Delivered::Tracked { reference, each } => {
            assert_eq!(reference, "123");
            assert!(each.is_none(), "every receiver reached");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_invalid_token_is_fetched_again() {
    for body in [
        r#"{"errcode":88,"errmsg":"ding talk error"}"#,
        r#"{"errcode":40014,"errmsg":"不合法的access_token"}"#,
        r#"{"errcode":42001,"errmsg":"access_token超时"}"#,
        r#"{"errcode":88,"sub_code":"40014","sub_msg":"不合法的access_token","errmsg":"ding talk error[subcode=40014]"}"#,
    ] {
        assert!(
            matches!(answer(body), Ok(Answer::TokenRejected(_))),
            "{body}"
        );
    }
    // 88 with another sub_code (its documented example): a new token would not help.
    let e = answer(r#"{"errcode":88,"sub_code":"60011","sub_msg":"没有调用该接口的权限","errmsg":"ding talk error[subcode=60011,submsg=没有调用该接口的权限]","request_id":"5imjny7u9xwa"}"#)
        .unwrap_err();
    assert!(
        matches!(e, SendError::Permanent(ref r) if r.contains("60011")),
        "{e:?}"
    );
}

#[test]
fn frequency_limits_are_retried_and_refusals_are_final() {
    let e = answer(r#"{"errcode":90018,"errmsg":"当前接口调用过于频繁"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = answer(r#"{"errcode":-1,"errmsg":"系统繁忙"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = answer(r#"{"errcode":33012,"errmsg":"无效的userid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
}

#[test]
fn the_documented_gettoken_answers() {
    let (token, lifetime) = token_answer(
        NAME,
        r#"{"errcode":0,"access_token":"96fc7a7axxx","errmsg":"ok","expires_in":7200}"#,
    )
    .unwrap();
    assert_eq!((token.as_str(), lifetime.as_secs()), ("96fc7a7axxx", 7200));
    let e = token_answer(
        NAME,
        r#"{"errcode":40089,"errmsg":"不合法的corpid或corpsecret"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
}
