//! The token-based providers of the simulator: DingTalk work notice (`/dingapp`), WeCom app
//! (`/wecomapp`), WeChat official account and mini program (`/wechat`), GeTui (`/getui`),
//! and Yunpian SMS (`/yunpian`, an API key). Tokens are issued on valid credentials and
//! checked on every send; [`super::Simulator::revoke_tokens`] makes every issued token
//! invalid, as an expiry would, so a client must fetch a new one.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Checked, Credentials, check, form, fresh, query};

/// Issued access tokens.
#[derive(Default)]
pub struct Tokens {
    valid: Mutex<HashSet<String>>,
    issued: Mutex<u64>,
    /// Ids of sent messages (DingTalk task ids, WeCom msgids) that a recall may name.
    sent: Mutex<HashSet<String>>,
}

impl Tokens {
    fn issue(&self, who: &str) -> String {
        let mut n = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        let t = format!("{who}-token-{n}");
        self.valid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.clone());
        t
    }

    fn valid(&self, t: &str) -> bool {
        self.valid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(t)
    }

    fn sent_id(&self, prefix: &str) -> String {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let id = format!("{prefix}{}", 1000 + sent.len());
        sent.insert(id.clone());
        id
    }

    /// Whether this is the first time `key` is seen.
    fn first_time(&self, key: &str) -> bool {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("seen:{key}"))
    }

    /// Whether `id` was sent and not recalled yet (a recall takes it).
    fn recall(&self, id: &str) -> bool {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Every token issued so far stops being valid.
    pub fn revoke(&self) {
        self.valid.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        *self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn path(url: &str) -> &str {
    url.split('?').next().unwrap_or("")
}

fn ok_or(verdict: Result<(), String>, ok: Value, err: impl FnOnce(&str) -> Value) -> Checked {
    match &verdict {
        Ok(()) => (200, ok, verdict),
        Err(e) => {
            let answer = err(e);
            (200, answer, verdict)
        }
    }
}

/// An `{"errcode": 40014}`-style refusal of a token (DingTalk, WeCom, WeChat).
fn token_refused(code: i64) -> Checked {
    (
        200,
        json!({"errcode": code, "errmsg": "invalid access_token"}),
        Err("invalid access_token".into()),
    )
}

pub(super) fn dingapp(c: &Credentials, t: &Tokens, url: &str, body: &Value) -> Checked {
    let q = query(url);
    if path(url).ends_with("/gettoken") {
        let verdict = check(
            q.get("appkey") == Some(&c.dingapp.0) && q.get("appsecret") == Some(&c.dingapp.1),
            "wrong appkey or appsecret",
        );
        return match verdict {
            Ok(()) => (
                200,
                json!({"errcode": 0, "errmsg": "ok", "access_token": t.issue("ding"), "expires_in": 7200}),
                Ok(()),
            ),
            Err(e) => (
                200,
                json!({"errcode": 40089, "errmsg": "invalid corpid or corpsecret"}),
                Err(e),
            ),
        };
    }
    if !q.get("access_token").is_some_and(|a| t.valid(a)) {
        return token_refused(40014);
    }
    let verdict = check(
        body["agent_id"].as_i64() == Some(c.dingapp.2),
        "wrong agent_id",
    );
    if path(url).ends_with("/corpconversation/recall") {
        let verdict = verdict.and_then(|()| {
            check(
                body["msg_task_id"]
                    .as_i64()
                    .is_some_and(|id| t.recall(&id.to_string())),
                "msg_task_id was not sent or is recalled already",
            )
        });
        return ok_or(
            verdict,
            json!({"errcode": 0, "errmsg": "ok"}),
            |e| json!({"errcode": 400002, "errmsg": e}),
        );
    }
    let verdict = verdict
        .and_then(|()| {
            check(
                path(url).ends_with("/corpconversation/asyncsend_v2"),
                "unknown API",
            )
        })
        .and_then(|()| check(body["msg"]["msgtype"].is_string(), "no msg.msgtype"))
        .and_then(|()| {
            check(
                body["userid_list"].is_string() || body["to_all_user"] == json!(true),
                "no userid_list",
            )
        });
    let task_id: i64 = if verdict.is_ok() {
        t.sent_id("").parse().unwrap_or(0)
    } else {
        0
    };
    ok_or(
        verdict,
        json!({"errcode": 0, "errmsg": "ok", "task_id": task_id, "request_id": "sim"}),
        |e| json!({"errcode": 400002, "errmsg": e}),
    )
}

pub(super) fn wecomapp(c: &Credentials, t: &Tokens, url: &str, body: &Value) -> Checked {
    let q = query(url);
    if path(url).ends_with("/cgi-bin/gettoken") {
        if q.get("corpid") != Some(&c.wecomapp.0) {
            return (
                200,
                json!({"errcode": 40013, "errmsg": "invalid corpid"}),
                Err("invalid corpid".into()),
            );
        }
        if q.get("corpsecret") != Some(&c.wecomapp.1) {
            return (
                200,
                json!({"errcode": 40001, "errmsg": "invalid credential"}),
                Err("invalid corpsecret".into()),
            );
        }
        return (
            200,
            json!({"errcode": 0, "errmsg": "ok", "access_token": t.issue("wecom"), "expires_in": 7200}),
            Ok(()),
        );
    }
    if !q.get("access_token").is_some_and(|a| t.valid(a)) {
        return token_refused(42001);
    }
    if path(url).ends_with("/cgi-bin/message/recall") {
        let verdict = check(
            body["msgid"].as_str().is_some_and(|id| t.recall(id)),
            "msgid was not sent or is recalled already",
        );
        return ok_or(
            verdict,
            json!({"errcode": 0, "errmsg": "ok"}),
            |e| json!({"errcode": 40008, "errmsg": e}),
        );
    }
    let verdict = check(path(url).ends_with("/cgi-bin/message/send"), "unknown API")
        .and_then(|()| {
            check(
                body["agentid"].as_i64() == Some(c.wecomapp.2),
                "invalid agentid",
            )
        })
        .and_then(|()| check(body["touser"].is_string(), "no touser"))
        .and_then(|()| {
            let kind = body["msgtype"].as_str().unwrap_or("");
            check(
                !kind.is_empty() && body[kind].is_object(),
                "msgtype without its object",
            )
        });
    // Users named bad-* do not exist in the corp: WeCom lists them and sends to the rest.
    let invalid: Vec<&str> = body["touser"]
        .as_str()
        .unwrap_or("")
        .split('|')
        .filter(|u| u.starts_with("bad-"))
        .collect();
    let msgid = if verdict.is_ok() {
        t.sent_id("msg-")
    } else {
        String::new()
    };
    ok_or(
        verdict,
        json!({"errcode": 0, "errmsg": "ok", "invaliduser": invalid.join("|"), "msgid": msgid}),
        |e| json!({"errcode": 40003, "errmsg": e}),
    )
}

pub(super) fn wechat(c: &Credentials, t: &Tokens, url: &str, body: &Value) -> Checked {
    if path(url).ends_with("/cgi-bin/stable_token") {
        let verdict = check(body["grant_type"] == "client_credential", "grant_type")
            .and_then(|()| check(body["appid"].as_str() == Some(&c.wechat.0), "invalid appid"))
            .and_then(|()| {
                check(
                    body["secret"].as_str() == Some(&c.wechat.1),
                    "invalid appsecret",
                )
            });
        return match verdict {
            Ok(()) => (
                200,
                json!({"access_token": t.issue("wechat"), "expires_in": 7200}),
                Ok(()),
            ),
            Err(e) => (200, json!({"errcode": 40125, "errmsg": e}), Err(e)),
        };
    }
    if !query(url).get("access_token").is_some_and(|a| t.valid(a)) {
        return token_refused(40001);
    }
    let to = body["touser"].as_str().unwrap_or("");
    let data_ok = body["data"]
        .as_object()
        .is_some_and(|d| !d.is_empty() && d.values().all(|v| v["value"].is_string()));
    let common = check(!to.is_empty(), "no touser")
        .and_then(|()| {
            check(
                body["template_id"].as_str().is_some_and(|s| !s.is_empty()),
                "invalid template_id",
            )
        })
        .and_then(|()| check(data_ok, "data must be {\"k\": {\"value\": \"v\"}}"));
    if let Err(e) = common {
        return (
            200,
            json!({"errcode": 47003, "errmsg": format!("argument invalid: {e}")}),
            Err(e),
        );
    }
    let p = path(url);
    if p.ends_with("/cgi-bin/message/template/send") {
        // busyonce-*: refused as busy the first time (a transient answer), accepted after.
        if to.starts_with("busyonce") && t.first_time(to) {
            return (
                200,
                json!({"errcode": 45047, "errmsg": "out of send limit"}),
                Ok(()),
            );
        }
        if to.starts_with("unfollowed") {
            return (
                200,
                json!({"errcode": 43004, "errmsg": "require subscribe"}),
                Ok(()),
            );
        }
        return (
            200,
            json!({"errcode": 0, "errmsg": "ok", "msgid": 200228332}),
            Ok(()),
        );
    }
    if p.ends_with("/cgi-bin/message/subscribe/send") {
        let verdict = check(body["page"].is_string(), "no page");
        if to.starts_with("refused") {
            return (
                200,
                json!({"errcode": 43101, "errmsg": "user refuse to accept the msg"}),
                verdict,
            );
        }
        return ok_or(
            verdict,
            json!({"errcode": 0, "errmsg": "ok"}),
            |e| json!({"errcode": 47003, "errmsg": e}),
        );
    }
    (
        404,
        json!({"errcode": 404, "errmsg": "unknown API"}),
        Err("unknown API".into()),
    )
}

pub(super) fn getui(
    c: &Credentials,
    t: &Tokens,
    request: &super::Request,
    url: &str,
    body: &Value,
) -> Checked {
    let p = path(url);
    let prefix = format!("/getui/v2/{}/", c.getui.0);
    let Some(api) = p.strip_prefix(&prefix) else {
        return (
            404,
            json!({"code": 10002, "msg": "appId not found"}),
            Err("wrong appId".into()),
        );
    };
    if api == "auth" {
        let ts: i64 = body["timestamp"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let verdict = check(body["appkey"].as_str() == Some(&c.getui.1), "wrong appkey")
            .and_then(|()| check(fresh(ts), "timestamp expired"))
            .and_then(|()| {
                check(
                    body["sign"].as_str()
                        == Some(&crate::getui::auth_sign(&c.getui.1, ts, &c.getui.2)),
                    "sign does not match",
                )
            });
        return match verdict {
            Ok(()) => {
                let expire = crate::util::kit::now_ms() + 86_400_000;
                (
                    200,
                    json!({"code": 0, "msg": "success",
                    "data": {"expire_time": expire.to_string(), "token": t.issue("getui")}}),
                    Ok(()),
                )
            }
            Err(e) => (200, json!({"code": 20001, "msg": e}), Err(e)),
        };
    }
    if !t.valid(&super::header(request, "token")) {
        // As GeTui answers it: HTTP 401 with the code in the body.
        return (
            401,
            json!({"code": 10001, "msg": "token invalid"}),
            Err("invalid token".into()),
        );
    }
    let request_id_ok = body["request_id"]
        .as_str()
        .is_some_and(|r| (10..=32).contains(&r.len()));
    let verdict = match api {
        "push/single/cid" => check(request_id_ok, "request_id must be 10 to 32 characters")
            .and_then(|()| {
                check(
                    body["audience"]["cid"]
                        .as_array()
                        .is_some_and(|a| a.len() == 1),
                    "audience.cid",
                )
            })
            .and_then(|()| {
                check(
                    body["push_message"]["notification"]["title"].is_string(),
                    "notification.title",
                )
            }),
        "push/list/message" => check(request_id_ok, "request_id must be 10 to 32 characters")
            .and_then(|()| {
                check(
                    body["push_message"]["notification"]["title"].is_string(),
                    "notification.title",
                )
            }),
        "push/list/cid" => check(
            body["taskid"].as_str() == Some("RASL-sim"),
            "unknown taskid",
        )
        .and_then(|()| {
            check(
                body["audience"]["cid"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.len() <= 1000),
                "audience.cid",
            )
        }),
        _ => Err("unknown API".to_string()),
    };
    match verdict {
        Ok(()) if api == "push/list/message" => (
            200,
            json!({"code": 0, "msg": "success", "data": {"taskid": "RASL-sim"}}),
            Ok(()),
        ),
        Ok(()) => (
            200,
            json!({"code": 0, "msg": "success", "data": {}}),
            Ok(()),
        ),
        Err(e) => (200, json!({"code": 20001, "msg": e}), Err(e)),
    }
}

pub(super) fn yunpian(c: &Credentials, url: &str, raw: &str) -> Checked {
    let f = form(raw);
    if f.get("apikey") != Some(&c.yunpian_apikey) {
        return (
            401,
            json!({"http_status_code": 401, "code": -1, "msg": "非法的apikey", "detail": "请检查的apikey是否正确"}),
            Err("invalid apikey".into()),
        );
    }
    let templated = path(url).ends_with("/v2/sms/tpl_batch_send.json");
    let verdict = if templated {
        check(
            f.contains_key("tpl_id") && f.contains_key("tpl_value"),
            "tpl_id and tpl_value are required",
        )
    } else {
        check(
            path(url).ends_with("/v2/sms/batch_send.json"),
            "unknown API",
        )
        .and_then(|()| {
            check(
                f.get("text").is_some_and(|t| !t.is_empty()),
                "text is required",
            )
        })
    };
    // Its batch calls take 1 to 1000 numbers.
    let count = f
        .get("mobile")
        .map_or(0, |m| m.split(',').filter(|n| !n.is_empty()).count());
    let verdict = verdict.and_then(|()| {
        check(
            (1..=1000).contains(&count),
            "mobile takes 1 to 1000 numbers",
        )
    });
    if let Err(e) = verdict {
        return (
            400,
            json!({"http_status_code": 400, "code": 2, "msg": "请求参数格式错误", "detail": e}),
            Err(e),
        );
    }
    let data: Vec<Value> = f
        .get("mobile")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(|m| {
            if m.ends_with("0000") {
                json!({"code": 2, "msg": "请求参数格式错误", "count": 0, "fee": 0.0, "unit": "RMB", "mobile": m, "sid": 0})
            } else {
                json!({"code": 0, "msg": "发送成功", "count": 1, "fee": 0.05, "unit": "RMB", "mobile": m, "sid": 1})
            }
        })
        .collect();
    (
        200,
        json!({"total_count": data.len(), "total_fee": "0.0500", "unit": "RMB", "data": data}),
        Ok(()),
    )
}

pub(super) fn alipay(c: &Credentials, raw: &str) -> Checked {
    let f = form(raw);
    let params: Vec<(String, String)> = f.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let key = crate::util::sign::rsa_key(&c.alipay.1).expect("the simulator's key parses");
    let ts_ok = chrono::NaiveDateTime::parse_from_str(
        f.get("timestamp").map(String::as_str).unwrap_or(""),
        "%Y-%m-%d %H:%M:%S",
    )
    .ok()
    .and_then(|t| t.and_local_timezone(chrono_tz::Asia::Shanghai).single())
    .is_some_and(|t| fresh(t.timestamp_millis()));
    let answer = |code: &str, msg: &str, sub: &str| {
        json!({"alipay_open_app_mini_templatemessage_send_response":
            {"code": code, "msg": msg, "sub_code": sub, "sub_msg": sub}, "sign": "sim"})
    };
    let auth = check(f.get("app_id") == Some(&c.alipay.0), "isv.invalid-app-id")
        .and_then(|()| {
            check(
                f.get("sign_type").map(String::as_str) == Some("RSA2"),
                "isv.invalid-signature-type",
            )
        })
        .and_then(|()| {
            check(
                crate::util::sign::alipay_rsa2_verify(
                    &key,
                    &crate::util::sign::alipay_content(&params),
                    f.get("sign").map(String::as_str).unwrap_or(""),
                ),
                "isv.invalid-signature",
            )
        })
        .and_then(|()| check(ts_ok, "isv.invalid-timestamp"));
    if let Err(e) = auth {
        // The gateway refuses the call before the method: under `error_response`.
        let refused = json!({"error_response":
            {"code": "40002", "msg": "Invalid Arguments", "sub_code": e, "sub_msg": e}});
        return (200, refused, Err(e));
    }
    let biz: Value = serde_json::from_str(f.get("biz_content").map(String::as_str).unwrap_or(""))
        .unwrap_or(Value::Null);
    let verdict = check(
        f.get("method").map(String::as_str) == Some("alipay.open.app.mini.templatemessage.send"),
        "isv.invalid-method",
    )
    .and_then(|()| {
        check(
            biz["to_user_id"].as_str().is_some_and(|u| !u.is_empty()),
            "isv.missing-to-user-id",
        )
    })
    .and_then(|()| {
        check(
            biz["user_template_id"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "isv.missing-user-template-id",
        )
    })
    .and_then(|()| {
        let data: Value =
            serde_json::from_str(biz["data"].as_str().unwrap_or("")).unwrap_or(Value::Null);
        check(
            data.as_object().is_some_and(|d| !d.is_empty()),
            "isv.invalid-data",
        )
    });
    match verdict {
        Ok(())
            if biz["to_user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("unknown")) =>
        {
            (
                200,
                answer("40004", "Business Failed", "USER_NOT_EXIST"),
                Ok(()),
            )
        }
        Ok(()) => (200, answer("10000", "Success", ""), Ok(())),
        Err(e) => (200, answer("40002", "Invalid Arguments", &e), Err(e)),
    }
}
