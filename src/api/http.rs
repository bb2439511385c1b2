//! The HTTP transport of `serve`: the query router over axum, `POST /v1/commands` for the
//! embedded mode, and the operations endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).
//!
//! Commands go to the one writer through its handle and are answered once durable; reads
//! answer from the writer's read model, which only ever holds durable state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request as HttpRequest;
use axum::extract::{Extension, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::api::metrics::Metrics;
use crate::api::query::{
    answer, parse_position, validate, QueryError, ReadView, Request, VerifiedPrefix,
    CHEAP_READ_EVENTS_MAX,
};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::intake::{parse_commands, CommandsError, COMMANDS_PER_REQUEST_MAX};
use crate::writer::{ReadModel, WriterError, WriterHandle};

/// Largest request body accepted by `POST /v1/commands` unless `--max-body-bytes` says
/// otherwise (SPEC.md section 11).
pub const COMMAND_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Longest request target (path and query) served; longer ones get 414 `uri_too_long`.
pub const URI_BYTES_MAX: usize = 8 * 1024;
/// Most request header bytes (names and values) served; more get 431 `headers_too_large`.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Most request headers served; more get 431 `headers_too_large`.
pub const HEADERS_MAX: usize = 64;
/// Largest plain-text body of a framework refusal that is carried over into its JSON message.
const REFUSAL_MESSAGE_BYTES_MAX: usize = 1024;

/// What the handlers share.
pub struct HttpState {
    pub reads: Arc<ReadModel>,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    /// Longest wait of a read with `min_position` before it answers.
    pub read_wait_max: Duration,
    /// Kafka mode: commands come from this topic, not over HTTP.
    pub kafka_commands_topic: Option<String>,
    /// The role reported by /healthz (single, leader or standby).
    pub role: Box<dyn Fn() -> &'static str + Send + Sync>,
    /// Who may call (SPEC.md section 10).
    pub auth: Arc<Authenticator>,
    /// Largest request body (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Longest time to receive a command body once its headers are in (408 after it).
    pub body_timeout: Duration,
    /// The expensive-read pool (`--expensive-reads-max`).
    pub expensive: crate::api::expensive::ExpensivePool,
    /// What `/v1/audit/verify` verified already.
    pub verified: VerifiedPrefix,
}

/// Default of `--expensive-reads-max` (SPEC.md section 11).
pub const EXPENSIVE_READS_MAX: u16 = 2;

/// 429 `busy`: the expensive-read pool is full; `Retry-After` in seconds.
fn busy(path: &str, max: usize) -> Response {
    let mut response = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"code": "busy", "message": format!("{path} is an expensive read and all {max} places of the expensive-read pool are taken; retry later"), "details": {"expensive_reads_max": max}}),
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// Paths served without credentials: they hold nothing private (SPEC.md section 10).
pub fn is_public_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/audit/checkpoint"
    ) || path.starts_with("/v1/audit/proof/")
}

/// The routes of `serve`.
pub fn router(shared: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(shared): State<Arc<HttpState>>| async move {
                axum::Json(json!({"status": "alive", "role": (shared.role)()}))
            }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(crate::api::openapi::document()) }),
        )
        .route("/v1/commands", post(commands))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/audit/proof/inclusion", get(audit_inclusion))
        .route("/v1/audit/proof/consistency", get(audit_consistency))
        .fallback(read)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(shared)
}

fn json_response(status: StatusCode, body: &Value, position: Option<u64>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(position) = position {
        if let Ok(value) = position.to_string().parse() {
            response.headers_mut().insert("x-ledger-position", value);
        }
    }
    response
}

/// The query parameters of an auditor's path (`?a=1&b=2`).
fn audit_params(uri: &Uri) -> std::collections::HashMap<String, String> {
    Request::parse(uri.path_and_query().map_or(uri.path(), |p| p.as_str())).params
}

fn audit_answer(
    shared: &HttpState,
    route: &'static str,
    started: Instant,
    answer: Result<Response, crate::api::query::QueryError>,
) -> Response {
    let response = answer.unwrap_or_else(|error| {
        json_response(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            &error.body(),
            None,
        )
    });
    shared.metrics.query(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /v1/audit/checkpoint[?tree_size=N]`: a signed note, `text/plain`.
async fn audit_checkpoint(State(shared): State<Arc<HttpState>>, uri: Uri) -> Response {
    let started = Instant::now();
    let params = audit_params(&uri);
    let answer = crate::api::proof::checkpoint(
        shared.reads.log(),
        params.get("tree_size").map(String::as_str),
    )
    .map(|note| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response());
    audit_answer(&shared, "/v1/audit/checkpoint", started, answer)
}

/// `GET /v1/audit/proof/inclusion?position=P&tree_size=N`.
async fn audit_inclusion(State(shared): State<Arc<HttpState>>, uri: Uri) -> Response {
    let started = Instant::now();
    let params = audit_params(&uri);
    let answer = crate::api::proof::inclusion(
        shared.reads.log(),
        params.get("position").map(String::as_str),
        params.get("tree_size").map(String::as_str),
    )
    .map(|body| json_response(StatusCode::OK, &body, None));
    audit_answer(&shared, "/v1/audit/proof/inclusion", started, answer)
}

/// `GET /v1/audit/proof/consistency?from=M&to=N`.
async fn audit_consistency(State(shared): State<Arc<HttpState>>, uri: Uri) -> Response {
    let started = Instant::now();
    let params = audit_params(&uri);
    let answer = crate::api::proof::consistency(
        shared.reads.log(),
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
    )
    .map(|body| json_response(StatusCode::OK, &body, None));
    audit_answer(&shared, "/v1/audit/proof/consistency", started, answer)
}

async fn readyz(State(shared): State<Arc<HttpState>>) -> Response {
    let (position, head) = (shared.reads.position(), shared.reads.log().head().position);
    let ready = position == head;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"ready": ready, "position": position, "head_position": head}),
        Some(position),
    )
}

async fn metrics(State(shared): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// The metrics label of a read path: the template of the route it matches (ids are never
/// labels), or `unmatched`. The set of labels is bounded by the route table.
fn route_label(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').collect();
    crate::api::query::READ_ROUTES
        .iter()
        .map(|route| route.template)
        .find(|template| {
            let wanted: Vec<&str> = template.split('/').collect();
            wanted.len() == segments.len()
                && wanted
                    .iter()
                    .zip(&segments)
                    .all(|(w, s)| (w.starts_with('{') && !s.is_empty()) || w == s)
        })
        .unwrap_or("unmatched")
}

/// Authenticates every request to a non-public path and hands its principal to the handler;
/// 401 `unauthenticated` with `WWW-Authenticate: Bearer` otherwise.
async fn authenticate(
    State(shared): State<Arc<HttpState>>,
    mut request: HttpRequest,
    next: Next,
) -> Response {
    if shared.auth.is_insecure() && !is_loopback_host(request.headers()) {
        // Without authentication only a loopback caller may ask, and only by a loopback name:
        // a page of another site whose name re-resolves to 127.0.0.1 (DNS rebinding) is
        // same-origin with the ledger, so its Host header is all that tells it apart.
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"code": "host_not_allowed", "message": "--insecure-no-auth answers only requests for localhost, 127.0.0.1 or [::1]"}),
            None,
        );
    }
    if is_public_path(request.uri().path()) {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().map_err(|_| AuthError::Malformed));
    let principal = match header.transpose() {
        Ok(header) => shared.auth.authenticate_header(header),
        Err(error) => Err(error),
    };
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => unauthenticated(&error),
    }
}

/// Whether the request's `Host` names a loopback address (`localhost`, `127.x.x.x`, `[::1]`).
fn is_loopback_host(headers: &header::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn unauthenticated(error: &AuthError) -> Response {
    let challenge = match error {
        AuthError::Missing => r#"Bearer realm="csp-ledger""#,
        _ => r#"Bearer realm="csp-ledger", error="invalid_token""#,
    };
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"code": "unauthenticated", "message": error.to_string()}),
        None,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    response
}

fn forbidden(principal: &Principal, needs: &str) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        &json!({"code": "forbidden", "message": format!("principal {} lacks the grant this path needs: {needs}", principal.id), "details": {"principal": principal.id.as_str(), "needs": needs}}),
        None,
    )
}

async fn read(
    State(shared): State<Arc<HttpState>>,
    principal: Option<Extension<Arc<Principal>>>,
    method: Method,
    uri: Uri,
) -> Response {
    let Some(Extension(principal)) = principal else {
        // A public path (not authenticated) that no route serves.
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": "route_not_found", "message": format!("no route for {}", uri.path())}),
            None,
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"code": "method_not_allowed", "message": format!("{method} is not served on {}; read paths take GET", uri.path())}),
            None,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let request = Request::parse(uri.path_and_query().map_or(uri.path(), |p| p.as_str()));
    if !request.path.starts_with("/v1/") {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": "route_not_found", "message": format!("no route for {}", request.path)}),
            None,
        );
    }
    if !principal.read.models {
        return forbidden(&principal, "read \"models\"");
    }
    // Every parameter is checked before the `min_position` wait: a malformed request is 400
    // (an unknown route 404) at once, not a 503 after the wait (issue 11 item 7).
    let checked = Instant::now();
    if let Err(error) = validate(&request) {
        shared.metrics.query(
            route_label(&request.path),
            error.status(),
            checked.elapsed().as_secs_f64(),
        );
        return json_response(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            &error.body(),
            None,
        );
    }
    if let Some(wanted) = request
        .params
        .get("min_position")
        .and_then(|m| parse_position(m))
    {
        let mut position = shared.reads.subscribe();
        let _ =
            tokio::time::timeout(shared.read_wait_max, position.wait_for(|p| *p >= wanted)).await;
    }
    let started = Instant::now();
    let personal = principal.read.personal;
    let mut answered = {
        let state = shared.reads.state();
        answer(
            ReadView {
                state: &state,
                log: shared.reads.log(),
                personal,
                budget: Some(CHEAP_READ_EVENTS_MAX),
                verified: Some(&shared.verified),
            },
            &request,
        )
    };
    if let Err(QueryError::Expensive { .. }) = answered {
        // An expensive read: on the bounded pool, off the runtime threads that serve the
        // cheap ones, or 429 `busy` when the pool is full.
        let (pool, pooled_request) = (Arc::clone(&shared), request.clone());
        let pooled = shared
            .expensive
            .run(move || {
                let state = pool.reads.state();
                answer(
                    ReadView {
                        state: &state,
                        log: pool.reads.log(),
                        personal,
                        budget: None,
                        verified: Some(&pool.verified),
                    },
                    &pooled_request,
                )
            })
            .await;
        let Some(pooled) = pooled else {
            shared.metrics.query(
                route_label(&request.path),
                429,
                started.elapsed().as_secs_f64(),
            );
            return busy(&request.path, shared.expensive.max());
        };
        answered = pooled.unwrap_or_else(|| {
            Err(QueryError::Log(crate::store::log::LogError::Contract(
                "an expensive read panicked".into(),
            )))
        });
    }
    let status = match &answered {
        Ok(_) => 200,
        Err(error) => error.status(),
    };
    shared.metrics.query(
        route_label(&request.path),
        status,
        started.elapsed().as_secs_f64(),
    );
    match answered {
        Ok(body) => {
            let position = body.get("position").and_then(Value::as_u64);
            json_response(StatusCode::OK, &body, position)
        }
        Err(error) => json_response(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.body(),
            None,
        ),
    }
}

/// Whether a request declares a JSON body (`application/json`, parameters allowed).
fn is_json(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

async fn commands(
    State(shared): State<Arc<HttpState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: header::HeaderMap,
    body: axum::body::Body,
) -> Response {
    if principal.act_as.is_empty() {
        return forbidden(&principal, "act_as (any actor claim)");
    }
    if !is_json(&headers) {
        // A web page can post text/plain or a form across sites without a preflight; it
        // cannot post application/json.
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({"code": "unsupported_media_type", "message": "POST /v1/commands takes Content-Type: application/json"}),
            None,
        );
    }
    if let Some(topic) = &shared.kafka_commands_topic {
        let message = format!("this ledger takes commands from the Kafka topic {topic}");
        return json_response(
            StatusCode::CONFLICT,
            &json!({"code": "kafka_mode", "message": message}),
            None,
        );
    }
    let body: Bytes = match tokio::time::timeout(
        shared.body_timeout,
        axum::body::to_bytes(body, shared.max_body_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            // Over the limit (the body is refused while it streams), or a broken body.
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            let (status, code) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            } else {
                (StatusCode::BAD_REQUEST, "bad_request")
            };
            return json_response(
                status,
                &json!({"code": code, "message": format!("the request body was refused: {error}")}),
                None,
            );
        }
        Err(_) => {
            let mut response = json_response(
                StatusCode::REQUEST_TIMEOUT,
                &json!({"code": "request_timeout", "message": format!("the body did not arrive within {} ms of the headers", shared.body_timeout.as_millis())}),
                None,
            );
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let (submissions, single) = match parse_commands(&body, &principal) {
        Ok(parsed) => parsed,
        Err(CommandsError::NotJson(message)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": "invalid_json", "message": message}),
                None,
            )
        }
        Err(CommandsError::TooMany) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"code": "too_many_commands", "message": format!("an array holds at most {COMMANDS_PER_REQUEST_MAX} commands"), "details": {"limit": COMMANDS_PER_REQUEST_MAX}}),
                None,
            )
        }
    };
    let pending = match shared.writer.submit(submissions, Vec::new()) {
        Ok(pending) => pending,
        Err(_) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"code": "shutting_down", "message": "the ledger is stopping"}),
                None,
            )
        }
    };
    match pending.answered().await {
        Ok(answered) => {
            let mut out = Vec::with_capacity(answered.len() * 600);
            if !single {
                out.push(b'[');
            }
            for i in 0..answered.len() {
                if i > 0 {
                    out.push(b',');
                }
                answered.write_line_as(i, principal.read.personal, &mut out);
            }
            if !single {
                out.push(b']');
            }
            let position = answered.head_position;
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                out,
            )
                .into_response();
            if let Ok(value) = position.to_string().parse() {
                response.headers_mut().insert("x-ledger-position", value);
            }
            response
        }
        Err(WriterError::Stopped) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"code": "shutting_down", "message": "the ledger is stopping"}),
            None,
        ),
        Err(failure @ WriterError::Failed(_)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"code": "internal_error", "message": failure.to_string()}),
            None,
        ),
    }
}

/// The code of a refusal by status, for refusals the framework makes (extractors, routing).
fn refusal_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        404 => "route_not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_request",
        431 => "headers_too_large",
        500..=599 => "internal_error",
        _ => "request_refused",
    }
}

/// Refuses oversized request targets and headers, and gives every error answer made below
/// the handlers (axum's extractor rejections: a body over the limit, a broken chunked body,
/// an unrouted method) the JSON form `{"code","message"}` of every other error.
///
/// Requests beyond hyper's own parse buffer (about 400 KiB of headers) are refused by hyper
/// before any application code runs, with an empty body; the limits here are far below it.
async fn json_errors(request: HttpRequest, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > URI_BYTES_MAX {
        return json_response(
            StatusCode::URI_TOO_LONG,
            &json!({"code": "uri_too_long", "message": format!("the request target has {target} bytes; at most {URI_BYTES_MAX} are served")}),
            None,
        );
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > HEADERS_MAX || header_bytes > HEADER_BYTES_MAX {
        return json_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &json!({"code": "headers_too_large", "message": format!("{} headers of {header_bytes} bytes; at most {HEADERS_MAX} headers of {HEADER_BYTES_MAX} bytes in all are served", headers.len())}),
            None,
        );
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), REFUSAL_MESSAGE_BYTES_MAX)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut refused = json_response(
        status,
        &json!({"code": refusal_code(status), "message": message}),
        None,
    );
    if let Some(allow) = allow {
        refused.headers_mut().insert(header::ALLOW, allow);
    }
    refused
}
