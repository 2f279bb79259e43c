//! The austin-compatible send API (`tidings gateway`) against the real broker: answers as
//! austin answers, refuses at the door without producing, and every messageId it answers is
//! the one the job's tracking rows carry — also for 1,000 concurrent calls.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tidings_dataflows::gateway::hash_token;
use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_operators::Clock;
use tidings_sinks::tracking::MemoryTracking;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Kafka job with one SMS template (`hi {$v}`, no shield) and two callers: `bulk` (no
/// limit) and `slow` (2 requests/s).
fn job(dir: &std::path::Path) -> std::path::PathBuf {
    let unique = common::unique();
    std::fs::write(
        dir.join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"gw\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"gw-{unique}\"\ngroup = \"gw-{unique}\"\n[tracking]\ndir = \"var/tracking\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
             [gateway]\nbind = \"127.0.0.1:0\"\n\
             [gateway.callers.bulk]\ntoken_sha256 = \"{}\"\n\
             [gateway.callers.slow]\ntoken_sha256 = \"{}\"\nper_second = 2\n",
            brokers(),
            hash_token("bulk-token"),
            hash_token("slow-token"),
        ),
    )
    .unwrap();
    job
}

fn start(job: &std::path::Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["gateway", "--job", job.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("http://"), "gateway printed {line:?}");
    Gateway {
        child,
        url: line.trim().to_string(),
    }
}

/// Runs the job until the topic is idle; its event rows by message id: (receiver, state).
fn tracked(job: &std::path::Path) -> BTreeMap<String, Vec<(String, String)>> {
    let job = Job::load(job).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let opts = RunOptions {
        workers: 2,
        clock: Clock::Fixed(1_800_000_000_000),
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 20_000,
        in_flight_receivers: 100_000,
        from_start: false,
        handle_signals: false,
        idle_exit: Some(Duration::from_secs(8)),
        stop: None,
        drain_timeout: None,
        tracking_give_up: None,
        cluster: None,
        backlog_before: None,
    };
    common::within(Duration::from_secs(180), "the Kafka job", move || {
        run(&job, &opts).unwrap()
    });
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in memory.take().events {
        out.entry(e.meta.message_id.to_string())
            .or_default()
            .push((e.receiver.to_string(), e.state.name().to_string()));
    }
    out
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = client.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    r.json().await.unwrap()
}

fn send_body(receivers: &str, v: &str) -> Value {
    json!({"code": "send", "messageTemplateId": 1,
        "messageParam": {"bizId": "order-1", "receiver": receivers, "variables": {"v": v}}})
}

#[test]
fn the_send_api_answers_as_austin_and_its_ids_are_the_tracked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let gw = start(&job);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", gw.url);
    let bulk = Some("bulk-token");

    let (answered, concurrent) = rt.block_on(async {
        // /send with 3 receivers: one message, one messageId.
        let (status, v) = post(
            &client,
            &url("/send"),
            bulk,
            &send_body("13800138000,13800138001,13800138002", "x"),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["code"], "0", "austin's SUCCESS");
        assert_eq!(v["msg"], "操作成功");
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{v}");
        assert_eq!(data[0]["bizId"], "order-1");
        assert!(data[0]["businessId"].as_i64().unwrap() > 0, "{v}");
        let three = data[0]["messageId"].as_str().unwrap().to_string();
        assert_eq!(three.len(), 32);

        // /batchSend with one bad param: the whole request is refused, nothing produced.
        let batch = json!({"code": "send", "messageTemplateId": 1, "messageParamList": [
            {"receiver": "13800138003", "variables": {"v": "ok"}},
            {"receiver": "13800138004", "variables": {}}]});
        let (status, v) = post(&client, &url("/batchSend"), bulk, &batch).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["code"], "A0001", "austin's CLIENT_BAD_PARAMETERS");
        assert_eq!(v["data"], Value::Null, "{v}");
        assert!(
            v["msg"].as_str().unwrap().contains("missing variable `v`"),
            "{v}"
        );
        // A good batch: one id per param, in order.
        let batch = json!({"code": "send", "messageTemplateId": 1, "messageParamList": [
            {"bizId": "b1", "receiver": "13800138005", "variables": {"v": "1"}},
            {"bizId": "b2", "receiver": "13800138006", "variables": {"v": "2"}}]});
        let (status, v) = post(&client, &url("/batchSend"), bulk, &batch).await;
        assert_eq!(status, 200, "{v}");
        let data = v["data"].as_array().unwrap();
        assert_eq!(
            (data[0]["bizId"].as_str(), data[1]["bizId"].as_str()),
            (Some("b1"), Some("b2"))
        );
        let batch_ids: Vec<String> = data
            .iter()
            .map(|d| d["messageId"].as_str().unwrap().to_string())
            .collect();

        // 101 receivers: austin's TOO_MANY_RECEIVER (A0003); an unknown template: its
        // TEMPLATE_NOT_FOUND (A0002), each with austin's words and the cause.
        let many: Vec<String> = (0..101).map(|i| format!("1380013{i:04}")).collect();
        let unknown = json!({"code": "send", "messageTemplateId": 99,
            "messageParam": {"receiver": "13800138000", "variables": {"v": "x"}}});
        for (body, code, words) in [
            (
                send_body(&many.join(","), "x"),
                "A0003",
                "传入的接收者大于100个: 101 receivers",
            ),
            (
                unknown.clone(),
                "A0002",
                "找不到模板或模板已被删除: unknown template 99",
            ),
        ] {
            let (status, v) = post(&client, &url("/send"), bulk, &body).await;
            assert_eq!((status, v["code"].as_str()), (400, Some(code)), "{v}");
            assert!(v["msg"].as_str().unwrap().starts_with(words), "{v}");
        }
        // A field given as null is not given, and a recall needs no recallMessageIds (every
        // message of the template): both judged on, here refused for the unknown template.
        let recall_all = json!({"code": "recall", "messageTemplateId": 99});
        let mut null_list = unknown.clone();
        null_list["messageParamList"] = Value::Null;
        for (path, body) in [("/send", null_list), ("/recall", recall_all)] {
            let (status, v) = post(&client, &url(path), bulk, &body).await;
            assert_eq!(status, 400, "{v}");
            let msg = v["msg"].as_str().unwrap();
            assert!(
                msg.contains("99") && !msg.contains("goes to"),
                "{path}: {v}"
            );
        }
        let (status, v) = post(
            &client,
            &url("/send"),
            bulk,
            &json!({"code": "send",
            "messageTemplateId": 1, "messageParamList": []}),
        )
        .await;
        assert_eq!((status, v["code"].as_str()), (400, Some("A0001")), "{v}");
        let r = client
            .post(url("/send"))
            .bearer_auth("bulk-token")
            .header("Content-Type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        // Only JSON is taken: a form or text/plain post (what any web page can make a browser
        // send) is refused before anything is read.
        let r = client
            .post(url("/send"))
            .bearer_auth("bulk-token")
            .header("Content-Type", "text/plain")
            .body(send_body("13800138000", "x").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415);

        // Tokens: none or a wrong one is 401.
        let (status, v) = post(&client, &url("/send"), None, &send_body("13800138000", "x")).await;
        assert_eq!((status, v["code"].as_str()), (401, Some("A0401")), "{v}");
        let (status, _) = post(
            &client,
            &url("/send"),
            Some("guess"),
            &send_body("13800138000", "x"),
        )
        .await;
        assert_eq!(status, 401);
        // The scheme's name in any case, as HTTP's are.
        let r = client
            .post(url("/send"))
            .header("Authorization", "bearer bulk-token")
            .header("Content-Type", "application/json")
            .body(send_body("13800138001", "x").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        let lower_id = v["data"][0]["messageId"].as_str().unwrap().to_string();

        // The slow caller: 2 requests/s with a burst of 2; the third at once is 429.
        let mut statuses = Vec::new();
        let mut slow_ids = Vec::new();
        for i in 0..3 {
            let (status, v) = post(
                &client,
                &url("/send"),
                Some("slow-token"),
                &send_body(&format!("1390013900{i}"), "s"),
            )
            .await;
            statuses.push(status);
            if status == 200 {
                slow_ids.push(v["data"][0]["messageId"].as_str().unwrap().to_string());
            } else {
                assert_eq!(v["code"], "A0429", "{v}");
            }
        }
        assert_eq!(statuses, [200, 200, 429]);

        // The OpenAPI document.
        let doc: Value = client
            .get(url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        for p in ["/send", "/batchSend", "/recall"] {
            assert!(doc["paths"][p]["post"].is_object(), "{p}");
        }
        // Every route it names is the door's (refused here for the missing token, not 404).
        for (path, item) in doc["paths"].as_object().unwrap() {
            let at = url(&path.replace("{id}", "1").replace("{name}", "sms-main"));
            for method in item.as_object().unwrap().keys() {
                let r = match method.as_str() {
                    "get" => client.get(&at),
                    "post" => client.post(&at).header("Content-Type", "application/json"),
                    other => panic!("{path}: {other}"),
                }
                .send()
                .await
                .unwrap();
                assert_eq!(r.status().as_u16(), 401, "{method} {path}");
            }
        }

        // 1,000 concurrent calls: every one answered with an id.
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let (client, u) = (client.clone(), url("/send"));
            tasks.push(tokio::spawn(async move {
                let (status, v) = post(
                    &client,
                    &u,
                    Some("bulk-token"),
                    &send_body(&format!("1370000{i:04}"), &i.to_string()),
                )
                .await;
                assert_eq!(status, 200, "{v}");
                v["data"][0]["messageId"].as_str().unwrap().to_string()
            }));
        }
        let mut concurrent = Vec::new();
        for t in tasks {
            concurrent.push(t.await.unwrap());
        }
        // The gateway's metrics count every answer by route and code.
        let metrics = client
            .get(url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count = |route: &str, code: &str| -> u64 {
            let key = format!(
                "tidings_gateway_requests_total{{job=\"gw\",route=\"{route}\",code=\"{code}\"}} "
            );
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or_else(|| panic!("no {key} in\n{metrics}"))
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(count("/send", "0"), 1004);
        assert_eq!(count("/batchSend", "0"), 1);
        assert_eq!(count("/send", "A0429"), 1);
        assert!(
            metrics.contains("tidings_gateway_request_seconds_bucket"),
            "{metrics}"
        );
        let mut answered = vec![three];
        answered.extend(batch_ids);
        answered.extend(slow_ids);
        answered.push(lower_id);
        (answered, concurrent)
    });
    drop(gw);

    let rows = tracked(&job);
    // Exactly the answered messages were produced (nothing from the refused requests).
    let all: BTreeSet<&String> = answered.iter().chain(&concurrent).collect();
    assert_eq!(all.len(), 1006, "distinct ids");
    assert_eq!(rows.keys().collect::<BTreeSet<_>>(), all);
    // The 3-receiver message: each receiver reached SEND_SUCCESS under the answered id.
    let three: BTreeSet<&str> = rows[&answered[0]]
        .iter()
        .filter(|(_, s)| s == "SEND_SUCCESS")
        .map(|(r, _)| r.as_str())
        .collect();
    assert_eq!(three.len(), 3, "{:?}", rows[&answered[0]]);
    for n in ["13800138000", "13800138001", "13800138002"] {
        assert!(three.iter().any(|r| r.ends_with(n)), "{n}: {three:?}");
    }
    // Every concurrent call's message reached a terminal state.
    for id in &concurrent {
        let states: Vec<&str> = rows[id].iter().map(|(_, s)| s.as_str()).collect();
        assert!(states.contains(&"SEND_SUCCESS"), "{id}: {states:?}");
    }
}

/// `gateway.http_status = "austin"`: every answer with a code is HTTP 200, the code in the
/// body as austin answers (a RestTemplate client reads it instead of catching a 4xx); the rate
/// refusal keeps its Retry-After; an answer without a code (a cross-site post) keeps its
/// status.
#[test]
fn with_austin_statuses_every_coded_answer_is_200() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[gateway]\nbind = \"127.0.0.1:0\"\n",
        "[gateway]\nbind = \"127.0.0.1:0\"\nhttp_status = \"austin\"\n",
    );
    assert!(text.contains("http_status"));
    std::fs::write(&job, text).unwrap();
    let gw = start(&job);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", gw.url);
    rt.block_on(async {
        let unknown = json!({"code": "send", "messageTemplateId": 99,
            "messageParam": {"receiver": "13800138000", "variables": {"v": "x"}}});
        let many: Vec<String> = (0..101).map(|i| format!("1380013{i:04}")).collect();
        let cases = [
            (
                "/send",
                Some("bulk-token"),
                send_body("13800138000", "x"),
                "0",
            ),
            ("/send", Some("bulk-token"), unknown, "A0002"),
            (
                "/send",
                Some("bulk-token"),
                send_body(&many.join(","), "x"),
                "A0003",
            ),
            (
                "/send",
                Some("bulk-token"),
                json!({"code": "send"}),
                "A0001",
            ),
            ("/send", None, send_body("13800138000", "x"), "A0401"),
            (
                "/recall",
                Some("bulk-token"),
                json!({"code": "recall", "messageTemplateId": 99}),
                "A0002",
            ),
        ];
        for (path, token, body, code) in cases {
            let (status, v) = post(&client, &url(path), token, &body).await;
            assert_eq!(
                (status, v["code"].as_str()),
                (200, Some(code)),
                "{path}: {v}"
            );
        }
        let mut codes = Vec::new();
        for i in 0..3 {
            let r = client
                .post(url("/send"))
                .bearer_auth("slow-token")
                .json(&send_body(&format!("1390013900{i}"), "s"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let retry = r.headers().get("retry-after").is_some();
            let v: Value = r.json().await.unwrap();
            codes.push((v["code"].as_str().unwrap().to_string(), retry));
        }
        let want = [("0", false), ("0", false), ("A0429", true)];
        assert_eq!(codes, want.map(|(c, r)| (c.to_string(), r)));
        let r = client
            .post(url("/send"))
            .bearer_auth("bulk-token")
            .header("Sec-Fetch-Site", "cross-site")
            .json(&send_body("13800138000", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
    });
}

/// A request the broker refuses as too large is refused 400 (split it), not 503 (retry):
/// sent again it is refused again. Here the job's producer takes records of at most 1,000
/// bytes (`message.max.bytes`, refused by the client as a broker's own limit refuses it).
#[test]
fn a_request_too_large_for_the_broker_is_told_to_split_not_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str("[source.properties]\n\"message.max.bytes\" = \"1000\"\n");
    std::fs::write(&job, text).unwrap();
    let gw = start(&job);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/batchSend", gw.url);
    let params: Vec<Value> = (0..40)
        .map(|i| json!({"receiver": format!("138001380{i:02}"), "variables": {"v": "x"}}))
        .collect();
    let big = json!({"code": "send", "messageTemplateId": 1, "messageParamList": params});
    let (status, answer) = rt.block_on(post(&client, &url, Some("bulk-token"), &big));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "A0001", "{answer}");
    let msg = answer["msg"].as_str().unwrap();
    assert!(
        msg.contains("split the request") && msg.contains("nothing was sent"),
        "{msg}"
    );
    // A small one still goes.
    let url = format!("{}/send", gw.url);
    let (status, answer) = rt.block_on(post(
        &client,
        &url,
        Some("bulk-token"),
        &send_body("13800138000", "x"),
    ));
    assert_eq!((status, &answer["code"]), (200, &json!("0")), "{answer}");
}

/// Templates changed through the door while the job's topic fills: a request before the
/// change renders the old text, one after it the new, a disabled template is refused at the
/// door; only a caller with `templates = true` may change them.
#[test]
fn templates_change_through_the_door_from_their_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str(&format!(
        "[gateway.callers.ops]\ntoken_sha256 = \"{}\"\ntemplates = true\n",
        hash_token("ops-token")
    ));
    std::fs::write(&job, text).unwrap();
    let gw = start(&job);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", gw.url);
    let (bulk, ops) = (Some("bulk-token"), Some("ops-token"));
    // Requests stamped apart: the next is accepted once the wall clock has moved past this one.
    let pause = || {
        let t = tidings_model::time::wall_ms();
        common::wait_until(Duration::from_secs(5), "the clock to move on", || {
            tidings_model::time::wall_ms() > t + 1
        });
    };
    let template = |content: &str, account: &str| {
        json!({"id": 1, "name": "t1", "channel": "sms", "msg_type": "notice",
            "id_type": "phone", "account": account, "dedup": false,
            "content": {"content": content}})
    };
    let id_of = |v: &Value| v["data"][0]["messageId"].as_str().unwrap().to_string();

    let (before, after, moved) = rt.block_on(async {
        let (s, first) = post(&client, &url("/send"), bulk, &send_body("13800138000", "a")).await;
        assert_eq!(s, 200, "{first}");
        pause();
        // A sender's token may not change templates.
        let (s, a) = post(&client, &url("/templates"), bulk, &template("x", "out")).await;
        assert_eq!((s, a["code"].as_str()), (403, Some("A0401")), "{a}");
        // A template naming an account the job lacks is refused, nothing produced.
        let (s, a) = post(&client, &url("/templates"), ops, &template("x", "nope")).await;
        assert_eq!(s, 400, "{a}");
        assert!(a["msg"].as_str().unwrap().contains("account `nope`"), "{a}");
        // A campaign is checked as the job file's: a crowd that is not there, a time that
        // never comes, an expression that does not read.
        let mut campaign = template("x", "out");
        campaign["template_type"] = json!("cron");
        campaign["crowd"] = json!("crowds/none.csv");
        for (cron, why) in [
            ("0 0 10 * * ?", "crowd: "),
            ("0 0 0 31 2 ?", "names no time in the next five years"),
            (
                "0 0 12 11 11 ? 2020",
                "every time `0 0 12 11 11 ? 2020` names has passed",
            ),
            ("0 0 25 * * ?", "cron: hour `25`"),
        ] {
            campaign["cron"] = json!(cron);
            let (s, a) = post(&client, &url("/templates"), ops, &campaign).await;
            assert_eq!(s, 400, "{a}");
            assert!(a["msg"].as_str().unwrap().contains(why), "{cron}: {a}");
        }
        let (s, c) = post(
            &client,
            &url("/templates"),
            ops,
            &template("bye {$v}", "out"),
        )
        .await;
        assert_eq!((s, c["data"]["version"].as_u64()), (200, Some(1)), "{c}");
        pause();
        let (s, b) = post(&client, &url("/send"), bulk, &send_body("13800138001", "b")).await;
        assert_eq!(s, 200, "{b}");
        // Account settings change the same way; a secret only as an ${ENV} reference.
        let out2 = json!({"channel": "sms", "provider": "outbox", "dir": "var/outbox2"});
        let (s, _) = post(&client, &url("/accounts/out"), bulk, &out2).await;
        assert_eq!(s, 403);
        let clear = json!({"channel": "sms", "provider": "tencent_sms",
            "settings": {"secret_id": "AKIDclear0123456", "secret_key": "${SMS_KEY}"}});
        let (s, a) = post(&client, &url("/accounts/out"), ops, &clear).await;
        assert_eq!(s, 400, "{a}");
        assert!(a["msg"].as_str().unwrap().contains("in clear"), "{a}");
        assert!(!a.to_string().contains("AKIDclear"), "{a}");
        let (s, a) = post(&client, &url("/accounts/out"), ops, &out2).await;
        assert_eq!((s, a["data"]["version"].as_u64()), (200, Some(1)), "{a}");
        let accounts = get(&client, &url("/accounts"), "bulk-token").await;
        assert_eq!(accounts["data"][0]["version"], 1, "{accounts}");
        assert_eq!(accounts["data"][0]["settings"]["dir"], "var/outbox2");
        pause();
        let (s, b2) = post(
            &client,
            &url("/send"),
            bulk,
            &send_body("13800138001", "b2"),
        )
        .await;
        assert_eq!(s, 200, "{b2}");
        // The lists change the same way (and a sender may not change them either).
        let wl = json!({"whitelist": ["13800138001"]});
        let (s, _) = post(&client, &url("/lists"), bulk, &wl).await;
        assert_eq!(s, 403);
        let (s, l) = post(&client, &url("/lists"), ops, &json!({"discard": [99]})).await;
        assert_eq!(s, 400, "{l}");
        let (s, l) = post(&client, &url("/lists"), ops, &wl).await;
        assert_eq!(s, 200, "{l}");
        let unread = client.get(url("/lists")).send().await.unwrap().status();
        assert_eq!(unread, 401, "the whitelist is shown to callers only");
        let lists = get(&client, &url("/lists"), "bulk-token").await;
        assert_eq!(
            lists["data"]["whitelist"],
            json!(["13800138001"]),
            "{lists}"
        );
        let (s, d) = post(&client, &url("/templates/1/disable"), ops, &json!({})).await;
        assert_eq!(s, 200, "{d}");
        let (s, r) = post(&client, &url("/send"), bulk, &send_body("13800138002", "c")).await;
        assert_eq!(s, 400, "{r}");
        assert!(r["msg"].as_str().unwrap().contains("disabled"), "{r}");
        let listed = get(&client, &url("/templates"), "ops-token").await;
        assert_eq!(listed["data"][0]["version"], 2, "{listed}");
        assert_eq!(listed["data"][0]["enabled"], false, "{listed}");
        (id_of(&first), id_of(&b), id_of(&b2))
    });
    let rows = tracked(&job);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let outbox = std::fs::read_to_string(dir.path().join("var/outbox/sms.jsonl")).unwrap();
    let content: BTreeMap<String, String> = outbox
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["message_id"].as_str().unwrap().to_string(),
                v["content"]["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(content[&before], "hi a");
    assert_eq!(content[&after], "bye b");
    assert!(!content.contains_key(&moved));
    let outbox2 = std::fs::read_to_string(dir.path().join("var/outbox2/sms.jsonl")).unwrap();
    assert!(
        outbox2.contains(&moved) && outbox2.contains("bye b2"),
        "{outbox2}"
    );
}
