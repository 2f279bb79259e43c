//! Alipay mini program template message, against the request and answers of the open
//! platform's documentation (`alipay.open.app.mini.templatemessage.send` and the gateway's
//! public codes: 10000 success, 20000 service unavailable, 20001 invalid auth token, 40002
//! invalid arguments, 40004 business failed). One user per call.

use super::*;
use crate::util::kit::test_batch;

fn app() -> AlipayMiniProgram {
    AlipayMiniProgram::new(
        AlipayConfig {
            app_id: "2014072300007148".into(),
            private_key: sign::TEST_RSA_KEY.into(),
            endpoint: None,
        },
        reqwest::Client::new(),
    )
    .unwrap()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn the_documented_signed_request() {
    let b = test_batch(
        Channel::AlipayMiniProgram,
        r#"{"templateId":"MDI4YzIxMDE2M2I5YTQzYjUxNWE4MjA4NmU1MTIyYmM=","page":"page/component/index","data":{"keyword1":"12:00","keyword2":"20180808","keyword3":"支付宝"}}"#,
    );
    // 2014-07-24 03:07:50 in Beijing, the documentation's example time.
    let p = app()
        .payload(&b, "2088102122458832", 1_406_142_470_000)
        .unwrap();
    assert_eq!(param(&p, "app_id"), "2014072300007148");
    assert_eq!(
        param(&p, "method"),
        "alipay.open.app.mini.templatemessage.send"
    );
    assert_eq!(param(&p, "format"), "JSON");
    assert_eq!(param(&p, "charset"), "utf-8");
    assert_eq!(param(&p, "sign_type"), "RSA2");
    assert_eq!(param(&p, "timestamp"), "2014-07-24 03:07:50");
    assert_eq!(param(&p, "version"), "1.0");
    let biz: Value = serde_json::from_str(param(&p, "biz_content")).unwrap();
    assert_eq!(biz["to_user_id"], "2088102122458832");
    assert_eq!(
        biz["user_template_id"],
        "MDI4YzIxMDE2M2I5YTQzYjUxNWE4MjA4NmU1MTIyYmM="
    );
    assert_eq!(biz["page"], "page/component/index");
    // `data` is itself a JSON string, as the documentation writes it.
    let data: Value = serde_json::from_str(biz["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"keyword1": {"value": "12:00"}, "keyword2": {"value": "20180808"},
            "keyword3": {"value": "支付宝"}})
    );
    // The sign covers every other parameter, sorted, and verifies with the app's public key.
    let unsigned: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "sign").cloned().collect();
    let key = sign::rsa_key(sign::TEST_RSA_KEY).unwrap();
    assert!(sign::alipay_rsa2_verify(
        &key,
        &sign::alipay_content(&unsigned),
        param(&p, "sign")
    ));
}

#[test]
fn answers() {
    let answer = |code: &str, msg: &str, sub: Option<(&str, &str)>| {
        let mut r = json!({"code": code, "msg": msg});
        if let Some((sub_code, sub_msg)) = sub {
            r["sub_code"] = json!(sub_code);
            r["sub_msg"] = json!(sub_msg);
        }
        json!({"alipay_open_app_mini_templatemessage_send_response": r,
            "sign": "ERITJKEIJKJHKKKKKKKHJEREEEEEEEEEEE"})
        .to_string()
    };
    assert_eq!(
        AlipayMiniProgram::judge(&answer("10000", "Success", None)),
        Ok(())
    );
    let e = AlipayMiniProgram::judge(&answer(
        "20000",
        "Service Currently Unavailable",
        Some(("isp.unknow-error", "系统繁忙")),
    ))
    .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    let e = AlipayMiniProgram::judge(&answer(
        "20001",
        "Insufficient Token Permissions",
        Some(("aop.invalid-auth-token", "无效的访问令牌")),
    ))
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = AlipayMiniProgram::judge(&answer(
        "40002",
        "Invalid Arguments",
        Some(("isv.invalid-signature", "验签出错")),
    ))
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    // The gateway's own refusal comes under `error_response` (its documented sample).
    let e = AlipayMiniProgram::judge(
        r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"},"sign":"x"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    // A business refusal of one user fails that user alone.
    let e = AlipayMiniProgram::judge(&answer(
        "40004",
        "Business Failed",
        Some(("USER_NOT_EXIST", "用户不存在")),
    ))
    .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert_eq!(
        e.reason(),
        "alipay_mini_program: 40004 Business Failed USER_NOT_EXIST 用户不存在"
    );
    let e = AlipayMiniProgram::judge("<html>502</html>").unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

#[test]
fn the_key_is_checked_with_the_settings() {
    let c = AlipayConfig {
        app_id: "2014072300007148".into(),
        private_key: "not a key".into(),
        endpoint: None,
    };
    let e = AlipayMiniProgram::validate("accounts.alipay", &c).unwrap_err();
    assert!(
        e.starts_with("accounts.alipay.settings.private_key: "),
        "{e}"
    );
    assert_eq!(
        AlipayMiniProgram::base_url(&c),
        "https://openapi.alipay.com"
    );
}
