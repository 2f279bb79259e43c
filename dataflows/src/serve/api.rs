//! The job service's REST API (axum on [`tidings_sinks::util::server::Server`]), JSON in and
//! out, behind the admin API's bearer-token layer when `serve --token` is set:
//!
//! | request | does |
//! |---|---|
//! | `POST /jobs` `{"path": "/abs/job.toml"}` or `{"job": TEXT, "files": {NAME: TEXT}}` | checks the job file as `tidings run` does (400 with its problems, nothing started), starts it; 409 when a job of its name runs; a sent job lives in `uploads/NAME/` |
//! | `GET /jobs` | every job: state, pid, restarts, last exit, started_at |
//! | `GET /jobs/{name}` | one job, with its live `/state` when it has `[admin]` and runs |
//! | `POST /jobs/{name}/stop` | SIGTERM, waits for the exit (final cut, checkpoint, commit) |
//! | `POST /jobs/{name}/restart` | stop, then start again from its checkpoint |
//! | `DELETE /jobs/{name}` | stop, and forget the job |
//! | `GET /jobs/{name}/state[/…]` | the running job's admin API `/state[/…]` (query passed on) |
//! | `GET /jobs/{name}/metrics` | the running job's `/metrics` |
//! | `GET /metrics` | the service's own families and every running job's, merged ([`super::metrics`]) |
//! | `POST /jobs/{name}/send`, `/batchSend`, `/recall` | the job's send API (docs/api.md): produced to its topic, answered with the messageIds |
//! | `POST /send`, `/batchSend`, `/recall` | the same, for the only job with a Kafka source |
//! | `GET /openapi.json` | the send API's OpenAPI document |
//!
//! A stop waits for the child on the blocking pool, never on the server's threads.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Refusal, Supervisor};
use crate::admin::Problem;

/// The body of `POST /jobs`: a job file on this node, or one sent with the files it names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The job file's absolute path on this node.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The job file's text (with `files`: sent in the request).
    #[serde(default)]
    pub job: Option<String>,
    /// The files the job names (templates, a requests file), by path relative to the job file.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// The cluster hostfile another node chose for the job (`serve --peers`): this node runs
    /// its process of it.
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
}

/// `?forwarded=true`: a stop, restart or delete another node of the cluster passed on.
#[derive(Debug, Default, Deserialize)]
pub struct Forwarded {
    #[serde(default)]
    forwarded: bool,
}

/// Who may do what: the operators' token (everything) and the support staff's read-only one
/// (reads, and the console's read-only queries). No operators' token: everything is open
/// (loopback only, by `serve`'s own rule).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `serve --token`.
    pub admin: Option<Arc<str>>,
    /// `serve --read-token`.
    pub read: Option<Arc<str>>,
}

/// The routes over `supervisor`, behind the token layer, beside the console's page (public)
/// and the jobs' send API (its own callers' tokens).
pub fn router(supervisor: Arc<Supervisor>, tokens: Tokens) -> Router {
    let api = Router::new()
        .route("/api", routing::get(index))
        .route("/jobs", routing::get(list).post(submit))
        .route("/jobs/{name}", routing::get(one).delete(delete))
        .route("/jobs/{name}/stop", routing::post(stop))
        .route("/jobs/{name}/restart", routing::post(restart))
        .route("/jobs/{name}/state", routing::get(job_api))
        .route("/jobs/{name}/state/{*what}", routing::get(job_api))
        .route("/jobs/{name}/metrics", routing::get(job_api))
        .route("/metrics", routing::get(metrics));
    #[cfg(feature = "sql")]
    let api = api.merge(super::console::routes());
    let api = api
        .fallback(|uri: axum::http::Uri| async move {
            Problem(
                StatusCode::NOT_FOUND,
                format!("no such path {}; GET /api lists them", uri.path()),
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here; GET /api lists the routes".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            authorize,
        ))
        .with_state(supervisor.clone())
        .merge(send_routes(supervisor, tokens));
    #[cfg(feature = "sql")]
    let api = api.merge(super::console::assets());
    api
}

/// The token layer: the operators' token may do anything; the read-only token may read
/// (GET, and the console's `POST …/sql`, `…/preview` and `…/reports/NAME`, which change
/// nothing: [`reads_only`]).
async fn authorize(
    State(tokens): State<Tokens>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(admin) = &tokens.admin else {
        return next.run(request).await;
    };
    let given = crate::admin::bearer_token(request.headers()).map(str::as_bytes);
    let is = |t: &Option<Arc<str>>| matches!((given, t), (Some(g), Some(t)) if crate::admin::same(g, t.as_bytes()));
    if is(&Some(admin.clone())) {
        return next.run(request).await;
    }
    if is(&tokens.read) {
        let reads = matches!(
            *request.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) || (request.method() == axum::http::Method::POST
            && reads_only(request.uri().path()));
        if reads {
            return next.run(request).await;
        }
        return Problem(
            StatusCode::FORBIDDEN,
            "the read-only token (serve --read-token) may only read; use the operators' token"
                .into(),
        )
        .into_response();
    }
    Problem(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer TOKEN (serve --token or --read-token)"
            .into(),
    )
    .into_response()
}

/// Whether a POST to `path` is one of the console's read-only queries, by the route's exact
/// shape: `/jobs/{name}/sql`, `/jobs/{name}/preview`, `/jobs/{name}/reports/{report}` (a job
/// named `reports` or `sql` gives the read-only token nothing more).
fn reads_only(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "jobs", name, "sql" | "preview"] => !name.is_empty(),
        ["", "jobs", name, "reports", report] => !name.is_empty() && !report.is_empty(),
        _ => false,
    }
}

/// The send API (docs/api.md) of the service's jobs: `/jobs/{name}/send|batchSend|recall`,
/// and `/send|batchSend|recall` for the only job with a Kafka source. A job with
/// `[gateway.callers]` checks its callers' tokens; one without takes the service's token.
fn send_routes(supervisor: Arc<Supervisor>, tokens: Tokens) -> Router {
    use crate::gateway::Route;
    let state = (supervisor, tokens);
    let at = |route: Route| {
        move |State(s): State<SendState>, headers: HeaderMap, body: Bytes| async move {
            send_to(s, None, route, headers, body).await
        }
    };
    let named = |route: Route| {
        move |State(s): State<SendState>,
              Path(name): Path<String>,
              headers: HeaderMap,
              body: Bytes| async move { send_to(s, Some(name), route, headers, body).await }
    };
    Router::new()
        .route("/send", routing::post(at(Route::Send)))
        .route("/batchSend", routing::post(at(Route::BatchSend)))
        .route("/recall", routing::post(at(Route::Recall)))
        .route("/jobs/{name}/send", routing::post(named(Route::Send)))
        .route(
            "/jobs/{name}/batchSend",
            routing::post(named(Route::BatchSend)),
        )
        .route("/jobs/{name}/recall", routing::post(named(Route::Recall)))
        .route(
            "/openapi.json",
            routing::get(|| async { Json(crate::gateway::openapi::serve_document()) }),
        )
        .with_state(state)
}

type SendState = (Arc<Supervisor>, Tokens);

async fn send_to(
    (s, tokens): SendState,
    name: Option<String>,
    route: crate::gateway::Route,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use crate::gateway::{Answer, BAD_REQUEST, SERVICE_ERROR, UNAUTHORIZED};
    let given = crate::admin::bearer_token(&headers).map(str::to_string);
    let token = tokens.admin;
    // With a service token, a request without any token learns nothing about the jobs.
    if token.is_some() && given.is_none() {
        return Answer::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED,
            "missing token: send Authorization: Bearer TOKEN (a caller's, or the service's)".into(),
        )
        .into_response();
    }
    let is = |set: &Option<Arc<str>>| {
        set.as_ref().is_some_and(|t| {
            given
                .as_deref()
                .is_some_and(|g| crate::admin::same(g.as_bytes(), t.as_bytes()))
        })
    };
    // The operators' token, and the support staff's (read-only).
    let (operator, read_only) = (is(&token), is(&tokens.read));
    // A token the service has set, and the caller's is not the service's.
    let outsider = token.is_some() && !operator && !read_only;
    let found = tokio::task::spawn_blocking(move || s.gateway(name.as_deref()))
        .await
        .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())));
    let gateway = match found {
        Ok(g) => g,
        // A token that is not the service's learns nothing of the jobs from a lookup that
        // failed (which exist, their files): a job's own callers are told apart by its door.
        Err(Refusal::NotFound(_)) if outsider => {
            return Answer::new(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "unknown token: send Authorization: Bearer TOKEN (a caller's, or the service's)"
                    .into(),
            )
            .into_response();
        }
        // Nor the job's file or its problems: its own callers learn the service failed.
        Err(Refusal::BadJob(_) | Refusal::Failed(_)) if outsider => {
            return Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_ERROR,
                "服务执行异常: the job's send API cannot be made now; try again later".into(),
            )
            .into_response();
        }
        Err(r) => {
            let (status, code, msg) = match r {
                Refusal::NotFound(m) => (StatusCode::NOT_FOUND, BAD_REQUEST, m),
                Refusal::Bad(m) | Refusal::Conflict(m) => (StatusCode::BAD_REQUEST, BAD_REQUEST, m),
                // The service's fault, not the caller's: tried again later.
                Refusal::BadJob(p) => {
                    (StatusCode::SERVICE_UNAVAILABLE, SERVICE_ERROR, p.join("; "))
                }
                Refusal::Failed(m) => (StatusCode::SERVICE_UNAVAILABLE, SERVICE_ERROR, m),
            };
            let text = if code == SERVICE_ERROR {
                "服务执行异常"
            } else {
                "客户端参数错误"
            };
            return Answer::new(status, code, format!("{text}: {msg}")).into_response();
        }
    };
    // The support staff's token reads, never sends, whether or not the job has callers.
    if read_only {
        return Answer::new(
            StatusCode::FORBIDDEN,
            UNAUTHORIZED,
            "the read-only token (serve --read-token) may not send; use the operators' token"
                .into(),
        )
        .into_response();
    }
    // The operators' token sends to any job, past its callers too (the console's test send).
    if !gateway.has_callers() && token.is_some() && !operator {
        return Answer::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED,
            "missing or wrong token: the job has no [gateway.callers], so the service's token (serve --token) is required".into(),
        )
        .into_response();
    }
    gateway
        .handle_as(route, &headers, &body, operator)
        .await
        .into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::BadJob(problems) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": problems.join("\n"), "problems": problems})),
            )
                .into_response(),
            Refusal::Bad(m) => Problem(StatusCode::BAD_REQUEST, m).into_response(),
            Refusal::NotFound(m) => Problem(StatusCode::NOT_FOUND, m).into_response(),
            Refusal::Conflict(m) => Problem(StatusCode::CONFLICT, m).into_response(),
            Refusal::Failed(m) => Problem(StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
        }
    }
}

/// Runs a supervisor call that may wait (a stop) on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<Value, Refusal> + Send + 'static,
) -> Result<Json<Value>, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())))
        .map(Json)
}

async fn index() -> Json<Value> {
    Json(json!({
        "service": "tidings serve",
        "routes": ["POST /send, /batchSend, /recall (docs/api.md)", "POST /jobs/{name}/send, /batchSend, /recall", "GET /openapi.json", "GET /jobs", "POST /jobs {\"path\": \"/abs/job.toml\"}", "GET /jobs/{name}",
            "POST /jobs/{name}/stop", "POST /jobs/{name}/restart", "DELETE /jobs/{name}",
            "GET /jobs/{name}/state[/...]", "GET /jobs/{name}/metrics", "GET /metrics"],
    }))
}

async fn list(State(s): State<Arc<Supervisor>>) -> Json<Value> {
    Json(Value::Array(s.list()))
}

async fn submit(
    State(s): State<Arc<Supervisor>>,
    body: Result<Json<Submit>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return Problem(
                StatusCode::BAD_REQUEST,
                format!("{}; send {{\"path\": \"/abs/job.toml\"}}", e.body_text()),
            )
            .into_response();
        }
    };
    // Loading a job reads its files: the blocking pool.
    let submitted = blocking(move || {
        match (&body.path, &body.job) {
        (Some(path), None) => match body.cluster.clone() {
            Some(hosts) => s.submit_forwarded(path, hosts),
            None => s.submit(path),
        },
        (None, Some(job)) => s.submit_upload(job, &body.files),
        _ => Err(Refusal::Bad(
            "send {\"path\": \"/abs/job.toml\"} or {\"job\": \"<job.toml>\", \"files\": {\"templates.toml\": \"…\"}}".into(),
        )),
    }
    });
    match submitted.await {
        Ok(j) => (StatusCode::CREATED, j).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn one(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Refusal> {
    blocking(move || {
        let (mut answer, job) = s.get(&name)?;
        if let Some(job) = job
            && let Some(admin) = &job.admin
            && let Some(addr) = crate::admin::address_of(&job)
        {
            answer["live"] = match crate::admin::get(&addr, "/state", admin.token.as_deref()) {
                Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
                Ok((status, body)) => json!({"error": format!("{addr}: {status} {body}")}),
                Err(e) => json!({"error": format!("{addr}: {e}")}),
            };
        }
        Ok(answer)
    })
    .await
}

/// The admin address and token of a running job with `[admin]`.
fn admin_of(s: &Supervisor, name: &str) -> Result<(String, Option<String>), Refusal> {
    let (_, job) = s.get(name)?;
    let job = job.ok_or_else(|| Refusal::Conflict(format!("job `{name}` is not running")))?;
    let admin = job.admin.as_ref().ok_or_else(|| {
        Refusal::NotFound(format!(
            "job `{name}` has no [admin]: it answers no live state"
        ))
    })?;
    let addr = crate::admin::address_of(&job)
        .ok_or_else(|| Refusal::Failed(format!("job `{name}`: no admin address yet")))?;
    Ok((addr, admin.token.clone()))
}

/// The path and query a job's own admin API is asked for `GET /jobs/{name}/REST?QUERY`:
/// `/REST?QUERY`, cut from the path as sent (the name may be percent-encoded there).
fn passed_on(uri: &axum::http::Uri) -> String {
    let rest = uri.path().splitn(4, '/').nth(3).unwrap_or("state");
    match uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    }
}

/// `GET /jobs/{name}/state…` and `/jobs/{name}/metrics`: the job's own answer, passed on.
async fn job_api(
    State(s): State<Arc<Supervisor>>,
    Path(params): Path<std::collections::BTreeMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    let name = params.get("name").cloned().unwrap_or_default();
    let path = passed_on(&uri);
    let asked = tokio::task::spawn_blocking(move || {
        let (addr, token) = admin_of(&s, &name)?;
        crate::admin::get(&addr, &path, token.as_deref())
            .map_err(|e| Refusal::Failed(format!("{addr}{path}: {e}")))
    })
    .await
    .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())));
    match asked {
        Ok((status, body)) => {
            let kind = if body.starts_with('{') || body.starts_with('[') {
                "application/json"
            } else {
                crate::admin::metrics::CONTENT_TYPE
            };
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(axum::http::header::CONTENT_TYPE, kind)],
                body,
            )
                .into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// `GET /metrics`: the service's families and every running job's, merged.
async fn metrics(State(s): State<Arc<Supervisor>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let jobs = s.list();
        let mut texts = vec![super::metrics::own(jobs.clone())];
        texts.extend(s.gateway_metrics());
        for j in &jobs {
            let name = j["name"].as_str().unwrap_or_default();
            if let Ok((addr, token)) = admin_of(&s, name)
                && let Ok((200, body)) = crate::admin::get(&addr, "/metrics", token.as_deref())
            {
                texts.push(body);
            }
        }
        super::metrics::merge(texts.iter().map(String::as_str))
    })
    .await
    .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::admin::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn stop(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    Query(f): Query<Forwarded>,
) -> Result<Json<Value>, Refusal> {
    blocking(move || s.stop(&name, f.forwarded)).await
}

async fn restart(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    Query(f): Query<Forwarded>,
) -> Result<Json<Value>, Refusal> {
    blocking(move || s.restart(&name, f.forwarded)).await
}

async fn delete(
    State(s): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    Query(f): Query<Forwarded>,
) -> Result<Json<Value>, Refusal> {
    blocking(move || s.delete(&name, f.forwarded)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_only_token_may_post_only_the_consoles_queries() {
        assert!(reads_only("/jobs/shop/sql"));
        assert!(reads_only("/jobs/shop/preview"));
        assert!(reads_only("/jobs/shop/reports/template-day"));
        // A job or an account named like a query route gives nothing more.
        assert!(!reads_only("/jobs/reports/stop"));
        assert!(!reads_only("/jobs/reports/restart"));
        assert!(!reads_only("/jobs/reports/templates"));
        assert!(!reads_only("/jobs/sql/lists"));
        assert!(!reads_only("/jobs/shop/accounts/sql"));
        assert!(!reads_only("/jobs/shop/accounts/preview"));
        assert!(!reads_only("/jobs/shop/templates/1/disable"));
        assert!(!reads_only("/jobs//sql"));
        assert!(!reads_only("/jobs"));
    }

    #[test]
    fn a_jobs_admin_path_is_passed_on_with_its_query_whatever_the_name() {
        let on = |u: &str| passed_on(&u.parse::<axum::http::Uri>().unwrap());
        assert_eq!(on("/jobs/shop/state"), "/state");
        assert_eq!(
            on("/jobs/shop/state/frequency?receiver=13800138000"),
            "/state/frequency?receiver=13800138000"
        );
        assert_eq!(
            on("/jobs/%E8%AE%A2%E5%8D%95/state/source?partition=1"),
            "/state/source?partition=1"
        );
        assert_eq!(on("/jobs/shop%20orders/metrics"), "/metrics");
    }
}
