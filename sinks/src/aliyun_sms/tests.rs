//! Aliyun SMS `SendSms` (dysmsapi 2017-05-25), against the request parameters and answers of
//! its API reference (`help.aliyun.com/document_detail/419273.html`). One `Code` answers the
//! whole call, so a refusal fails every number of it. The signature itself is checked against
//! Aliyun's published example in `util/sign.rs`.

use super::*;
use crate::util::kit::test_batch;

fn account() -> AliyunSms {
    AliyunSms::new(
        AliyunSmsConfig {
            access_key_id: "testId".into(),
            access_key_secret: "testSecret".into(),
            sign_name: "阿里云短信测试".into(),
            template_code: "SMS_154950909".into(),
            region: default_region(),
            endpoint: None,
        },
        reqwest::Client::new(),
    )
    .expect("the default endpoint")
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The signature covers every other parameter.
fn assert_signed(p: &[(String, String)]) {
    let unsigned: Vec<(String, String)> = p
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    assert_eq!(
        param(p, "Signature"),
        sign::aliyun_rpc("POST", "testSecret", &unsigned)
    );
}

#[test]
fn the_documented_parameters() {
    let b = test_batch(Channel::Sms, r#"{"params":{"code":"1234"}}"#);
    let receivers: [Receiver; 2] = ["15900000000".into(), "15900000001".into()];
    // 2017-07-12T02:42:19Z, the reference's example time.
    let p = account().payload(&b, &receivers, 1_499_827_339_000, "45e25e9b-0a6f");
    assert_eq!(param(&p, "Action"), "SendSms");
    assert_eq!(param(&p, "Version"), "2017-05-25");
    assert_eq!(param(&p, "PhoneNumbers"), "15900000000,15900000001");
    assert_eq!(param(&p, "SignName"), "阿里云短信测试");
    assert_eq!(param(&p, "TemplateCode"), "SMS_154950909");
    assert_eq!(param(&p, "TemplateParam"), r#"{"code":"1234"}"#);
    assert_eq!(param(&p, "Timestamp"), "2017-07-12T02:42:19Z");
    assert_eq!(param(&p, "SignatureMethod"), "HMAC-SHA1");
    assert_eq!(param(&p, "SignatureNonce"), "45e25e9b-0a6f");
    assert_eq!(param(&p, "OutId"), "m1");
    assert_signed(&p);
    // Without `params`, the rendered content is the template's `content` variable.
    let b = test_batch(Channel::Sms, r#"{"content":"您的验证码为1234"}"#);
    let p = account().payload(&b, &receivers, 0, "n");
    assert_eq!(
        param(&p, "TemplateParam"),
        r#"{"content":"您的验证码为1234"}"#
    );
}

#[test]
fn accepted() {
    let answer = r#"{"Message":"OK","RequestId":"F655A8D5-B967-440B-8683-DAD6FF8DE990","Code":"OK","BizId":"900619746936498440^0"}"#;
    assert!(matches!(AliyunSms::judge(answer), Ok(Delivered::All)));
}

#[test]
fn flow_control_is_retried() {
    let answer = r#"{"Message":"触发分钟级流控Permits:1","RequestId":"84B1B3B1-9A1A-4C9F-8E8A-0B3C2AFB7C5E","Code":"isv.BUSINESS_LIMIT_CONTROL"}"#;
    let e = AliyunSms::judge(answer).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert_eq!(
        e.reason(),
        "aliyun_sms: isv.BUSINESS_LIMIT_CONTROL 触发分钟级流控Permits:1"
    );
}

#[test]
fn refused_credentials_are_unauthorized() {
    for answer in [
        r#"{"RequestId":"7B1E3B4E-0B0C-4C1C-9A0F-5B6A1C2D3E4F","Message":"Specified signature is not matched with our calculation.","Code":"SignatureDoesNotMatch"}"#,
        r#"{"RequestId":"7B1E3B4E-0B0C-4C1C-9A0F-5B6A1C2D3E4F","Message":"Specified access key is not found.","Code":"InvalidAccessKeyId.NotFound"}"#,
    ] {
        let e = AliyunSms::judge(answer).unwrap_err();
        assert!(matches!(e, SendError::Unauthorized(_)), "{answer}: {e:?}");
    }
}

#[test]
fn a_bad_number_fails_the_whole_call() {
    let answer = r#"{"Message":"非法手机号","RequestId":"2184201F-BFB3-446B-B1F2-C746B7BF0657","Code":"isv.MOBILE_NUMBER_ILLEGAL"}"#;
    let e = AliyunSms::judge(answer).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    let e = AliyunSms::judge("<html>Service Unavailable</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

/// `SendBatchSms` (`help.aliyun.com/document_detail/102364.htm`): up to 100 numbers, and the
/// signature and template parameter arrays as long as the number array, in its order.
#[test]
fn several_messages_in_one_batch_call() {
    let a = test_batch(Channel::Sms, r#"{"params":{"code":"1111"}}"#);
    let mut b = test_batch(Channel::Sms, r#"{"content":"your parcel is here"}"#);
    std::sync::Arc::make_mut(&mut b.meta).message_id = "m2".into();
    let ra: [Receiver; 1] = ["15900000000".into()];
    let rb: [Receiver; 2] = ["15900000001".into(), "15900000002".into()];
    let p = account().batch_payload(&[(&a, &ra[..]), (&b, &rb[..])], 1_499_827_339_000, "n");
    assert_eq!(param(&p, "Action"), "SendBatchSms");
    assert_eq!(
        param(&p, "PhoneNumberJson"),
        r#"["15900000000","15900000001","15900000002"]"#
    );
    assert_eq!(
        param(&p, "SignNameJson"),
        r#"["阿里云短信测试","阿里云短信测试","阿里云短信测试"]"#
    );
    assert_eq!(
        param(&p, "TemplateParamJson"),
        r#"[{"code":"1111"},{"content":"your parcel is here"},{"content":"your parcel is here"}]"#
    );
    assert_eq!(param(&p, "TemplateCode"), "SMS_154950909");
    assert!(
        !p.iter()
            .any(|(k, _)| k == "PhoneNumbers" || k == "TemplateParam")
    );
    assert_signed(&p);
}

/// Numbers as the reference writes them: mainland ones national, others their country code and
/// number (`8521245567****`, no `+`); a job of another region dials its national numbers
/// with its own code, never as mainland ones.
#[test]
fn numbers_are_dialled_with_their_country_code() {
    let b = test_batch(Channel::Sms, r#"{"params":{"code":"1234"}}"#);
    let receivers: [Receiver; 2] = ["15900000000".into(), "+85212455670".into()];
    let p = account().payload(&b, &receivers, 1_499_827_339_000, "n");
    assert_eq!(param(&p, "PhoneNumbers"), "15900000000,85212455670");
    let mut hk = account();
    hk.dial_with(852);
    let receivers: [Receiver; 2] = ["12455670".into(), "+8615900000000".into()];
    let p = hk.payload(&b, &receivers, 1_499_827_339_000, "n");
    assert_eq!(param(&p, "PhoneNumbers"), "85212455670,8615900000000");
    let p = hk.batch_payload(&[(&b, &receivers[..])], 1_499_827_339_000, "n");
    assert_eq!(
        param(&p, "PhoneNumberJson"),
        r#"["85212455670","8615900000000"]"#
    );
    assert_signed(&p);
}

/// A refusal naming a number or parameter may be one message's (a shared call is made again
/// in halves); credentials, balance and signature refusals are the account's.
#[test]
fn which_refusals_may_be_one_messages() {
    let refusal = |code: &str| {
        AliyunSms::judge(&format!(
            r#"{{"Code":"{code}","Message":"m","RequestId":"r"}}"#
        ))
        .unwrap_err()
    };
    for one in [
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.TEMPLATE_PARAMS_ILLEGAL",
        "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
    ] {
        assert!(AliyunSms::refuses_one(&refusal(one)), "{one}");
    }
    for all in [
        "isv.AMOUNT_NOT_ENOUGH",
        "SignatureDoesNotMatch",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_TEMPLATE_ILLEGAL",
        // The account's daily cap: every half would be refused alike.
        "isv.DAY_LIMIT_CONTROL",
    ] {
        assert!(!AliyunSms::refuses_one(&refusal(all)), "{all}");
        assert!(!AliyunSms::refuses_one_number(&refusal(all)), "{all}");
    }
    // One message's call is halved by its numbers only for a number's fault: its one
    // parameter set is every half's.
    for number in [
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
    ] {
        assert!(AliyunSms::refuses_one_number(&refusal(number)), "{number}");
    }
    for content in [
        "isv.TEMPLATE_PARAMS_ILLEGAL",
        "isv.INVALID_JSON_PARAM",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.BLACK_KEY_CONTROL_LIMIT",
    ] {
        assert!(AliyunSms::refuses_one(&refusal(content)), "{content}");
        assert!(
            !AliyunSms::refuses_one_number(&refusal(content)),
            "{content}"
        );
    }
}

/// The call goes to the endpoint's root (`POST /`), the default's or the account's.
#[test]
fn the_call_url_is_the_endpoint() {
    assert_eq!(account().url.as_str(), "https://dysmsapi.aliyuncs.com/");
    let mut config = account().config;
    config.endpoint = Some("http://127.0.0.1:9000/aliyun/".into());
    let a = AliyunSms::new(config, reqwest::Client::new()).unwrap();
    assert_eq!(a.url.as_str(), "http://127.0.0.1:9000/aliyun/");
}

/// `Timestamp` is what the format string `%Y-%m-%dT%H:%M:%SZ` writes, from 1970 to 2200 (a
/// second's milliseconds dropped, not rounded).
#[test]
fn the_timestamp_is_iso_8601_to_the_second() {
    assert_eq!(timestamp(1_499_827_339_999), "2017-07-12T02:42:19Z");
    let mut ms = 0i64;
    while ms < 7_258_118_400_000 {
        let by_format = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert_eq!(timestamp(ms), by_format, "{ms}");
        ms += 86_399_937;
    }
}

/// Aliyun's gateway answers throttling and credential errors with HTTP 400 or 404 and its
/// `Code` in the body: the code decides (retried, or the account's credentials), not the
/// status; a body without one is judged by the status.
#[test]
fn an_answers_code_decides_whatever_its_status() {
    use reqwest::StatusCode;
    let throttled = r#"{"RequestId":"A1","Message":"Request was denied due to user flow control.","Code":"Throttling.User"}"#;
    let e = AliyunSms::read(StatusCode::BAD_REQUEST, throttled).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    for code in ["Throttling", "Throttling.Api"] {
        let answer = format!(
            r#"{{"RequestId":"A1","Message":"Request was denied due to flow control.","Code":"{code}"}}"#
        );
        let e = AliyunSms::read(StatusCode::BAD_REQUEST, &answer).unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{code}: {e:?}");
    }
    let signature = r#"{"RequestId":"A2","Message":"Specified signature is not matched with our calculation.","Code":"SignatureDoesNotMatch"}"#;
    let e = AliyunSms::read(StatusCode::BAD_REQUEST, signature).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let key = r#"{"RequestId":"A3","Message":"Specified access key is not found.","Code":"InvalidAccessKeyId.NotFound"}"#;
    let e = AliyunSms::read(StatusCode::NOT_FOUND, key).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    // An internal error with a code of its own: the status says to try again.
    let internal = r#"{"RequestId":"A4","Message":"The request processing has failed due to some unknown error.","Code":"InternalError"}"#;
    let e = AliyunSms::read(StatusCode::INTERNAL_SERVER_ERROR, internal).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = AliyunSms::read(StatusCode::SERVICE_UNAVAILABLE, "<html>busy</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = AliyunSms::read(StatusCode::BAD_REQUEST, "<html>bad</html>").unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
}

/// Two calls for one message in one millisecond (its receivers on two workers, or a retry)
/// never sign with the same `SignatureNonce`.
#[test]
fn every_call_has_a_nonce_of_its_own() {
    let a = nonce("m1", 1_700_000_000_000);
    let b = nonce("m1", 1_700_000_000_000);
    assert_ne!(a, b);
    assert!(a.starts_with("m1-1700000000000-"), "{a}");
}
