//! The web console served by `tidings serve` at `/` (docs/console.md): one page of plain
//! HTML, CSS and JavaScript compiled into the binary (`dataflows/console/`; no CDN, nothing
//! fetched at run time), over the service's REST API and these data routes:
//!
//! | request | answers |
//! |---|---|
//! | `GET /jobs/{name}/templates` | the job's templates, with the variables each uses |
//! | `POST /jobs/{name}/preview` `{"template": ID, "variables": {...}}` | the rendered content and the rules that apply, or why it cannot render |
//! | `GET /jobs/{name}/trace?receiver=R` or `?message=ID` | the event rows, oldest first (`{"columns", "rows"}`) |
//! | `POST /jobs/{name}/sql` `{"query": "SELECT …"}` | a read-only statement's result (`{"columns", "rows", "truncated"}`) |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Refusal, Supervisor};
use crate::admin::Problem;

/// Rows a console answer holds at most.
pub const MAX_ROWS: usize = 5_000;
/// How long a console statement may run.
pub const SQL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// The page and its assets: public (they hold no data; the page asks for a token).
pub fn assets() -> Router {
    let asset = |kind: &'static str, body: &'static str| {
        routing::get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    Router::new()
        .route("/", asset("text/html; charset=utf-8", INDEX))
        .route(
            "/console/app.js",
            asset("text/javascript; charset=utf-8", SCRIPT),
        )
        .route("/console/app.css", asset("text/css; charset=utf-8", STYLE))
}

/// The data routes (behind the service's token layer).
pub fn routes() -> Router<Arc<Supervisor>> {
    Router::new()
        .route(
            "/jobs/{name}/templates",
            routing::get(templates).post(put_template),
        )
        .route(
            "/jobs/{name}/templates/{id}/disable",
            routing::post(disable_template),
        )
        .route("/jobs/{name}/lists", routing::get(lists).post(put_lists))
        .route("/jobs/{name}/accounts", routing::get(accounts))
        .route(
            "/jobs/{name}/accounts/{account}",
            routing::post(put_account),
        )
        .route("/reports", routing::get(report_list))
        .route("/jobs/{name}/reports/{report}", routing::post(report))
        .route("/jobs/{name}/preview", routing::post(preview))
        .route("/jobs/{name}/trace", routing::get(trace))
        .route("/jobs/{name}/sql", routing::post(sql))
}

fn refused(r: Refusal) -> Response {
    r.into_response()
}

async fn job_of(s: &Arc<Supervisor>, name: String) -> Result<Arc<crate::Job>, Response> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || s.job(&name))
        .await
        .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())))
        .map_err(refused)
}

/// The `{$name}` placeholders of a content model, sorted, each once.
fn variables(content: &serde_json::Map<String, Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(start) = rest.find("{$") {
                    let after = &rest[start + 2..];
                    let Some(end) = after.find('}') else { break };
                    out.insert(after[..end].to_string());
                    rest = &after[end + 1..];
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    content.values().for_each(|v| walk(v, &mut out));
    out.into_iter().collect()
}

/// The send API's door of job `name` (Kafka jobs), or why there is none.
async fn door_of(
    s: Arc<Supervisor>,
    name: String,
) -> Result<Arc<crate::gateway::Gateway>, Response> {
    door(s, name).await.map_err(|r| match r {
        Refusal::Bad(m) if m.contains("source.kind") => Problem(
            StatusCode::BAD_REQUEST,
            format!(
                "{m}; a file job takes template changes as lines of its file (docs/templates.md)"
            ),
        )
        .into_response(),
        r => r.into_response(),
    })
}

/// Job `name`'s door (its send API), made if need be, or why it cannot be.
async fn door(s: Arc<Supervisor>, name: String) -> Result<Arc<crate::gateway::Gateway>, Refusal> {
    tokio::task::spawn_blocking(move || s.gateway(Some(&name)))
        .await
        .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())))
}

/// A refusal's words, for a page that shows them beside what it could read.
fn refusal_text(r: Refusal) -> String {
    match r {
        Refusal::BadJob(problems) => problems.join("; "),
        Refusal::Bad(m) | Refusal::NotFound(m) | Refusal::Conflict(m) | Refusal::Failed(m) => m,
    }
}

/// `POST /jobs/{name}/templates`: a template (JSON) to create or replace from now on. The
/// service's operators' token was checked by the service (the read-only token may not).
async fn put_template(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    change(s, name, crate::gateway::put_op(&body)).await
}

/// Makes a change through job `name`'s door.
async fn change(s: Arc<Supervisor>, name: String, op: tidings_operators::book::Op) -> Response {
    match door_of(s, name).await {
        Ok(g) => g.change_template(None, op).await.into_response(),
        Err(r) => r,
    }
}

/// `GET /jobs/{name}/lists`: the discard list and whitelist as a Kafka job's door knows them.
async fn lists(State(s): State<Arc<Supervisor>>, Path(name): Path<String>) -> Response {
    match door_of(s, name).await {
        Ok(g) => Json(g.lists()).into_response(),
        Err(r) => r,
    }
}

/// `POST /jobs/{name}/lists`: replace the discard list and/or the whitelist from now on.
async fn put_lists(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    change(s, name, crate::gateway::lists_op(&body)).await
}

/// `GET /jobs/{name}/accounts`: the accounts as a Kafka job's door knows them.
async fn accounts(State(s): State<Arc<Supervisor>>, Path(name): Path<String>) -> Response {
    match door_of(s, name).await {
        Ok(g) => Json(g.accounts()).into_response(),
        Err(r) => r,
    }
}

/// `POST /jobs/{name}/accounts/{account}`: replace an account's settings from now on.
async fn put_account(
    State(s): State<Arc<Supervisor>>,
    Path((name, account)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    change(s, name, crate::gateway::account_op(account, &body)).await
}

/// `POST /jobs/{name}/templates/{id}/disable`.
async fn disable_template(
    State(s): State<Arc<Supervisor>>,
    Path((name, id)): Path<(String, i64)>,
) -> Response {
    change(s, name, tidings_operators::book::Op::Disable(id)).await
}

async fn templates(State(s): State<Arc<Supervisor>>, Path(name): Path<String>) -> Response {
    let job = match job_of(&s, name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let list: Vec<Value> = job
        .templates
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t.as_ref()).unwrap_or(Value::Null);
            v["variables"] = json!(variables(&t.content));
            v
        })
        .collect();
    // A Kafka job's door knows the changes made through it: each template's newest version;
    // when the door cannot be made, why (not taken for a file job's having none).
    let (live, error) = match job.kafka {
        Some(_) => match door(s, job.file.name.clone()).await {
            Ok(g) => (Some(g.templates()["data"].clone()), None),
            Err(e) => (None, Some(refusal_text(e))),
        },
        None => (None, None),
    };
    Json(
        json!({"job": job.file.name, "templates": list, "versions": live, "versions_error": error}),
    )
    .into_response()
}

/// `POST /jobs/{name}/preview`.
#[derive(Debug, Deserialize)]
struct PreviewBody {
    template: i64,
    #[serde(default)]
    variables: tidings_model::render::Variables,
}

async fn preview(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: Result<Json<PreviewBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return Problem(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let job = match job_of(&s, name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    // A Kafka job's newest version and lists as its door knows them; else the job file's.
    let (live, lists) = match job.kafka {
        Some(_) => match door(s, job.file.name.clone()).await {
            Ok(g) => (g.template(body.template), Some(g.lists())),
            Err(e) => {
                return Problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "job {}: its send API cannot be made now, so its newest templates are unknown: {}",
                        job.file.name,
                        refusal_text(e)
                    ),
                )
                .into_response();
            }
        },
        None => (
            job.templates.get(body.template).map(|t| (**t).clone()),
            None,
        ),
    };
    let Some(t) = live.as_ref() else {
        return Problem(
            StatusCode::NOT_FOUND,
            format!("job {} has no template {}", job.file.name, body.template),
        )
        .into_response();
    };
    let account = Some(t.account.clone());
    let dedup = &job.file.dedup;
    let rules = json!({
        "shield": t.shield,
        "night": format!("{}, released at {}", job.file.shield.night, job.release_at),
        // The template's `dedup` switches both rules; the job sets their limits.
        "content_dedup": t.dedup.then(|| format!("at most {} of the same content in {} s", dedup.content.num, dedup.content.time)),
        "frequency_dedup": t.dedup.then(|| format!("at most {} per receiver and channel a day", dedup.frequency.num)),
        "discarded": match &lists {
            Some(l) => l["data"]["discard"].as_array().is_some_and(|d| d.contains(&json!(t.id))),
            None => job.file.discard.templates.contains(&t.id),
        },
        "whitelist": match &lists {
            Some(l) => l["data"]["whitelist"].clone(),
            None => json!(job.file.whitelist.receivers),
        },
        "account": account,
    });
    match tidings_model::render::render(&t.content, &body.variables) {
        Ok(content) => {
            let too_long = tidings_model::limits::check_content(t.channel, &content).err();
            Json(json!({"rendered": content, "too_long": too_long, "rules": rules})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string(), "rules": rules})),
        )
            .into_response(),
    }
}

/// `?receiver=R` or `?message=ID`.
#[derive(Debug, Deserialize)]
struct TraceQuery {
    #[serde(default)]
    receiver: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

async fn trace(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    Query(q): Query<TraceQuery>,
) -> Response {
    let receiver = q.receiver.filter(|r| !r.trim().is_empty());
    let message = q.message.filter(|m| !m.trim().is_empty());
    if receiver.is_none() && message.is_none() {
        return Problem(
            StatusCode::BAD_REQUEST,
            "give ?receiver=R or ?message=ID".into(),
        )
        .into_response();
    }
    let job = match job_of(&s, name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let forms = receiver
        .as_deref()
        .map_or_else(Vec::new, |r| job.receiver_forms(r));
    let live = redis_trace(&job, forms.clone(), message.clone()).await;
    // The newest rows, oldest first: one more than shown tells the oldest were left out.
    let batches = match run_query(&s, &job, |t| async move {
        t.trace(
            &forms,
            message.as_deref().map(str::trim),
            Some(MAX_ROWS + 1),
        )
        .await
    })
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let (kept, cut) = last_rows(batches, MAX_ROWS);
    match tidings_sql::json_table(&kept, MAX_ROWS) {
        Ok(mut v) => {
            v["truncated"] = json!(cut);
            v["redis"] = live;
            Json(v).into_response()
        }
        Err(e) => Problem(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The last `keep` rows of `batches`, and whether any before them were left out.
fn last_rows(
    batches: Vec<tidings_sql::RecordBatch>,
    keep: usize,
) -> (Vec<tidings_sql::RecordBatch>, bool) {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut skip = total.saturating_sub(keep);
    let cut = skip > 0;
    let kept = batches
        .into_iter()
        .filter_map(|b| {
            let n = b.num_rows();
            // (An empty batch with nothing to skip is kept: it holds the columns.)
            if skip > 0 && skip >= n {
                skip -= n;
                return None;
            }
            let rest = b.slice(skip, n - skip);
            skip = 0;
            Some(rest)
        })
        .collect();
    (kept, cut)
}

/// The real-time trace from the job's Redis (`tracking.redis`): a message's rows, else a
/// receiver's (kept until the end of its local day). `null` when the job has no Redis.
async fn redis_trace(job: &crate::Job, receivers: Vec<String>, message: Option<String>) -> Value {
    let Some(url) = job.file.tracking.redis.clone() else {
        return Value::Null;
    };
    let prefix = job.file.tracking.redis_prefix.clone();
    let read = tokio::task::spawn_blocking(move || {
        // One more than shown tells that older rows were left out.
        let mut r = tidings_sinks::tracking::redis::RedisTrace::connect(&url, &prefix)?
            .newest(MAX_ROWS + 1);
        match message {
            Some(m) => r.message(m.trim()),
            None => r.users(&receivers),
        }
    })
    .await;
    match read {
        Ok(Ok(mut rows)) => {
            // Oldest first: the newest MAX_ROWS are the last.
            let cut = rows.len().saturating_sub(MAX_ROWS);
            rows.drain(..cut);
            json!({"rows": rows, "truncated": cut > 0})
        }
        Ok(Err(e)) => json!({"error": format!("redis: {e}")}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// `GET /reports`: the named reports (`tidings report --list`).
async fn report_list() -> Json<Value> {
    let list: Vec<Value> = tidings_sql::reports::REPORTS
        .iter()
        .map(|r| json!({"name": r.name, "description": r.description(), "params": r.params()}))
        .collect();
    Json(Value::Array(list))
}

/// The parameters of `POST /jobs/{name}/reports/{report}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    template: Option<i64>,
    #[serde(default)]
    receiver: Option<String>,
}

/// `POST /jobs/{name}/reports/{report}`: a named report over the job's tables, in its time zone.
async fn report(
    State(s): State<Arc<Supervisor>>,
    Path((name, report)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let body: ReportBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReportBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return Problem(
                    StatusCode::BAD_REQUEST,
                    format!("{e}; send {{\"date\": \"YYYY-MM-DD\", \"template\": ID, \"receiver\": \"R\"}}, each optional"),
                )
                .into_response();
            }
        }
    };
    let report = match tidings_sql::reports::Report::find(&report) {
        Ok(r) => r,
        Err(e) => return Problem(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let job = match job_of(&s, name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let params = tidings_sql::reports::Params {
        date: body.date.filter(|d| !d.trim().is_empty()),
        template: body.template,
        receiver: body.receiver.filter(|r| !r.trim().is_empty()),
        timezone: Some(job.file.timezone.clone()),
    };
    if let Err(e) = report.render(&params) {
        return Problem(StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    answer(&s, &job, |t| async move {
        t.report(&report, &params, Some(MAX_ROWS + 1)).await
    })
    .await
}

/// `POST /jobs/{name}/sql`.
#[derive(Debug, Deserialize)]
struct SqlBody {
    query: String,
}

async fn sql(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: Result<Json<SqlBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return Problem(
                StatusCode::BAD_REQUEST,
                format!("{}; send {{\"query\": \"SELECT …\"}}", e.body_text()),
            )
            .into_response();
        }
    };
    let job = match job_of(&s, name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    answer(&s, &job, |t| async move {
        t.query_read_only(&body.query, MAX_ROWS + 1, SQL_TIMEOUT)
            .await
    })
    .await
}

/// Opens the job's tracking tables, runs `f` on them, and answers its rows as JSON.
async fn answer<F, Fut>(s: &Supervisor, job: &Arc<crate::Job>, f: F) -> Response
where
    F: FnOnce(Arc<tidings_sql::Tracking>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<tidings_sql::RecordBatch>, tidings_sql::SqlError>>
        + Send
        + 'static,
{
    match query_json(s, job, f).await {
        Ok(v) => Json(v).into_response(),
        Err(refused) => refused,
    }
}

/// Job `job`'s tracking tables: as opened for an earlier request of the same loaded job (unless
/// a table that had no file then has one now), or opened now. A session's queries list the
/// files anew, so one opened once serves every later request (opening them again read every
/// compaction list again: on an object store, a round trip each).
async fn tables(
    s: &Supervisor,
    job: &Arc<crate::Job>,
) -> Result<Arc<tidings_sql::Tracking>, Response> {
    let name = &job.file.name;
    let lock = || s.tables.lock().unwrap_or_else(|p| p.into_inner());
    let kept = super::made_for(&lock(), name, job);
    if let Some(t) = kept
        && !t.stale().await
    {
        return Ok(t);
    }
    let t = Arc::new(open_tables(job).await?);
    lock().insert(name.clone(), (job.clone(), t.clone()));
    Ok(t)
}

/// Opens job `job`'s tracking tables.
async fn open_tables(job: &crate::Job) -> Result<tidings_sql::Tracking, Response> {
    use tidings_sinks::tracking::TrackingDir;
    let opened = match &job.tracking_dir {
        TrackingDir::Local(dir) if !dir.is_dir() => {
            return Err(Problem(
                StatusCode::NOT_FOUND,
                format!(
                    "job {}: no tracking rows yet ({} does not exist)",
                    job.file.name,
                    dir.display()
                ),
            )
            .into_response());
        }
        TrackingDir::Local(dir) => tidings_sql::Tracking::open(dir).await,
        TrackingDir::Object(o) => {
            tidings_sql::Tracking::open_store(o.url(), o.bucket_url(), o.store()).await
        }
    };
    opened.map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

/// Runs `f` over the job's tracking tables; its rows as `{"columns", "rows", "truncated"}`.
async fn query_json<F, Fut>(s: &Supervisor, job: &Arc<crate::Job>, f: F) -> Result<Value, Response>
where
    F: FnOnce(Arc<tidings_sql::Tracking>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<tidings_sql::RecordBatch>, tidings_sql::SqlError>>
        + Send
        + 'static,
{
    let batches = run_query(s, job, f).await?;
    tidings_sql::json_table(&batches, MAX_ROWS)
        .map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

/// Runs `f` over the job's tracking tables, within [`SQL_TIMEOUT`].
async fn run_query<F, Fut>(
    s: &Supervisor,
    job: &Arc<crate::Job>,
    f: F,
) -> Result<Vec<tidings_sql::RecordBatch>, Response>
where
    F: FnOnce(Arc<tidings_sql::Tracking>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<tidings_sql::RecordBatch>, tidings_sql::SqlError>>
        + Send
        + 'static,
{
    let t = tables(s, job).await?;
    // Trace and reports are bounded as typed SQL is: a receiver of millions of rows, or a
    // report over every day, is cut off rather than holding the service's threads.
    // The timer is made where the query runs (a timer belongs to the runtime that makes it).
    let query = f(t);
    let bounded = async move { tokio::time::timeout(SQL_TIMEOUT, query).await };
    let ran = match queries() {
        // Cancelled if the caller goes away first (its handler dropped: a JoinSet aborts
        // its tasks when dropped).
        Some(runtime) => {
            let mut task = tokio::task::JoinSet::new();
            task.spawn_on(bounded, runtime.handle());
            let failed = |why: String| {
                Problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the query failed: {why}"),
                )
                .into_response()
            };
            match task.join_next().await {
                Some(joined) => joined.map_err(|e| failed(e.to_string()))?,
                None => return Err(failed("its task was not run".into())),
            }
        }
        None => bounded.await,
    };
    let Ok(result) = ran else {
        return Err(Problem(
            StatusCode::BAD_REQUEST,
            format!(
                "the query ran longer than {} s and was cancelled; narrow it (a date, a template)",
                SQL_TIMEOUT.as_secs()
            ),
        )
        .into_response());
    };
    result.map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

/// The runtime console queries run on: two threads of their own, so that DataFusion's work over
/// a day of rows does not take the HTTP server's threads, which answer the send API too. `None`
/// if it cannot be made (no threads left): queries then run where they are asked.
fn queries() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tidings-sql")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}
