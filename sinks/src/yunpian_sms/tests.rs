//! Yunpian SMS v2, against the requests and answers of its API documentation
//! (`www.yunpian.com/official/document/sms/zh_CN/domestic_batch_send`): one `data` entry per
//! number on success; a whole-call error is HTTP 400 (401/403) with `code`, `msg`, `detail`.

use reqwest::StatusCode;
use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

fn account(tpl_id: Option<i64>) -> YunpianSms {
    YunpianSms::new(
        YunpianSmsConfig {
            apikey: "9b11127a9701975c734b8aee81ee3526".into(),
            tpl_id,
            endpoint: None,
        },
        reqwest::Client::new(),
    )
    .expect("the default endpoint")
}

fn numbers(list: &[&str]) -> Vec<tidings_model::Receiver> {
    list.iter().map(|s| (*s).into()).collect()
}

#[test]
fn the_documented_template_request() {
    // tpl_value is `urlencode("#code#") = urlencode("1234") & ...`, as the documentation
    // builds it; the form is then encoded once more as a whole.
    let b = test_batch(
        Channel::Sms,
        r#"{"params":{"code":"1234","company":"云片网"}}"#,
    );
    let form = account(Some(1)).payload(&b, &numbers(&["15205201314", "15205201315"]));
    assert_eq!(
        form,
        vec![
            (
                "apikey".to_string(),
                "9b11127a9701975c734b8aee81ee3526".to_string()
            ),
            ("mobile".to_string(), "15205201314,15205201315".to_string()),
            ("tpl_id".to_string(), "1".to_string()),
            (
                "tpl_value".to_string(),
                "%23code%23=1234&%23company%23=%E4%BA%91%E7%89%87%E7%BD%91".to_string()
            ),
        ]
    );
}

#[test]
fn without_a_template_the_rendered_text_is_sent() {
    let b = test_batch(
        Channel::Sms,
        r#"{"content":"【云片网】您的订单已经发货，请注意查收"}"#,
    );
    let form = account(None).payload(&b, &numbers(&["15205201314"]));
    assert_eq!(
        form[2],
        (
            "text".to_string(),
            "【云片网】您的订单已经发货，请注意查收".to_string()
        )
    );
}

#[test]
fn one_entry_per_number() {
    let answer = json!({"total_count": 1, "total_fee": "0.0500", "unit": "RMB", "data": [
        {"code": 0, "count": 1, "fee": 0.05, "mobile": "15205201314", "msg": "发送成功",
         "sid": 9527, "unit": "RMB"},
        {"code": 22, "count": 0, "fee": 0, "mobile": "15205201315",
         "msg": "验证码类短信1小时内同一手机号发送次数不能超过3次", "sid": 0, "unit": "RMB"}]})
    .to_string();
    let Delivered::Each(each) = YunpianSms::judge(
        StatusCode::OK,
        &answer,
        &numbers(&["15205201314", "15205201315", "15205201316"]),
    )
    .unwrap() else {
        panic!("Yunpian answers per number");
    };
    assert_eq!(each[0], Ok(()));
    // Its frequency limits do not pass within a backoff: final, for that number alone.
    assert!(matches!(&each[1], Err(SendError::Permanent(r)) if r.starts_with("yunpian_sms: 22 ")));
    // No entry for a number: not known to be sent, so tried again.
    assert!(
        matches!(&each[2], Err(SendError::Transient(r)) if r.contains("no answer for 15205201316"))
    );
}

#[test]
fn whole_call_errors() {
    let one = numbers(&["15205201314"]);
    // An invalid apikey.
    let answer = json!({"http_status_code": 400, "code": -1, "msg": "非法的apikey",
        "detail": "请检查的apikey是否正确"})
    .to_string();
    let e = YunpianSms::judge(StatusCode::BAD_REQUEST, &answer, &one).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    // A whole-call frequency limit is final as well.
    let answer = json!({"http_status_code": 400, "code": 33, "msg": "超过频率",
        "detail": "同一个手机号同一验证码模板每30秒只能发送一条"})
    .to_string();
    let e = YunpianSms::judge(StatusCode::BAD_REQUEST, &answer, &one).unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    // Yunpian's whole-call codes: the IP not allowed is the account's; the call rate over the
    // account's and Yunpian's own failures are retried; the call quota and the settings are
    // final.
    for (code, transient, unauthorized) in [
        (-3, false, true),
        (-4, false, false),
        (-5, true, false),
        (-50, true, false),
        (-51, true, false),
        (-53, true, false),
        (-54, false, false),
        (-57, false, false),
    ] {
        let answer =
            json!({"http_status_code": 400, "code": code, "msg": "m", "detail": "d"}).to_string();
        let e = YunpianSms::judge(StatusCode::BAD_REQUEST, &answer, &one).unwrap_err();
        assert_eq!(
            (
                matches!(e, SendError::Transient(_)),
                matches!(e, SendError::Unauthorized(_))
            ),
            (transient, unauthorized),
            "{code}: {e:?}"
        );
    }
    // A gateway's error page: classified by its status.
    let e =
        YunpianSms::judge(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>", &one).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

#[test]
fn messages_of_one_text_share_a_call_and_number_refusals_are_split() {
    let a = test_batch(Channel::Sms, r#"{"content":"【云片网】您的订单已经发货"}"#);
    let mut b = test_batch(Channel::Sms, r#"{"content":"【云片网】您的订单已经发货"}"#);
    assert!(YunpianSms::shares_call(&a, &b));
    b = test_batch(Channel::Sms, r#"{"content":"【云片网】明天见"}"#);
    assert!(!YunpianSms::shares_call(&a, &b));
    // One number however it is written; a US number is not the mainland one with its digits.
    let number = |n: &str| YunpianSms::number(&n.into());
    assert_eq!(number("+8615205201314"), number("15205201314"));
    assert_eq!(number("008615205201314"), number("15205201314"));
    assert_eq!(number("+12015550123"), number("0012015550123"));
    assert_ne!(number("+12015550123"), number("2015550123"));
    // A whole-call refusal that names a number is split; one of the shared text or of the
    // account is not (splitting could not find a message at fault).
    let refusal = |code: i64, detail: &str| {
        let answer = json!({"http_status_code": 400, "code": code, "msg": "请求参数格式错误", "detail": detail});
        YunpianSms::judge(
            StatusCode::BAD_REQUEST,
            &answer.to_string(),
            &numbers(&["15205201314"]),
        )
        .unwrap_err()
    };
    assert!(YunpianSms::refuses_one(&refusal(
        2,
        "参数 mobile 格式不正确"
    )));
    assert!(YunpianSms::refuses_one(&refusal(2, "手机号格式不正确")));
    // A code it calls final on a 5xx (an internal error with a code) is tried again.
    let e = YunpianSms::judge(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"http_status_code": 500, "code": 1, "msg": "系统错误"}).to_string(),
        &numbers(&["15205201314"]),
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert!(!YunpianSms::refuses_one(&refusal(2, "text is required")));
    assert!(!YunpianSms::refuses_one(&refusal(33, "超过频率")));
    assert!(!YunpianSms::refuses_one(&refusal(
        -1,
        "请检查的apikey是否正确"
    )));
}

#[test]
fn a_job_regions_national_numbers_are_dialled_with_its_code() {
    // A mainland job's numbers go as written; a job of region HK holds `+852 9123 4567` as
    // `91234567`, which goes out in E.164 (not as a mainland number) and finds its answer.
    let receivers = numbers(&["15205201314", "+447700900123"]);
    assert!(matches!(
        account(None).dialled(&receivers),
        Cow::Borrowed(_)
    ));
    let mut hk = account(None);
    hk.dial_with(852);
    let receivers = numbers(&["91234567", "+8615205201314"]);
    let dialled = hk.dialled(&receivers);
    assert_eq!(&*dialled, &numbers(&["+85291234567", "+8615205201314"])[..]);
    let b = test_batch(Channel::Sms, r#"{"content":"【云片网】您的验证码是1234"}"#);
    let p = hk.payload(&b, &dialled);
    assert!(p.contains(&("mobile".into(), "+85291234567,+8615205201314".into())));
    let answer = json!({"total_count": 2, "data": [
        {"code": 0, "msg": "发送成功", "mobile": "+85291234567"},
        {"code": 0, "msg": "发送成功", "mobile": "15205201314"}]})
    .to_string();
    let Delivered::Each(each) = YunpianSms::judge(StatusCode::OK, &answer, &dialled).unwrap()
    else {
        panic!("Yunpian answers per number");
    };
    assert_eq!(each, vec![Ok(()), Ok(())]);
}

#[test]
fn answers_are_matched_to_numbers_however_they_are_written() {
    let answer = json!({"total_count": 3, "data": [
        {"code": 0, "msg": "发送成功", "mobile": "15205201314"},
        {"code": 2, "msg": "请求参数格式错误", "mobile": "+12015550123"},
        {"code": 0, "msg": "发送成功", "mobile": "447700900123"}]})
    .to_string();
    let Delivered::Each(each) = YunpianSms::judge(
        StatusCode::OK,
        &answer,
        &numbers(&[
            "+8615205201314",
            "2015550123",
            "+12015550123",
            "+447700900123",
        ]),
    )
    .unwrap() else {
        panic!("Yunpian answers per number");
    };
    assert_eq!(each[0], Ok(()));
    // Not the US number's answer, though it ends alike.
    assert!(matches!(&each[1], Err(SendError::Transient(r)) if r.contains("no answer")));
    assert!(matches!(&each[2], Err(SendError::Permanent(r)) if r.starts_with("yunpian_sms: 2 ")));
    // An answer that drops the `+` still finds its number.
    assert_eq!(each[3], Ok(()));
}

/// A call's numbers are each looked up once, in any order of `data`; a number named twice
/// takes its first entry, as written before by its digits.
#[test]
fn a_full_call_is_judged_number_by_number() {
    let all: Vec<String> = (0..200).map(|i| format!("152052{i:05}")).collect();
    let mut data: Vec<serde_json::Value> = all
        .iter()
        .rev()
        .map(|m| json!({"code": 0, "msg": "发送成功", "mobile": m}))
        .collect();
    data.push(json!({"code": 22, "msg": "later", "mobile": all[3]}));
    // Only by its digits: the first such entry.
    data.push(json!({"code": 0, "msg": "发送成功", "mobile": "+8613900000001"}));
    data.push(json!({"code": 22, "msg": "later", "mobile": "8613900000001"}));
    let answer = json!({"total_count": 202, "data": data}).to_string();
    let mut receivers: Vec<&str> = all.iter().map(String::as_str).collect();
    receivers.push("008613900000001");
    let Delivered::Each(each) =
        YunpianSms::judge(StatusCode::OK, &answer, &numbers(&receivers)).unwrap()
    else {
        panic!("Yunpian answers per number");
    };
    assert_eq!(each.len(), 201);
    assert!(each.iter().all(Result::is_ok), "{each:?}");
}

/// The call goes to the template or the text endpoint under the account's base URL, with or
/// without a trailing slash on it.
#[test]
fn the_call_url_is_the_documented_path_under_the_endpoint() {
    assert_eq!(
        account(Some(1)).url.as_str(),
        "https://sms.yunpian.com/v2/sms/tpl_batch_send.json"
    );
    assert_eq!(
        account(None).url.as_str(),
        "https://sms.yunpian.com/v2/sms/batch_send.json"
    );
    for endpoint in [
        "http://127.0.0.1:9000/yunpian",
        "http://127.0.0.1:9000/yunpian/",
    ] {
        let a = YunpianSms::new(
            YunpianSmsConfig {
                apikey: "k".into(),
                tpl_id: None,
                endpoint: Some(endpoint.into()),
            },
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(
            a.url.as_str(),
            "http://127.0.0.1:9000/yunpian/v2/sms/batch_send.json"
        );
    }
}

/// The answer's two readings, the borrowed structs of the documented shape and the `Value`
/// every other answer gets, judge every answer alike: generated around the documented shape
/// (each field there or not, of its type or another, `null`, whole and other numbers, arrays
/// where objects go, numbers answered twice or written another way), at several HTTP statuses.
mod both_readings {
    use super::*;
    use crate::util::kit::objects_of;
    use proptest::prelude::*;
    use serde_json::Value;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!(true)),
            Just(json!(0)),
            Just(json!(22)),
            Just(json!(-1)),
            Just(json!(-51)),
            Just(json!(2.5)),
            Just(json!(18_446_744_073_709_551_615u64)),
            Just(json!("15205201314")),
            Just(json!("+8615205201315")),
            Just(json!("008615205201314")),
            Just(json!("发送成功")),
            Just(json!("a \"quoted\" reason\n")),
            Just(json!([])),
        ]
    }

    fn entry() -> impl Strategy<Value = Value> {
        let fields = objects_of(
            &["mobile", "code", "msg"],
            leaf(),
            vec![("sid", json!(9527)), ("fee", json!(0.05))],
        );
        prop_oneof![4 => fields, 1 => leaf()]
    }

    fn answer() -> impl Strategy<Value = String> {
        let data = prop_oneof![
            4 => proptest::collection::vec(entry(), 0..4).prop_map(Value::Array),
            1 => leaf(),
        ];
        let fields = (
            objects_of(
                &["code", "msg", "detail"],
                leaf(),
                vec![("total_count", json!(1))],
            ),
            proptest::option::of(data),
        )
            .prop_map(|(mut answer, data)| {
                if let Some(data) = data {
                    answer["data"] = data;
                }
                answer.to_string()
            });
        prop_oneof![
            8 => fields,
            1 => leaf().prop_map(|v| v.to_string()),
            1 => Just("<html>bad gateway</html>".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn both_readings_judge_alike(
            answer in answer(),
            status in prop_oneof![Just(200u16), Just(400), Just(502)],
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let receivers = numbers(&["15205201314", "+8615205201315", "15205201316"]);
            let by_value = format!("{:?}", YunpianSms::judge_value(status, &answer, &receivers));
            prop_assert_eq!(
                &format!("{:?}", YunpianSms::judge(status, &answer, &receivers)),
                &by_value
            );
            if let Ok(Object(read)) = serde_json::from_str::<Object<BatchSendAnswer>>(&answer) {
                let by_struct = YunpianSms::judge_read(status, &answer, read, &receivers);
                prop_assert_eq!(format!("{by_struct:?}"), by_value);
            }
        }
    }

    /// The documented answers are read by the structs, not by the `Value` fallback; keys
    /// named twice are not, and are judged as before.
    #[test]
    fn the_documented_answers_are_read_by_the_structs() {
        for answer in [
            r#"{"total_count": 1, "total_fee": "0.0500", "unit": "RMB", "data": [{"code": 0, "count": 1, "fee": 0.05, "mobile": "15205201314", "msg": "发送成功", "sid": 9527, "unit": "RMB"}]}"#,
            r#"{"http_status_code": 400, "code": -1, "msg": "非法的apikey", "detail": "请检查的apikey是否正确"}"#,
        ] {
            assert!(
                serde_json::from_str::<Object<BatchSendAnswer>>(answer).is_ok(),
                "{answer}"
            );
        }
        let receivers = numbers(&["15205201314"]);
        let twice = r#"{"data": [{"mobile": "15205201314", "code": 0, "code": 22}], "code": null, "code": -1}"#;
        assert!(serde_json::from_str::<Object<BatchSendAnswer>>(twice).is_err());
        assert_eq!(
            format!("{:?}", YunpianSms::judge(StatusCode::OK, twice, &receivers)),
            format!(
                "{:?}",
                YunpianSms::judge_value(StatusCode::OK, twice, &receivers)
            )
        );
    }
}
