//! GeTui push (REST API v2), against the requests and answers of GeTui's documentation
//! (`docs.getui.com/getui/server/rest_v2/`): `{"code", "msg", "data"}`, 0 is accepted, 10001
//! is an invalid token.
//!
//! GeTui sends its 10000-range codes with HTTP 401 and its parameter errors with HTTP 400:
//! [`Getui::read`] judges a coded body by its code whatever the status (so a revoked token is
//! fetched again and a rate limit is retried), an uncoded one by the status.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

fn batch() -> SendBatch {
    test_batch(
        Channel::Push,
        r#"{"title":"请填写通知标题","content":"请填写通知内容","url":"https://www.getui.com"}"#,
    )
}

#[test]
fn auth_sign_is_sha256_hex_of_key_time_secret() {
    // sha256("key1700000000000secret"), computed independently with Python's hashlib.
    assert_eq!(
        auth_sign("key", 1_700_000_000_000, "secret"),
        "ee412f504f93d283888979ab4f37e98beb471243575d468a4048c57285abad84"
    );
}

#[test]
fn the_documented_single_push() {
    let v = Getui::single_payload(&batch(), "xxx");
    let request_id = v["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        v,
        json!({"request_id": request_id, "settings": {"ttl": 86_400_000},
            "audience": {"cid": ["xxx"]},
            "push_message": {"notification": {"title": "请填写通知标题", "body": "请填写通知内容",
                "click_type": "url", "url": "https://www.getui.com"}}})
    );
    // 10 to 32 characters, and the same for a retried call.
    assert_eq!(request_id.len(), 32);
    assert_eq!(
        Getui::single_payload(&batch(), "xxx")["request_id"],
        request_id.as_str()
    );
    assert_ne!(
        Getui::single_payload(&batch(), "yyy")["request_id"],
        request_id.as_str()
    );
    // Without a url, a click opens the app.
    let b = test_batch(Channel::Push, r#"{"title":"t","content":"c"}"#);
    assert_eq!(
        Getui::push_message(&b),
        json!({"notification": {"title": "t", "body": "c", "click_type": "startapp"}})
    );
}

#[test]
fn a_list_push_creates_the_message_then_sends_it_to_its_cids() {
    let cids: Vec<Receiver> = vec!["cid1".into(), "cid2".into()];
    let created = Getui::list_payload(&batch(), &cids);
    assert_eq!(
        created["request_id"],
        Getui::request_id(&batch(), &cids).as_str()
    );
    assert!(
        created.get("audience").is_none(),
        "the audience comes with the second call"
    );
    assert_eq!(
        Getui::list_cids_payload("RASL_0601_5f3d", &cids),
        json!({"audience": {"cid": ["cid1", "cid2"]}, "taskid": "RASL_0601_5f3d", "is_async": false})
    );
}

#[test]
fn answers() {
    let ok = r#"{"code":0,"msg":"","data":{"RASS_0929_0c4bd2ec8b8c4a4b8f3c0d5e6a7b8c9d":{"xxx":"successed_online"}}}"#;
    assert!(matches!(Getui::judge(ok), Ok(Answer::Done(_))));
    let created = r#"{"code":0,"msg":"","data":{"taskid":"RASL_0601_5f3d"}}"#;
    let Ok(Answer::Done(v)) = Getui::judge(created) else {
        panic!("accepted");
    };
    assert_eq!(v["data"]["taskid"], "RASL_0601_5f3d");
    assert!(matches!(
        Getui::judge(r#"{"code":10001,"msg":"token错误/失效"}"#),
        Ok(Answer::TokenRejected(_))
    ));
    let e = Getui::judge(r#"{"code":20001,"msg":"target user is invalid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert_eq!(e.reason(), "getui: 20001 target user is invalid");
    let e = Getui::judge("<html>502</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

#[test]
fn coded_answers_of_any_status_are_judged_by_their_code() {
    use reqwest::StatusCode;
    assert!(matches!(
        Getui::read(
            StatusCode::UNAUTHORIZED,
            r#"{"code":10001,"msg":"token错误/失效"}"#
        ),
        Ok(Answer::TokenRejected(_))
    ));
    let e = Getui::read(
        StatusCode::UNAUTHORIZED,
        r#"{"code":10005,"msg":"调用频率超限"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = Getui::read(
        StatusCode::BAD_REQUEST,
        r#"{"code":20001,"msg":"参数错误"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = Getui::read(StatusCode::BAD_GATEWAY, "<html>502</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    // A code of its own on a 5xx (an internal error) is tried again, not taken as final.
    let e = Getui::read(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"code":50000,"msg":"系统繁忙"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert!(matches!(
        Getui::read(StatusCode::OK, r#"{"code":0,"msg":"","data":{}}"#),
        Ok(Answer::Done(_))
    ));
}

/// The auth answer: a token; over the rate or not an answer (an error page), tried again with
/// the page's first characters as the reason; other codes are refused credentials.
#[test]
fn auth_answers_are_told_apart() {
    use reqwest::StatusCode;
    let (token, lifetime) = Getui::auth_answer(
        r#"{"code":0,"msg":"success","data":{"expire_time":"99999999999999","token":"T"}}"#,
    )
    .unwrap();
    assert_eq!(token, "T");
    assert!(lifetime > std::time::Duration::from_secs(86_400));
    // Over the rate, of calls or of auth calls (GeTui's code table), or starting: not refused
    // credentials.
    for busy in [
        r#"{"code":10005,"msg":"调用频率超限"}"#,
        r#"{"code":10003,"msg":"每分钟鉴权频率超限"}"#,
        r#"{"code":2,"msg":"服务正在启动"}"#,
    ] {
        let e = Getui::auth_answer(busy).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{busy}: {e:?}");
        let e = Getui::read(StatusCode::UNAUTHORIZED, busy).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{busy}: {e:?}");
    }
    let page = format!("<html>{}</html>", "x".repeat(100_000));
    for unread in ["", page.as_str()] {
        let e = Getui::auth_answer(unread).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{e:?}");
        assert!(e.reason().len() < 300, "{}", e.reason().len());
    }
    let e = Getui::auth_answer(r#"{"code":10002,"msg":"appkey错误"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    // An outage with a code of its own: tried again, not taken for bad credentials.
    let busy = r#"{"code":-1,"msg":"busy"}"#;
    let e = Getui::read_auth(StatusCode::SERVICE_UNAVAILABLE, busy).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = Getui::read_auth(StatusCode::UNAUTHORIZED, r#"{"code":10002,"msg":"x"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
}
