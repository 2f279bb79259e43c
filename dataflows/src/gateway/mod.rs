//! The austin-compatible HTTP send API (docs/api.md): `POST /send`, `/batchSend`, `/recall`
//! with austin's bodies, answered as austin answers, in front of a job's Kafka topic.
//!
//! A request is judged at the door by the job's own validator (the function the graph runs
//! first), so a request the door accepts is one the graph will not turn into a dead letter
//! for what the door could know (JSON, code, template, 1–100 receivers, variables, content
//! size). The door is all-or-nothing: one bad param refuses the whole request, and nothing is
//! produced. An accepted request is produced as sent (an idempotent producer, `acks=all`, the
//! record's timestamp the time it was accepted) and answered only once the broker has
//! acknowledged it; each param's `messageId` is then computed from the acknowledgement
//! (topic, partition, offset, param index) exactly as the graph computes it, so the answer
//! names the ids the tracking rows will carry.

mod callers;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tidings_model::ids;
use tidings_model::time::{Millis, wall_ms};
use tidings_operators::SourceRecord;
use tidings_operators::book::{Change, Found, Op};
use tidings_operators::validate::Validator;

pub use callers::{Callers, hash_token};

use crate::Job;
use crate::kafka::WithProperties;

/// austin's answer codes (its `RespStatusEnum`): accepted (SUCCESS).
pub const OK: &str = "0";
/// A request the door refuses (austin's CLIENT_BAD_PARAMETERS, "客户端参数错误").
pub const BAD_REQUEST: &str = "A0001";
/// The request's template is unknown or disabled (austin's TEMPLATE_NOT_FOUND,
/// "找不到模板或模板已被删除").
pub const TEMPLATE_NOT_FOUND: &str = "A0002";
/// A param lists more than 100 receivers (austin's TOO_MANY_RECEIVER, "传入的接收者大于100个").
pub const TOO_MANY_RECEIVERS: &str = "A0003";
/// A missing or wrong token.
pub const UNAUTHORIZED: &str = "A0401";
/// A caller over its rate.
pub const TOO_MANY: &str = "A0429";
/// The broker did not take the request (austin's SERVICE_ERROR).
pub const SERVICE_ERROR: &str = "B0001";

/// The largest body taken: under librdkafka's default `message.max.bytes` (1,000,000) with
/// room for the record's framing.
pub const MAX_BODY: usize = 990_000;

/// How long a produce may wait in the producer's queue and for the broker's acknowledgement.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a record waits for room in the producer's queue: none, so that the answer comes
/// within [`PRODUCE_TIMEOUT`] as docs/api.md says (a full queue is refused at once: nothing
/// was sent, retry).
const QUEUE_TIMEOUT: Duration = Duration::ZERO;
/// How long a request waits for the template changes ahead of it (each produced under
/// [`PRODUCE_TIMEOUT`]): a slow broker behind several queued changes is answered 503 (nothing
/// sent) instead of holding the caller for their sum.
const CHANGE_WAIT: Duration = PRODUCE_TIMEOUT;

/// Which route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /send`: one `messageParam`.
    Send,
    /// `POST /batchSend`: a `messageParamList`.
    BatchSend,
    /// `POST /recall`: `recallMessageIds`.
    Recall,
}

/// The send API of one job.
pub struct Gateway {
    metrics: metrics::Metrics,
    topic: String,
    producer: FutureProducer,
    /// The door's validator; its book learns the template changes made through this door.
    validator: std::sync::RwLock<Validator>,
    /// Where the door keeps the changes it made (`state_dir/gateway-templates.json`), so a
    /// restarted door still knows them.
    book_path: std::path::PathBuf,
    /// One change at a time: checked, produced and applied in the order the topic has them
    /// (written). A request is stamped and judged between two changes (read): one stamped
    /// after a change's event time is judged with it applied, as the graph judges it.
    changing: tokio::sync::RwLock<()>,
    /// One save of the door's book at a time, each of the newest book (after the change lock
    /// is let go: requests are judged meanwhile).
    saving: tokio::sync::Mutex<()>,
    /// The latest stamp a request took between two changes: a change is stamped after it (one
    /// in the same millisecond would be in effect at the request's event time, `at <= t`).
    stamped: std::sync::atomic::AtomicI64,
    callers: Callers,
    /// `gateway.http_status = "austin"`: a send route's coded answer is HTTP 200.
    austin_status: bool,
    /// Where a campaign's crowd is read from, and the job's zone (a campaign put is checked
    /// as the job file's are).
    crowd_dir: std::path::PathBuf,
    tz: chrono_tz::Tz,
    /// The job file's accounts (`GET /accounts`).
    accounts: std::collections::BTreeMap<String, tidings_sinks::account::AccountConfig>,
}

/// An answer in austin's shape, with its HTTP status.
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Answer {
    /// An answer with `code` and `msg`.
    pub fn new(status: StatusCode, code: &str, msg: String) -> Answer {
        Answer {
            status,
            // austin's SendResponse: a refusal's `data` is null.
            body: json!({"code": code, "msg": msg, "data": null}),
            retry_after: None,
        }
    }

    /// 400, A0001: austin's "客户端参数错误" and why.
    pub fn bad(why: impl std::fmt::Display) -> Answer {
        Answer::new(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            format!("客户端参数错误: {why}"),
        )
    }

    /// 400 for a request the job's validator refuses, with every reason, coded as austin codes
    /// the same refusal: an unknown or disabled template A0002, a param of more than 100
    /// receivers A0003, anything else A0001.
    fn refused(reasons: &[&str]) -> Answer {
        let why = reasons.join("; ");
        use tidings_operators::validate::{DISABLED, UNKNOWN_TEMPLATE};
        let (code, text) = if reasons.iter().any(|r| {
            r.starts_with(UNKNOWN_TEMPLATE) || (r.starts_with("template ") && r.contains(DISABLED))
        }) {
            (TEMPLATE_NOT_FOUND, "找不到模板或模板已被删除")
        } else if reasons
            .iter()
            .any(|r| r.contains(tidings_model::receiver::TOO_MANY_SAID))
        {
            (TOO_MANY_RECEIVERS, "传入的接收者大于100个")
        } else {
            (BAD_REQUEST, "客户端参数错误")
        };
        Answer::new(StatusCode::BAD_REQUEST, code, format!("{text}: {why}"))
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl Gateway {
    /// The API of `job` (its `source.kind` must be kafka), producing through `brokers` (the
    /// job's own by default).
    pub fn connect(job: &Job, brokers: Option<&str>) -> anyhow::Result<Gateway> {
        let Some(kafka) = &job.kafka else {
            anyhow::bail!(
                "{}: source.kind is not \"kafka\": the send API produces to the job's topic",
                job.path.display()
            );
        };
        kafka
            .ready()
            .map_err(|why| anyhow::anyhow!("{}: {why}", job.path.display()))?;
        let book_path = job.state_dir.join(DOOR_BOOK);
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers.unwrap_or(&kafka.brokers))
            // Answered only after every in-sync replica has the record, and never written
            // twice by the producer's own retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .with_properties(&kafka.properties)
            // After the job's properties (their keys are librdkafka's own names, so this
            // replaces any of its aliases): a caller is answered within the 10 s docs/api.md
            // promises, whatever the job file sets for its consumers.
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(Gateway {
            metrics: metrics::Metrics::new(&job.file.name),
            topic: kafka.topic.clone(),
            producer,
            validator: std::sync::RwLock::new(door_validator(job, &book_path)?),
            book_path,
            changing: tokio::sync::RwLock::new(()),
            saving: tokio::sync::Mutex::new(()),
            stamped: std::sync::atomic::AtomicI64::new(i64::MIN),
            accounts: job.file.accounts.clone(),
            callers: Callers::new(&job.gateway.callers),
            austin_status: job.gateway.http_status == crate::job::HttpStatus::Austin,
            crowd_dir: job.crowd_dir.clone(),
            tz: job.tz,
        })
    }

    /// A campaign put checked as the job file's are, beyond the book's check: its expression
    /// names a time in the next five years and its crowd's header names its receivers.
    fn check_campaign(&self, t: &tidings_model::Template) -> Result<(), String> {
        crate::campaign::checked(t, true, &self.crowd_dir, self.tz, true, false)
            .map(|_| ())
            .map_err(|why| format!("template change: template {}: {why}", t.id))
    }

    /// The discard list and whitelist as the door knows them (`GET /lists`).
    pub fn lists(&self) -> Value {
        let v = self.validator.read().unwrap_or_else(|p| p.into_inner());
        let (discard, whitelist) = v.book().lists_at(Millis::MAX);
        let mut discard: Vec<i64> = discard.iter().copied().collect();
        let mut whitelist: Vec<&String> = whitelist.iter().collect();
        discard.sort_unstable();
        whitelist.sort_unstable();
        json!({"code": OK, "msg": "操作成功", "data": {"discard": discard, "whitelist": whitelist}})
    }

    /// The templates as the door knows them: the job file's, with the changes made through
    /// this door (`GET /templates`).
    pub fn templates(&self) -> Value {
        let v = self.validator.read().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Value> = v
            .book()
            .latest()
            .into_iter()
            .map(|(id, found)| {
                let (version, template) = match &found {
                    Found::Base(t) => (0, Some(&***t)),
                    Found::Live(l) => (l.version, Some(&l.template)),
                    Found::Disabled { version, .. } => (*version, None),
                    Found::Unknown => (0, None),
                };
                json!({"id": id, "version": version, "enabled": template.is_some(), "template": template})
            })
            .collect();
        json!({"code": OK, "msg": "操作成功", "data": list})
    }

    /// The accounts as the door knows them: each with its channel and provider, and the
    /// version and table the changes made through this door gave it (`GET /accounts`; the
    /// job file's settings are not shown: they may hold secrets).
    pub fn accounts(&self) -> Value {
        let v = self.validator.read().unwrap_or_else(|p| p.into_inner());
        let history = v.book().account_history();
        let list: Vec<Value> = self
            .accounts
            .iter()
            .map(|(name, c)| match history.get(name).and_then(|h| h.last()) {
                Some(e) => json!({"account": name, "version": e.version,
                    "channel": c.channel.name(), "settings": e.settings,
                    "eventTime": e.at, "source": e.source}),
                None => json!({"account": name, "version": 0,
                    "channel": c.channel.name(), "provider": c.provider.name()}),
            })
            .collect();
        json!({"code": OK, "msg": "操作成功", "data": list})
    }

    /// Template `id` as the door knows it now (`None`: unknown or disabled).
    pub fn template(&self, id: i64) -> Option<tidings_model::Template> {
        let v = self.validator.read().unwrap_or_else(|p| p.into_inner());
        v.book().at(id, Millis::MAX).template().cloned()
    }

    /// Creates, replaces or disables a template (docs/templates.md "Live changes"): the change
    /// is checked, produced to the job's topic like a request (acks=all, timestamp now) and
    /// answered once acknowledged; the job applies it from that event time on. `headers`
    /// name the caller (a caller with `templates = true`); `None`: the service that serves
    /// the door checked its operators' token. It runs as a task of its own: a caller who hangs
    /// up does not cancel it between the broker's acknowledgement and the door's book (the job
    /// would apply the change and the door judge requests without it).
    pub async fn change_template(self: &Arc<Self>, headers: Option<&HeaderMap>, op: Op) -> Answer {
        let door = Arc::clone(self);
        let headers = headers.cloned();
        tokio::spawn(async move { door.change(headers.as_ref(), op).await })
            .await
            .unwrap_or_else(|e| {
                Answer::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    SERVICE_ERROR,
                    format!("服务执行异常: the change failed: {e}; look at GET /templates"),
                )
            })
    }

    async fn change(&self, headers: Option<&HeaderMap>, op: Op) -> Answer {
        let caller = match headers {
            Some(h) => self.callers.identify(h),
            None => Ok(None),
        };
        match caller {
            Ok(None) if headers.is_none() => {}
            Ok(caller) if self.callers.may_change_templates(caller) => {}
            Ok(_) => {
                return Answer::new(
                    StatusCode::FORBIDDEN,
                    UNAUTHORIZED,
                    "this caller may not change templates: set templates = true in its [gateway.callers.NAME]".into(),
                );
            }
            Err(refused) => return refused,
        }
        let _one_at_a_time = self.changing.write().await;
        let (id, body) = {
            let v = self.validator.read().unwrap_or_else(|p| p.into_inner());
            match &op {
                Op::Account { name, settings } => {
                    if let Err(why) = v.book().check_account(name, settings) {
                        return Answer::bad(why);
                    }
                    (
                        None,
                        json!({"code": "account", "name": name, "account": settings}),
                    )
                }
                Op::Put(t) => {
                    if let Err(why) = v.book().check(t).and_then(|()| self.check_campaign(t)) {
                        return Answer::bad(why);
                    }
                    (Some(t.id), json!({"code": "template", "template": t}))
                }
                Op::Disable(id) => {
                    if v.book().at(*id, Millis::MAX).template().is_none() {
                        return Answer::bad(format!("template {id} is not an enabled template"));
                    }
                    (Some(*id), json!({"code": "template", "disable": id}))
                }
                Op::Lists { discard, whitelist } => {
                    let unknown = discard
                        .iter()
                        .flatten()
                        .find(|id| v.book().at(**id, Millis::MAX) == Found::Unknown);
                    if let Some(id) = unknown {
                        return Answer::bad(format!("discard: template {id} does not exist"));
                    }
                    let mut body = json!({"code": "lists"});
                    if let Some(d) = discard {
                        body["discard"] = json!(d);
                    }
                    if let Some(w) = whitelist {
                        body["whitelist"] = json!(w);
                    }
                    (None, body)
                }
                Op::Bad(why) => return Answer::bad(why),
            }
        };
        let now = wall_ms().max(
            self.stamped
                .load(std::sync::atomic::Ordering::SeqCst)
                .saturating_add(1),
        );
        // Requests answered after this change are stamped at or after it, even if the wall
        // clock steps back (NTP, a VM resumed): they are judged with it, as its answer says.
        self.stamped
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        let bytes = body.to_string().into_bytes();
        let account = match &op {
            Op::Account { name, .. } => Some(name.clone()),
            _ => None,
        };
        let key = match (&account, id) {
            (Some(name), _) => format!("account:{name}"),
            (None, Some(id)) => id.to_string(),
            (None, None) => "lists".to_string(),
        };
        let record = FutureRecord::<str, [u8]>::to(&self.topic)
            .key(&key)
            .payload(&bytes)
            .timestamp(now);
        let delivered = match self.producer.send(record, QUEUE_TIMEOUT).await {
            Ok(d) => d,
            Err((e, _)) => {
                // A change made twice is the same change (the later one in effect): sending
                // it again is safe whether or not this one was written.
                return Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVICE_ERROR,
                    format!(
                        "服务执行异常: the broker did not acknowledge the change ({e}); it may or may not have been written (this door has not applied it): send the same change again"
                    ),
                );
            }
        };
        let source = format!(
            "{}/{}/{}",
            self.topic, delivered.partition, delivered.offset
        );
        let change = Change {
            event_time: now,
            order: ((delivered.partition as u32 as u128) << 96)
                | ((delivered.offset as u64 as u128) << 32),
            source: source.clone(),
            origin: 0,
            op,
            bytes,
        };
        let applied = self
            .validator
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .book_mut()
            .apply(&change);
        let version = match applied {
            Ok(
                tidings_operators::book::Applied::Template { version, .. }
                | tidings_operators::book::Applied::Account { version },
            ) => Some(version),
            _ => None,
        };
        // Saved outside the change lock: requests are judged meanwhile; the newest book each
        // time, one save at a time, so a save never writes an older book over a newer one.
        drop(_one_at_a_time);
        let _one_save = self.saving.lock().await;
        let book = self
            .validator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .book()
            .clone();
        let path = self.book_path.clone();
        let saved = tokio::task::spawn_blocking(move || book.save(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = saved {
            tracing::warn!(
                "{}: {e}: this door forgets the change when it restarts (the job keeps it)",
                self.book_path.display()
            );
        }
        Answer {
            status: StatusCode::OK,
            body: match account {
                Some(name) => json!({"code": OK, "msg": "操作成功", "data": {
                    "account": name, "version": version, "eventTime": now, "source": source}}),
                None => json!({"code": OK, "msg": "操作成功", "data": {
                    "id": id, "version": version, "eventTime": now, "source": source}}),
            },
            retry_after: None,
        }
    }

    /// Whether callers are configured (then every request must carry one's token).
    pub fn has_callers(&self) -> bool {
        self.callers.any()
    }

    /// The routes: `/send`, `/batchSend`, `/recall`, `/templates`, `/openapi.json`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/templates", routing::get(get_templates).post(put_template))
            .route("/templates/{id}/disable", routing::post(disable_template))
            .route("/lists", routing::get(get_lists).post(put_lists))
            .route("/accounts", routing::get(get_accounts))
            .route("/accounts/{name}", routing::post(put_account))
            .route("/send", routing::post(send))
            .route("/batchSend", routing::post(batch_send))
            .route("/recall", routing::post(recall))
            .route(
                "/openapi.json",
                routing::get(|| async { axum::Json(openapi::document()) }),
            )
            .route(
                "/metrics",
                routing::get(|State(g): State<Arc<Gateway>>| async move {
                    (
                        [(header::CONTENT_TYPE, crate::admin::metrics::CONTENT_TYPE)],
                        g.metrics_text(),
                    )
                }),
            )
            .with_state(self)
    }

    /// The send API's metrics as OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// Judges, produces and answers one request (and counts it).
    pub async fn handle(&self, route: Route, headers: &HeaderMap, body: &[u8]) -> Answer {
        self.handle_as(route, headers, body, false).await
    }

    /// [`Gateway::handle`]; an `operator` (`tidings serve`'s operators' token, checked by the
    /// service) is let past the job's `[gateway.callers]` as no caller: not rate-limited.
    pub async fn handle_as(
        &self,
        route: Route,
        headers: &HeaderMap,
        body: &[u8],
        operator: bool,
    ) -> Answer {
        let start = std::time::Instant::now();
        let mut answer = self.answer(route, headers, body, operator).await;
        let code = answer.body["code"].as_str().unwrap_or("");
        if self.austin_status && !code.is_empty() {
            // austin answers every refusal 200, the code in the body (Retry-After stays).
            answer.status = StatusCode::OK;
        }
        let path = match route {
            Route::Send => "/send",
            Route::BatchSend => "/batchSend",
            Route::Recall => "/recall",
        };
        self.metrics
            .answered(path, code, start.elapsed().as_secs_f64());
        answer
    }

    /// Judges, produces and answers one request: the caller's token (401), the body (400,
    /// 415), the caller's rate in messages (429), then the broker.
    async fn answer(
        &self,
        route: Route,
        headers: &HeaderMap,
        body: &[u8],
        operator: bool,
    ) -> Answer {
        let caller = match operator {
            true => None,
            false => match self.callers.identify(headers) {
                Ok(c) => c,
                Err(refused) => return refused,
            },
        };
        // A browser can post text/plain or a form to any address without asking first; only
        // JSON is taken, so a page cannot make an operator's browser send messages.
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json {
            return Answer::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                BAD_REQUEST,
                "客户端参数错误: send the body as Content-Type: application/json".into(),
            );
        }
        if body.len() > MAX_BODY {
            return Answer::bad(format!(
                "the body is {} bytes, more than {MAX_BODY}",
                body.len()
            ));
        }
        let (now, checked) = {
            let Ok(_between_changes) =
                tokio::time::timeout(CHANGE_WAIT, self.changing.read()).await
            else {
                return Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVICE_ERROR,
                    format!(
                        "服务执行异常: template changes ahead of this request waited {} s for the broker; nothing was sent: retry it",
                        CHANGE_WAIT.as_secs()
                    ),
                );
            };
            // Never before the last change's stamp (a wall clock stepped back).
            let wall = wall_ms();
            let now = self
                .stamped
                .fetch_max(wall, std::sync::atomic::Ordering::SeqCst)
                .max(wall);
            (now, self.check(route, body, now))
        };
        let ids = match checked {
            Ok(ids) => ids,
            Err(refused) => return refused,
        };
        // A recall counts as one.
        if let Err(refused) = self.callers.within_rate(caller, ids.len().max(1)) {
            return refused;
        }
        let record = FutureRecord::<(), [u8]>::to(&self.topic)
            .payload(body)
            .timestamp(now);
        let delivered = match self.producer.send(record, QUEUE_TIMEOUT).await {
            Ok(d) => d,
            Err((e, _)) => {
                use rdkafka::error::{KafkaError, RDKafkaErrorCode};
                // Too large for the brokers (or the client's `message.max.bytes`): sent again,
                // it is refused again; the caller is told to split it, not to retry.
                if matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
                ) {
                    return Answer::bad(format!(
                        "the broker refuses a record of {} bytes (message.max.bytes): split the request into smaller ones; nothing was sent",
                        body.len()
                    ));
                }
                // A timeout leaves the record's fate unknown: it may have been written.
                let unknown = matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
                );
                let what = if unknown {
                    "the request may or may not have been written; look it up by bizId before sending it again"
                } else {
                    "nothing was sent; retry it"
                };
                return Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVICE_ERROR,
                    format!(
                        "服务执行异常: the broker did not acknowledge the request ({e}); {what}"
                    ),
                );
            }
        };
        let data: Vec<Value> = ids
            .into_iter()
            .enumerate()
            .map(|(index, (biz_id, business_id))| {
                json!({
                    "bizId": biz_id,
                    "messageId": ids::message_id(&self.topic, delivered.partition, delivered.offset, index as u32),
                    "businessId": business_id,
                })
            })
            .collect();
        // A recall's `data` is null, as austin's RecallService answers.
        let data = match route {
            Route::Recall => Value::Null,
            _ => Value::Array(data),
        };
        Answer {
            status: StatusCode::OK,
            body: json!({"code": OK, "msg": "操作成功", "data": data}),
            retry_after: None,
        }
    }

    /// What the door can know about `body` on `route`: each param's `(bizId, businessId)` if
    /// the whole request is acceptable (none for a recall), or the refusal.
    fn check(
        &self,
        route: Route,
        body: &[u8],
        now: Millis,
    ) -> Result<Vec<(Option<String>, i64)>, Answer> {
        let value: Value = serde_json::from_slice(tidings_model::request::strip_bom(body))
            .map_err(|e| Answer::bad(format!("unparsable JSON: {e}")))?;
        let Some(fields) = value.as_object() else {
            return Err(Answer::bad("the body is not a JSON object"));
        };
        let code = fields.get("code").and_then(Value::as_str);
        // A field given as null is not given (requests.md), as clients that write every
        // field write it.
        let given = |k: &str| fields.get(k).is_some_and(|v| !v.is_null());
        // A recall without recallMessageIds takes back every message of the template.
        let (want_code, want, other) = match route {
            Route::Send => ("send", Some("messageParam"), Some("messageParamList")),
            Route::BatchSend => ("send", Some("messageParamList"), Some("messageParam")),
            Route::Recall => ("recall", None, None),
        };
        let path = match route {
            Route::Send => "/send",
            Route::BatchSend => "/batchSend",
            Route::Recall => "/recall",
        };
        if code != Some(want_code) {
            return Err(Answer::bad(format!(
                "{path} takes \"code\": \"{want_code}\", not {}",
                fields
                    .get("code")
                    .map_or("nothing".into(), Value::to_string)
            )));
        }
        if let Some(other) = other
            && given(other)
        {
            let use_path = if route == Route::Send {
                "/batchSend"
            } else {
                "/send"
            };
            return Err(Answer::bad(format!(
                "{path} takes {}; {other} goes to {use_path}",
                want.unwrap_or_default()
            )));
        }
        if let Some(want) = want
            && !given(want)
        {
            return Err(Answer::bad(format!("{path} needs {want}")));
        }
        let record = SourceRecord {
            source: self.topic.as_str().into(),
            partition: 0,
            offset: 0,
            bytes: body.to_vec(),
            read_time: now,
            timestamp: Some(now),
            event_time: now,
            late_by: 0,
            bad_time: None,
        };
        let judged = self
            .validator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .validate(&record, now);
        if !judged.dead.is_empty() {
            let reasons: Vec<&str> = judged.dead.iter().map(|d| d.reason.as_str()).collect();
            return Err(Answer::refused(&reasons));
        }
        if route == Route::Recall {
            return Ok(Vec::new());
        }
        Ok(judged
            .messages
            .iter()
            .map(|m| (m.meta.biz_id.clone(), m.meta.business_id))
            .collect())
    }
}

async fn send(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Answer {
    g.handle(Route::Send, &headers, &body).await
}

async fn batch_send(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Answer {
    g.handle(Route::BatchSend, &headers, &body).await
}

async fn recall(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Answer {
    g.handle(Route::Recall, &headers, &body).await
}

/// The name of the door's book in the job's state directory.
const DOOR_BOOK: &str = "gateway-templates.json";

/// The job's validator, with the changes a door made before (its book file), if any.
fn door_validator(job: &Job, book_path: &std::path::Path) -> anyhow::Result<Validator> {
    let mut v = crate::run::validator(job);
    if book_path.exists() {
        v.book_mut()
            .load(book_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", book_path.display()))?;
    }
    Ok(v)
}

/// A put body: a template as JSON (the fields of a `[[template]]` table).
pub fn put_op(body: &[u8]) -> Op {
    match serde_json::from_slice::<tidings_model::Template>(body) {
        Ok(t) => Op::Put(Box::new(t)),
        Err(e) => Op::Bad(format!(
            "the body is not a template: {e} (the fields of a [[template]] table, as JSON)"
        )),
    }
}

async fn put_template(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Answer {
    g.change_template(Some(&headers), put_op(&body)).await
}

async fn disable_template(
    State(g): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    headers: HeaderMap,
) -> Answer {
    g.change_template(Some(&headers), Op::Disable(id)).await
}

/// A lists body: `{"discard": [ids], "whitelist": [receivers]}` (either or both).
pub fn lists_op(body: &[u8]) -> Op {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lists {
        discard: Option<Vec<i64>>,
        whitelist: Option<Vec<String>>,
    }
    match serde_json::from_slice::<Lists>(body) {
        Ok(Lists {
            discard: None,
            whitelist: None,
        }) => Op::Bad("give \"discard\" (template ids), \"whitelist\" (receivers) or both".into()),
        Ok(l) => Op::Lists {
            discard: l.discard,
            whitelist: l.whitelist,
        },
        Err(e) => Op::Bad(format!(
            "the body is not {{\"discard\": [ids], \"whitelist\": [receivers]}}: {e}"
        )),
    }
}

/// An account body: the `[accounts.NAME]` table as JSON, its secrets as `${ENV}` references.
pub fn account_op(name: String, body: &[u8]) -> Op {
    match serde_json::from_slice::<Value>(body) {
        Ok(settings @ Value::Object(_)) => Op::Account { name, settings },
        Ok(_) => {
            Op::Bad("the body is not an object: send the [accounts.NAME] table as JSON".into())
        }
        Err(e) => Op::Bad(format!(
            "the body is not JSON: {e} (send the [accounts.NAME] table as JSON)"
        )),
    }
}

async fn put_account(
    State(g): State<Arc<Gateway>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    g.change_template(Some(&headers), account_op(name, &body))
        .await
}

async fn get_accounts(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    reader(&g, &headers, Gateway::accounts)
}

async fn put_lists(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Answer {
    g.change_template(Some(&headers), lists_op(&body)).await
}

/// Reads by a caller (any, when callers are configured): templates and the whitelist are not
/// for everyone who can reach the door.
fn reader(g: &Gateway, headers: &HeaderMap, what: fn(&Gateway) -> Value) -> Response {
    match g.callers.identify(headers) {
        Ok(_) => axum::Json(what(g)).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn get_templates(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    reader(&g, &headers, Gateway::templates)
}

async fn get_lists(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    reader(&g, &headers, Gateway::lists)
}
