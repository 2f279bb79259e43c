//! Tencent Cloud SMS `SendSms` (2021-01-11), against the request and answers of its API
//! documentation (`cloud.tencent.com/document/api/382/55981`): one `SendStatusSet` entry per
//! number, or a request-level `Error`.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

fn account() -> TencentSms {
    TencentSms::new(
        TencentSmsConfig {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE".into(),
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE".into(),
            sdk_app_id: "1400006666".into(),
            sign_name: "腾讯云".into(),
            template_id: "1110".into(),
            region: default_region(),
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
fn the_documented_request() {
    let b = test_batch(Channel::Sms, r#"{"params":["12345"]}"#);
    let v: serde_json::Value =
        serde_json::from_str(&account().payload(&b, &numbers(&["13711112222"]))).unwrap();
    // A mainland number without a country code becomes E.164; the message id travels as
    // SessionContext (it comes back in delivery receipts).
    assert_eq!(
        v,
        json!({"PhoneNumberSet": ["+8613711112222"], "SmsSdkAppId": "1400006666",
            "SignName": "腾讯云", "TemplateId": "1110", "TemplateParamSet": ["12345"],
            "SessionContext": "m1"})
    );
    // Without `params`, the rendered content is the one template parameter.
    let b = test_batch(Channel::Sms, r#"{"content":"654321"}"#);
    let v: serde_json::Value =
        serde_json::from_str(&account().payload(&b, &numbers(&["+85298765432"]))).unwrap();
    assert_eq!(v["TemplateParamSet"], json!(["654321"]));
    assert_eq!(v["PhoneNumberSet"], json!(["+85298765432"]));
}

#[test]
fn national_numbers_are_dialled_with_the_job_regions_code() {
    // A job of region HK holds `+852 9876 5432` as `98765432`: dialled as +852, not +86, and
    // its status (answered in E.164) found again; a mainland number stays +86.
    let mut a = account();
    a.dial_with(852);
    let receivers = numbers(&["98765432", "+8613711112222"]);
    let b = test_batch(Channel::Sms, r#"{"params":["12345"]}"#);
    let v: serde_json::Value = serde_json::from_str(&a.payload(&b, &receivers)).unwrap();
    assert_eq!(
        v["PhoneNumberSet"],
        json!(["+85298765432", "+8613711112222"])
    );
    let answer = json!({"Response": {"SendStatusSet": [
        {"PhoneNumber": "+85298765432", "Code": "Ok", "Message": "send success"},
        {"PhoneNumber": "+8613711112222", "Code": "Ok", "Message": "send success"}],
        "RequestId": "r"}})
    .to_string();
    let Delivered::Each(each) = TencentSms::judge(&answer, &receivers, 852).unwrap() else {
        panic!("SendSms answers per number");
    };
    assert_eq!(each, vec![Ok(()), Ok(())]);
    // Read as a mainland number it would have no status of its own.
    let Delivered::Each(each) = TencentSms::judge(&answer, &receivers, 86).unwrap() else {
        panic!("SendSms answers per number");
    };
    assert!(each[0].is_err());
}

#[test]
fn one_status_per_number() {
    let answer = r#"{"Response": {"SendStatusSet": [
        {"SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": "+8618511122233",
         "Fee": 1, "SessionContext": "test", "Code": "Ok", "Message": "send success",
         "IsoCode": "CN"},
        {"SerialNo": "", "PhoneNumber": "+8618511122266", "Fee": 0, "SessionContext": "test",
         "Code": "LimitExceeded.PhoneNumberDailyLimit",
         "Message": "the number of sms messages sent from a single mobile number every day exceeds the upper limit",
         "IsoCode": "CN"}],
        "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}}"#;
    let Delivered::Each(each) = TencentSms::judge(
        answer,
        &numbers(&["18511122233", "+8618511122266", "18511122299"]),
        86,
    )
    .unwrap() else {
        panic!("SendSms answers per number");
    };
    assert_eq!(each[0], Ok(()));
    // The daily cap of one number fails that number alone, for good.
    assert!(
        matches!(&each[1], Err(SendError::Permanent(r)) if r.contains("LimitExceeded.PhoneNumberDailyLimit")),
        "{:?}",
        each[1]
    );
    // A number the answer does not name is not taken as sent.
    assert!(
        matches!(&each[2], Err(SendError::Permanent(r)) if r.contains("no status for +8618511122299"))
    );
}

#[test]
fn request_level_errors() {
    let error = |code: &str, message: &str| {
        json!({"Response": {"Error": {"Code": code, "Message": message},
            "RequestId": "b5b41468-520d-4192-b42f-595cc34b6c1c"}})
        .to_string()
    };
    let judge =
        |body: String| TencentSms::judge(&body, &numbers(&["13711112222"]), 86).unwrap_err();
    let e = judge(error(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated. Please check your signature is correct.",
    ));
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = judge(error(
        "RequestLimitExceeded",
        "Your current request times equals to `21` in a second, which exceeds the frequency limit `20` for a second. Please reduce the frequency of calls.",
    ));
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = judge(error("InternalError.Timeout", "request timeout"));
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = judge(error(
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "template is not approved or request content does not match the approved template content",
    ));
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(
        e.reason()
            .starts_with("tencent_sms: FailedOperation.TemplateIncorrectOrUnapproved")
    );
}

/// A call's 200 numbers are each looked up once; a number named twice takes its first status.
#[test]
fn a_full_call_is_judged_number_by_number() {
    let all: Vec<String> = (0..200).map(|i| format!("+86185111{i:05}")).collect();
    let mut set: Vec<serde_json::Value> = all
        .iter()
        .rev()
        .map(|n| json!({"PhoneNumber": n, "Code": "Ok", "Message": "send success"}))
        .collect();
    set.push(json!({"PhoneNumber": all[7], "Code": "FailedOperation", "Message": "later"}));
    let answer = json!({"Response": {"SendStatusSet": set}}).to_string();
    let receivers: Vec<&str> = all.iter().map(String::as_str).collect();
    let Delivered::Each(each) = TencentSms::judge(&answer, &numbers(&receivers), 86).unwrap()
    else {
        panic!("SendSms answers per number");
    };
    assert_eq!(each.len(), 200);
    assert!(each.iter().all(Result::is_ok), "{each:?}");
}

/// TC3's signing key is made once a UTC day and kept: the calls of a day share it, the first
/// call of the next day makes that day's.
#[test]
fn the_signing_key_is_kept_for_its_day() {
    let a = account();
    let secret = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    let first = a.signing_key(1_551_052_800);
    let last = a.signing_key(1_551_139_199);
    assert!(std::sync::Arc::ptr_eq(&first, &last));
    assert_eq!(*first, sign::Tc3Key::new(secret, "sms", 1_551_100_000));
    let next = a.signing_key(1_551_139_200);
    assert_eq!(next.day, first.day + 1);
    assert_eq!(*next, sign::Tc3Key::new(secret, "sms", 1_551_139_200));
}

/// The call goes to the endpoint's root (`POST /`), the default's or the account's.
#[test]
fn the_call_url_is_the_endpoint() {
    assert_eq!(account().url.as_str(), "https://sms.tencentcloudapi.com/");
    let mut config = account().config;
    config.endpoint = Some("http://127.0.0.1:9000/tencent".into());
    let a = TencentSms::new(config, reqwest::Client::new()).unwrap();
    assert_eq!(a.url.as_str(), "http://127.0.0.1:9000/tencent/");
}

/// The answer's two readings, the borrowed structs of the documented shape and the `Value`
/// every other answer gets, judge every answer alike: generated around the documented shape
/// (each field present or not, of its type or of another, `null`, arrays where objects go,
/// numbers named twice, strings with escapes), whichever reading takes it.
mod both_readings {
    use super::*;
    use crate::util::kit::objects_of;
    use proptest::prelude::*;
    use serde_json::Value;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!(true)),
            Just(json!(7)),
            Just(json!("Ok")),
            Just(json!("+8613711112222")),
            Just(json!("+8613711113333")),
            Just(json!("AuthFailure.SecretIdNotFound")),
            Just(json!("InternalError.Timeout")),
            Just(json!("FailedOperation.PhoneNumberInBlacklist")),
            Just(json!("a \"quoted\" reason\n")),
            Just(json!([])),
        ]
    }

    fn status() -> impl Strategy<Value = Value> {
        let fields = objects_of(
            &["PhoneNumber", "Code", "Message"],
            leaf(),
            vec![("SerialNo", json!("5000:1"))],
        );
        prop_oneof![4 => fields, 1 => leaf(), 1 => leaf().prop_map(|v| json!([v]))]
    }

    fn response() -> impl Strategy<Value = Value> {
        let error = prop_oneof![
            (leaf(), leaf()).prop_map(|(c, m)| json!({"Code": c, "Message": m})),
            leaf(),
        ];
        let set = prop_oneof![
            4 => proptest::collection::vec(status(), 0..4).prop_map(Value::Array),
            1 => leaf(),
        ];
        let fields =
            (proptest::option::of(error), proptest::option::of(set)).prop_map(|(error, set)| {
                let mut r = json!({"RequestId": "a0aabda6"});
                if let Some(e) = error {
                    r["Error"] = e;
                }
                if let Some(s) = set {
                    r["SendStatusSet"] = s;
                }
                r
            });
        prop_oneof![4 => fields, 1 => leaf()]
    }

    fn answer() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::option::of(response()).prop_map(|r| match r {
                Some(r) => json!({"Response": r}).to_string(),
                None => "{}".to_string(),
            }),
            1 => leaf().prop_map(|v| v.to_string()),
            1 => response().prop_map(|r| json!([r]).to_string()),
            1 => Just("{\"Response\": ".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn both_readings_judge_alike(answer in answer()) {
            let receivers = numbers(&["13711112222", "+8613711113333"]);
            let by_value = format!("{:?}", TencentSms::judge_value(&answer, &receivers, 86));
            prop_assert_eq!(&format!("{:?}", TencentSms::judge(&answer, &receivers, 86)), &by_value);
            if let Ok(Object(read)) = serde_json::from_str::<Object<SendSmsAnswer>>(&answer) {
                let by_struct = TencentSms::judge_read(read.response.map(|Object(r)| r), &receivers, 86);
                prop_assert_eq!(format!("{by_struct:?}"), by_value);
            }
        }
    }

    /// Keys named twice (which `Value::to_string` never writes): the structs refuse the
    /// answer and the `Value` reading judges it (its last value of a key wins), as before.
    #[test]
    fn keys_named_twice_are_judged_as_before() {
        let receivers = numbers(&["13711112222"]);
        let ok = r#"{"PhoneNumber": "+8613711112222", "Code": "Ok"}"#;
        for answer in [
            format!(r#"{{"Response": {{"Error": {{"Code": "AuthFailure.X"}}}}, "Response": {{"SendStatusSet": [{ok}]}}}}"#),
            format!(r#"{{"Response": {{"Error": null, "Error": {{"Code": "InternalError"}}, "SendStatusSet": [{ok}]}}}}"#),
            r#"{"Response": {"SendStatusSet": [{"PhoneNumber": "+8613711112222", "Code": "Ok", "Code": "FailedOperation"}]}}"#.to_string(),
        ] {
            assert!(serde_json::from_str::<Object<SendSmsAnswer>>(&answer).is_err(), "{answer}");
            assert_eq!(
                format!("{:?}", TencentSms::judge(&answer, &receivers, 86)),
                format!("{:?}", TencentSms::judge_value(&answer, &receivers, 86)),
                "{answer}"
            );
        }
    }

    /// The one difference: fields the structs do not name are skipped unchecked, so an answer
    /// whose other fields hold what a `Value` refuses is judged by its statuses, where the
    /// `Value` reading called it unreadable (a retry, which could send a code twice).
    #[test]
    fn unread_fields_are_not_checked() {
        let receivers = numbers(&["13711112222"]);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for other in [r#""\ud800""#, "1e400", deep.as_str()] {
            let answer = format!(
                r#"{{"Response": {{"SendStatusSet": [{{"PhoneNumber": "+8613711112222", "Code": "Ok", "Fee": {other}}}], "RequestId": "r"}}}}"#
            );
            assert!(
                matches!(
                    TencentSms::judge_value(&answer, &receivers, 86),
                    Err(SendError::Transient(_))
                ),
                "{answer}"
            );
            let Ok(Delivered::Each(each)) = TencentSms::judge(&answer, &receivers, 86) else {
                panic!("{answer}: judged by its statuses");
            };
            assert_eq!(each, vec![Ok(())], "{answer}");
        }
    }

    /// A status's strings are borrowed from the answer, escaped ones copied; either reads.
    #[test]
    fn escaped_status_strings_are_read() {
        let answer = r#"{"Response": {"SendStatusSet": [{"PhoneNumber": "+86137\u00311112222", "Code": "Failed\"Operation", "Message": "\u4e2d"}]}}"#;
        let Ok(Delivered::Each(each)) = TencentSms::judge(answer, &numbers(&["13711112222"]), 86)
        else {
            panic!("per number");
        };
        assert_eq!(
            each,
            vec![Err(SendError::Permanent(
                "tencent_sms: Failed\"Operation 中".into()
            ))]
        );
    }

    /// The documented answers are read by the structs, not by the `Value` fallback.
    #[test]
    fn the_documented_answers_are_read_by_the_structs() {
        for answer in [
            r#"{"Response": {"SendStatusSet": [{"SerialNo": "5000:1", "PhoneNumber": "+8618511122233", "Fee": 1, "SessionContext": "test", "Code": "Ok", "Message": "send success", "IsoCode": "CN"}], "RequestId": "a0aabda6"}}"#,
            r#"{"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "The provided credentials could not be validated."}, "RequestId": "b5b41468"}}"#,
        ] {
            assert!(
                serde_json::from_str::<Object<SendSmsAnswer>>(answer).is_ok(),
                "{answer}"
            );
        }
    }
}
