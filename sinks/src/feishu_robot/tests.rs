//! Feishu custom robot, against the request and answers of Feishu's custom-bot guide
//! (`open.feishu.cn/document/client-docs/bot-v3/add-custom-bot`). One message per group: the
//! answer's `code` decides every receiver.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

#[test]
fn the_documented_signed_text_message() {
    // The guide's example: timestamp 1599360473 (seconds), msg_type text. The sign is
    // base64(HmacSHA256(key = "1599360473\ndemo", message = "")), computed with Python.
    let b = test_batch(Channel::FeiShuRobot, r#"{"content":"request example"}"#);
    assert_eq!(
        FeishuRobot::payload("demo", 1_599_360_473, &b),
        json!({"timestamp": "1599360473",
            "sign": "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8=",
            "msg_type": "text", "content": {"text": "request example"}})
    );
}

#[test]
fn accepted_in_either_answer_form() {
    assert!(matches!(
        FeishuRobot::judge(r#"{"code":0,"data":{},"msg":"success"}"#),
        Ok(Delivered::All)
    ));
    // Robots created before the v2 hook answer with StatusCode.
    assert!(matches!(
        FeishuRobot::judge(r#"{"Extra":null,"StatusCode":0,"StatusMessage":"success"}"#),
        Ok(Delivered::All)
    ));
}

#[test]
fn a_refused_signature_is_unauthorized() {
    let e = FeishuRobot::judge(
        r#"{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    assert!(
        e.reason()
            .starts_with("feishu_robot: 19021 sign match fail")
    );
}

#[test]
fn frequency_limits_are_retried() {
    // 100 per minute and 5 per second per robot; 11232 when the platform is busy.
    for body in [
        r#"{"code":9499,"data":{},"msg":"too many request"}"#,
        r#"{"code":11232,"data":{},"msg":"frequency limited"}"#,
    ] {
        let e = FeishuRobot::judge(body).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{body}: {e:?}");
    }
}

#[test]
fn other_codes_fail_for_good_and_an_unreadable_answer_is_retried() {
    let e = FeishuRobot::judge(r#"{"code":19001,"data":{},"msg":"param invalid"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    // Its guide's other answers: a body it cannot take, a missing keyword (the content's
    // fault), an address off the IP list (the account's).
    let e = FeishuRobot::judge(r#"{"code":9499,"msg":"Bad Request","data":{}}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = FeishuRobot::judge(r#"{"code":19024,"msg":"Key Words Not Found"}"#).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = FeishuRobot::judge(r#"{"code":19022,"msg":"Ip Not Allowed"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = FeishuRobot::judge("upstream connect error").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

/// Feishu sends its rate limit with HTTP 400: the body's code decides, not the status; a
/// body without a code is judged by the status, and a 200 without a code is not sent.
#[test]
fn an_answers_code_decides_whatever_its_status() {
    use reqwest::StatusCode;
    let limited = r#"{"code":9499,"msg":"too many request","data":{}}"#;
    let e = FeishuRobot::read(StatusCode::BAD_REQUEST, limited).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = FeishuRobot::read(
        StatusCode::BAD_REQUEST,
        r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = FeishuRobot::read(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"code":99991,"msg":"x"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = FeishuRobot::read(
        StatusCode::BAD_REQUEST,
        r#"{"code":19001,"msg":"param invalid"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = FeishuRobot::read(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = FeishuRobot::read(StatusCode::NOT_FOUND, "no such hook").unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    for no_code in ["{}", "null", r#"{"error":"x"}"#, r#"{"code":"19021"}"#] {
        let e = FeishuRobot::read(StatusCode::OK, no_code).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{no_code}: {e:?}");
    }
    assert!(matches!(
        FeishuRobot::read(StatusCode::OK, r#"{"code":0,"data":{},"msg":"success"}"#),
        Ok(Delivered::All)
    ));
}
