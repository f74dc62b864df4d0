//! The HTTP API (S15, B7) on axum: health checks for load balancers (`/master`, `/slave`,
//! `/health`, no token), `/metrics` (no token, as Prometheus scrapes), and behind the bearer
//! token `/status`, `/events` and the commands. Served on the management IP and loopback.
//! Errors are JSON `{"error": "..."}` naming what is wrong; a refused command says why (409).

// The error of these helpers is the HTTP answer itself, returned as is by the handlers (the
// axum way); boxing it would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod events;
pub mod health;
pub mod metrics;
pub mod serve;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ridondato_adapters::DriverHandle;
use ridondato_core::{Command, ResyncKind, Target};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone)]
pub struct Api {
    pub handle: DriverHandle,
    pub token: Arc<auth::Token>,
    pub facts: health::Facts,
    pub counters: Arc<events::Counters>,
    pub events: tokio::sync::broadcast::Sender<events::Event>,
    /// What the page shows besides the status: the nodes' addresses, the file-sync cap.
    pub addresses: Arc<serde_json::Value>,
    /// Cloud mode: the control socket and the journal `cloud-switchover` runs with.
    pub cloud_switchover: Option<Arc<(std::path::PathBuf, std::path::PathBuf)>>,
    /// A cloud switch-over started from the API is running.
    pub cloud_running: Arc<std::sync::atomic::AtomicBool>,
}

impl Api {
    pub fn new(handle: DriverHandle, token: auth::Token, facts: health::Facts, addresses: serde_json::Value) -> Api {
        let counters = Arc::new(events::Counters::default());
        let events = events::spawn_watcher(handle.status.clone(), counters.clone());
        Api { handle, token: Arc::new(token), facts, counters, events, addresses: Arc::new(addresses), cloud_switchover: None, cloud_running: Arc::default() }
    }
}

/// The System Monitor page (S15): one file, embedded, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
        .route("/master", get(master).options(master))
        .route("/slave", get(slave).options(slave))
        .route("/health", get(health).options(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/events", get(events))
        .route("/state", post(state))
        .route("/switchover", post(switchover))
        .route("/cloud-switchover", post(cloud_switchover))
        .route("/maintenance", post(maintenance))
        .route("/resync", post(resync).delete(cancel_resync))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint: see the README's API section") })
        .with_state(api)
}

/// Serves on each address until the daemon ends (over TLS when configured); a port in use is
/// an error at start.
pub async fn serve(addrs: &[SocketAddr], api: Api, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Result<(), String> {
    for &addr in addrs {
        serve::listen(addr, router(api.clone()), tls.clone(), serve::Limits::default()).await?;
    }
    Ok(())
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// A health answer: 200 or 503; OPTIONS gets the code alone (HEAD is stripped by axum).
fn check(method: &Method, ok: bool, why: String, role: &str) -> Response {
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if method == Method::OPTIONS {
        return code.into_response();
    }
    (code, Json(json!({ "role": role, "state": why }))).into_response()
}

fn current(api: &Api) -> Option<ridondato_core::Status> {
    api.handle.status.borrow().clone()
}

fn starting() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the node is starting")
}

async fn master(State(api): State<Api>, method: Method) -> Response {
    match current(&api) {
        Some(s) => {
            let (ok, why) = health::master(&s, &api.facts);
            check(&method, ok, why, s.role.as_str())
        }
        None => starting(),
    }
}

#[derive(serde::Deserialize)]
struct LagQuery {
    lag: Option<String>,
}

async fn slave(State(api): State<Api>, method: Method, Query(q): Query<LagQuery>) -> Response {
    let lag = match q.lag.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "lag: milliseconds, a whole number (e.g. /slave?lag=500)"),
    };
    match current(&api) {
        Some(s) => {
            let (ok, why) = health::slave(&s, &api.facts, lag);
            check(&method, ok, why, s.role.as_str())
        }
        None => starting(),
    }
}

async fn health(State(api): State<Api>, method: Method) -> Response {
    match current(&api) {
        Some(s) => check(&method, true, "running".into(), s.role.as_str()),
        None => starting(),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    match current(&api) {
        Some(s) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            metrics::render(
                &s,
                &api.handle.stats.drops.totals(),
                (api.handle.stats.sent.load(Ordering::Relaxed), api.handle.stats.received.load(Ordering::Relaxed)),
                &api.counters,
            ),
        )
            .into_response(),
        None => starting(),
    }
}

/// `Err`: the 401 to answer.
fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if api.token.accepts(given) {
        return Ok(());
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong token: send `Authorization: Bearer <the token in api.token_file>`");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Err(r)
}

async fn status(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    match current(&api) {
        Some(s) => {
            let alarms: Vec<String> = s.alarms.iter().map(ToString::to_string).collect();
            Json(json!({ "node": s, "alarms": alarms, "addresses": *api.addresses, "dropped_datagrams": api.handle.stats.drops.totals() })).into_response()
        }
        None => starting(),
    }
}

async fn events(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let rx = api.events.subscribe();
    // First the node as it is now, so a listener knows where it starts (and that it is on).
    let first = api.handle.status.borrow().as_ref().map(
        |s| json!({ "node": s.node.0, "role": s.role.as_str(), "epoch": s.epoch, "alarms": s.alarms.iter().map(ToString::to_string).collect::<Vec<_>>() }),
    );
    let first = futures::stream::iter(first.map(|d| Ok(SseEvent::default().event("status").data(d.to_string()))));
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event(e.kind).data(e.data.to_string())), rx)),
                // A slow reader lost some: it goes on with the next.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures::StreamExt::chain(first, rest)).keep_alive(KeepAlive::default()).into_response()
}

/// Runs an operator command on behalf of the API caller, audited as the control socket does.
async fn run(api: &Api, headers: &HeaderMap, cmd: Command) -> Response {
    if let Err(r) = authorize(api, headers) {
        return r;
    }
    tracing::info!("api command: {cmd:?}");
    match api.handle.command(cmd).await {
        Ok(m) => Json(json!({ "result": m })).into_response(),
        Err(e) if e.contains("not running") || e.contains("stopped before") => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// The JSON body's `field`, a string among `allowed`.
fn field<'a>(body: &Bytes, name: &str, allowed: &[&'a str]) -> Result<&'a str, Response> {
    let usage = format!("body: expected {{\"{name}\": \"{}\"}}", allowed.join("|"));
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("{usage}: {e}")))?;
    let given = v.get(name).and_then(|x| x.as_str()).ok_or_else(|| error(StatusCode::BAD_REQUEST, usage.clone()))?;
    allowed
        .iter()
        .find(|a| **a == given)
        .copied()
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("{name}: `{}` is not one of {}", cut(given), allowed.join(", "))))
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `{"state": "master|slave|off"}`, and `"node": "peer"` to ask the peer (as `--peer`).
async fn state(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    // The token first: a caller without it learns nothing, not even what a good body is.
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let target = match field(&body, "state", &["master", "slave", "off"]) {
        Ok("master") => Target::Master,
        Ok("slave") => Target::Slave,
        Ok(_) => Target::Off,
        Err(r) => return r,
    };
    let peer = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
    let cmd = match peer.as_deref() {
        None | Some("me") => Command::SetState(target),
        Some("peer") => Command::AskPeer(target),
        Some(other) => return error(StatusCode::BAD_REQUEST, format!("node: `{}` is neither me nor peer", cut(other))),
    };
    run(&api, &headers, cmd).await
}

async fn switchover(State(api): State<Api>, headers: HeaderMap) -> Response {
    run(&api, &headers, Command::Switchover).await
}

/// The four cloud steps (S14), run by the daemon as `ridondato cloud-switchover` would (same
/// journal, so the CLI can resume a run the API started); `{"dry_run": true}` answers the plan.
/// Progress goes to the log and, as role changes, to `/events`.
async fn cloud_switchover(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let Some(paths) = api.cloud_switchover.clone() else { return error(StatusCode::CONFLICT, "this node is not in cloud mode") };
    let dry_run = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v.get("dry_run").and_then(|d| d.as_bool())).unwrap_or(false);
    let args = crate::cloud_cmd::Switchover { socket: paths.0.clone(), journal: paths.1.clone(), dry_run, abort: false };
    if dry_run {
        let plan = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            crate::cloud_cmd::switchover_with(&args, &mut |l| lines.push(l.to_string())).map(|()| lines)
        })
        .await;
        return match plan {
            Ok(Ok(lines)) => Json(json!({ "result": lines })).into_response(),
            Ok(Err(e)) => error(StatusCode::CONFLICT, e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    if api.cloud_running.swap(true, Ordering::SeqCst) {
        return error(StatusCode::CONFLICT, "a cloud switch-over started from the API is already running");
    }
    tracing::info!("api command: cloud-switchover");
    let running = api.cloud_running.clone();
    tokio::task::spawn_blocking(move || {
        let r = crate::cloud_cmd::switchover_with(&args, &mut |l| tracing::info!("cloud-switchover: {l}"));
        if let Err(e) = r {
            tracing::warn!("cloud-switchover: {e}");
        }
        running.store(false, Ordering::SeqCst);
    });
    (StatusCode::ACCEPTED, Json(json!({ "result": "cloud switch-over started: each step is logged; roles show on /events" }))).into_response()
}

async fn maintenance(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    match field(&body, "maintenance", &["on", "off"]) {
        Ok(v) => run(&api, &headers, Command::Maintenance(v == "on")).await,
        Err(r) => r,
    }
}

async fn resync(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let kind = match field(&body, "resync", &["db", "fs", "mongo", "all"]) {
        Ok("db") => ResyncKind::Db,
        Ok("fs") => ResyncKind::Fs,
        Ok("mongo") => ResyncKind::Mongo,
        Ok(_) => ResyncKind::All,
        Err(r) => return r,
    };
    run(&api, &headers, Command::Resync(kind)).await
}

async fn cancel_resync(State(api): State<Api>, headers: HeaderMap) -> Response {
    run(&api, &headers, Command::CancelResync).await
}
