//! WeCom app message, against the requests and answers of WeCom's server API documentation
//! (`cgi-bin/gettoken`, `cgi-bin/message/send`, `cgi-bin/message/recall`): an accepted call
//! names the users it could not reach in `invaliduser` (they fail alone) and answers a
//! `msgid` (what a recall takes).

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;
use crate::util::token::{Answer, errcode_answer};

fn app() -> WecomApp {
    WecomApp::new(
        WecomAppConfig {
            corp_id: "ww1234567890".into(),
            corp_secret: "secret".into(),
            agent_id: 1,
            endpoint: None,
        },
        reqwest::Client::new(),
    )
}

fn users(list: &[&str]) -> Vec<tidings_model::Receiver> {
    list.iter().map(|s| (*s).into()).collect()
}

fn answer(body: &str) -> Result<Answer<Value>, SendError> {
    errcode_answer(NAME, body, &TOKEN_CODES, &BUSY_CODES)
}

#[test]
fn the_documented_message_bodies() {
    let b = test_batch(
        Channel::EnterpriseWeChat,
        r#"{"content":"你的快递已到，请携带工卡前往邮件中心领取。"}"#,
    );
    assert_eq!(
        app().payload(&b, &users(&["UserID1", "UserID2", "UserID3"])),
        json!({"touser": "UserID1|UserID2|UserID3", "agentid": 1, "msgtype": "text",
            "text": {"content": "你的快递已到，请携带工卡前往邮件中心领取。"}})
    );
    assert_eq!(app().payload(&b, &users(&["@all"]))["touser"], "@all");
    let b = test_batch(
        Channel::EnterpriseWeChat,
        r#"{"sendType":"textcard","title":"领奖通知","description":"恭喜你抽中iPhone 7一台","url":"URL"}"#,
    );
    assert_eq!(
        app().payload(&b, &users(&["UserID1"])),
        json!({"touser": "UserID1", "agentid": 1, "msgtype": "textcard",
            "textcard": {"title": "领奖通知", "description": "恭喜你抽中iPhone 7一台", "url": "URL"}})
    );
}

/// Users without a license for the app are not reached: they fail alone too, and are not
/// booked as reached for a recall.
#[test]
fn unlicensed_users_fail_alone() {
    let body = r#"{"errcode":0,"errmsg":"ok","invaliduser":"","invalidparty":"","invalidtag":"","unlicenseduser":"userid3|UserId4","msgid":"m","response_code":"x"}"#;
    let Ok(Answer::Done(v)) = answer(body) else {
        panic!("accepted");
    };
    let Delivered::Tracked {
        each: Some(each), ..
    } = WecomApp::delivered(&v, &users(&["userid1", "userid3", "userid4"]))
    else {
        panic!("per user");
    };
    assert_eq!(each[0], Ok(()));
    assert!(
        matches!(&each[1], Err(SendError::Permanent(r)) if r == "wecom_app: unlicenseduser userid3")
    );
    assert!(matches!(&each[2], Err(SendError::Permanent(_))));
}

#[test]
fn invalid_users_fail_alone_and_the_msgid_is_kept() {
    let body = r#"{"errcode":0,"errmsg":"ok","invaliduser":"userid1|userid2","invalidparty":"","invalidtag":"","unlicenseduser":"","msgid":"xxxx","response_code":"xyzxyz"}"#;
    let Ok(Answer::Done(v)) = answer(body) else {
        panic!("accepted");
    };
    match WecomApp::delivered(&v, &users(&["userid1", "userid2", "userid3"])) {
        Delivered::Tracked {
            reference,
            each: Some(each),
        } => {
            assert_eq!(reference, "xxxx");
            assert!(
                matches!(&each[0], Err(SendError::Permanent(r)) if r == "wecom_app: invaliduser userid1")
            );
            assert!(matches!(&each[1], Err(SendError::Permanent(_))));
            assert_eq!(each[2], Ok(()));
        }
        other => panic!("{other:?}"),
    }
    // Everyone reached: every receiver accepted.
    let v = json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "yyyy"});
    assert!(matches!(
        WecomApp::delivered(&v, &users(&["userid3"])),
        Delivered::Tracked { each: None, .. }
    ));
}

#[test]
fn token_busy_and_refused_answers() {
    for body in [
        r#"{"errcode":42001,"errmsg":"access_token expired"}"#,
        r#"{"errcode":40014,"errmsg":"invalid access_token"}"#,
    ] {
        assert!(
            matches!(answer(body), Ok(Answer::TokenRejected(_))),
            "{body}"
        );
    }
    for body in [
        r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
        r#"{"errcode":-1,"errmsg":"system busy"}"#,
    ] {
        assert!(
            matches!(answer(body), Err(SendError::Transient(_))),
            "{body}"
        );
    }
    // Every user, party and tag invalid: nobody can be reached.
    let e = answer(r#"{"errcode":81013,"errmsg":"user & party & tag all invalid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
}

#[test]
fn the_documented_gettoken_answers() {
    let (token, lifetime) = token_answer(
        NAME,
        r#"{"errcode":0,"errmsg":"ok","access_token":"accesstoken000001","expires_in":7200}"#,
    )
    .unwrap();
    assert_eq!(
        (token.as_str(), lifetime.as_secs()),
        ("accesstoken000001", 7200)
    );
    let e = token_answer(NAME, r#"{"errcode":40001,"errmsg":"invalid credential"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
}

#[test]
fn invaliduser_matches_the_userid_in_any_case() {
    let v = json!({"errcode": 0, "errmsg": "ok", "invaliduser": "zhangsan", "msgid": "m"});
    match WecomApp::delivered(&v, &users(&["ZhangSan", "lisi"])) {
        Delivered::Tracked {
            each: Some(each), ..
        } => {
            assert!(matches!(&each[0], Err(SendError::Permanent(_))), "{each:?}");
            assert_eq!(each[1], Ok(()));
        }
        other => panic!("{other:?}"),
    }
}
