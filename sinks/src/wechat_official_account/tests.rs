//! WeChat official account template message, against the requests and answers of WeChat's
//! documentation (`cgi-bin/stable_token`, `cgi-bin/message/template/send`): one openid per
//! call, so each answer is its receiver's outcome.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;
use crate::util::token::{Answer, errcode_answer};

fn answer(body: &str) -> Result<Answer<Value>, SendError> {
    errcode_answer(NAME, body, &TOKEN_CODES, &BUSY_CODES)
}

/// One call per receiver answered from `bodies` (what WeChat answered each openid), read as
/// the sender reads them; a refused token counts as refused credentials.
async fn each(receivers: &[&str], bodies: &[&'static str]) -> Delivered {
    let receivers: Vec<Receiver> = receivers.iter().map(|s| (*s).into()).collect();
    let mut bodies = bodies.iter();
    one_by_one(&receivers, |_| {
        let body = bodies.next().expect("an answer per call");
        async move {
            match answer(body)? {
                Answer::Done(_) => Ok(()),
                Answer::TokenRejected(why) => Err(SendError::Unauthorized(why)),
            }
        }
    })
    .await
    .unwrap()
}

#[test]
fn the_documented_template_message() {
    let b = test_batch(
        Channel::OfficialAccounts,
        r#"{"templateId":"ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY","url":"http://weixin.qq.com/download","miniProgramId":"xiaochengxuappid12345","path":"index?foo=bar","data":{"keyword1":"巧克力","keyword2":"39.8元"}}"#,
    );
    assert_eq!(
        WechatOfficialAccount::payload(&b, "OPENID"),
        json!({"touser": "OPENID",
            "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
            "url": "http://weixin.qq.com/download",
            "miniprogram": {"appid": "xiaochengxuappid12345", "pagepath": "index?foo=bar"},
            "data": {"keyword1": {"value": "巧克力"}, "keyword2": {"value": "39.8元"}}})
    );
    // austin's `map` works as `data`; no url and no mini program: neither key is sent.
    let b = test_batch(
        Channel::OfficialAccounts,
        r#"{"templateId":"T","map":{"amount":12}}"#,
    );
    assert_eq!(
        WechatOfficialAccount::payload(&b, "OPENID"),
        json!({"touser": "OPENID", "template_id": "T", "data": {"amount": {"value": "12"}}})
    );
}

#[tokio::test]
async fn each_openid_gets_its_own_answer() {
    let got = each(
        &["o1", "o2", "o3"],
        &[
            r#"{"errcode":0,"errmsg":"ok","msgid":200228332}"#,
            r#"{"errcode":43004,"errmsg":"require subscribe"}"#,
            r#"{"errcode":0,"errmsg":"ok","msgid":200228333}"#,
        ],
    )
    .await;
    let Delivered::Each(v) = got else {
        panic!("per receiver");
    };
    assert_eq!(v[0], Ok(()));
    // A user who does not follow the account fails alone, for good.
    assert!(matches!(&v[1], Err(SendError::Permanent(r)) if r.contains("43004 require subscribe")));
    assert_eq!(v[2], Ok(()));
}

#[tokio::test]
async fn a_quota_answer_leaves_the_rest_for_the_retry() {
    let got = each(
        &["o1", "o2", "o3"],
        &[
            r#"{"errcode":0,"errmsg":"ok","msgid":1}"#,
            r#"{"errcode":45009,"errmsg":"reach max api daily quota limit"}"#,
        ],
    )
    .await;
    let Delivered::Each(v) = got else {
        panic!("per receiver");
    };
    // o1 is settled; o2 and o3 (never called) are transient, so only they are sent again.
    assert_eq!(v[0], Ok(()));
    assert!(matches!(&v[1], Err(SendError::Transient(_))));
    assert!(matches!(&v[2], Err(SendError::Transient(_))));
}

#[test]
fn an_invalid_token_is_fetched_again() {
    for body in [
        r#"{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest"}"#,
        r#"{"errcode":42001,"errmsg":"access_token expired"}"#,
    ] {
        assert!(
            matches!(answer(body), Ok(Answer::TokenRejected(_))),
            "{body}"
        );
    }
}

#[test]
fn the_documented_stable_token_answers() {
    let (token, lifetime) =
        token_answer(NAME, r#"{"access_token":"ACCESS_TOKEN","expires_in":7200}"#).unwrap();
    assert_eq!((token.as_str(), lifetime.as_secs()), ("ACCESS_TOKEN", 7200));
    let e = token_answer(NAME, r#"{"errcode":40013,"errmsg":"invalid appid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = token_answer(NAME, r#"{"errcode":-1,"errmsg":"system error"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}
