//! The HTTP transport of `serve`: the query router over axum, `POST /v1/commands` for the
//! embedded mode, and the operations endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).
//!
//! Commands go to the one writer through its handle and are answered once durable; reads
//! answer from the writer's read model, which only ever holds durable state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::api::metrics::Metrics;
use crate::api::query::{answer, ReadView, Request};
use crate::intake::parse_commands;
use crate::writer::{ReadModel, WriterError, WriterHandle};

/// Largest request body accepted by `POST /v1/commands`.
pub const COMMAND_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

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
        .fallback(read)
        .layer(DefaultBodyLimit::max(COMMAND_BODY_BYTES_MAX))
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

/// The metrics label of a read path: ids replaced by placeholders.
fn route_label(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() >= 32 && segment.contains('-') {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn read(State(shared): State<Arc<HttpState>>, uri: Uri) -> Response {
    let request = Request::parse(uri.path_and_query().map_or(uri.path(), |p| p.as_str()));
    if !request.path.starts_with("/v1/") {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": "route_not_found", "message": format!("no route for {}", request.path)}),
            None,
        );
    }
    if let Some(wanted) = request
        .params
        .get("min_position")
        .and_then(|m| m.parse::<u64>().ok())
    {
        let mut position = shared.reads.subscribe();
        let _ =
            tokio::time::timeout(shared.read_wait_max, position.wait_for(|p| *p >= wanted)).await;
    }
    let started = Instant::now();
    let answered = {
        let state = shared.reads.state();
        answer(
            ReadView {
                state: &state,
                log: shared.reads.log(),
            },
            &request,
        )
    };
    shared
        .metrics
        .query(&route_label(&request.path), started.elapsed().as_secs_f64());
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

async fn commands(State(shared): State<Arc<HttpState>>, body: Bytes) -> Response {
    if let Some(topic) = &shared.kafka_commands_topic {
        let message = format!("this ledger takes commands from the Kafka topic {topic}");
        return json_response(
            StatusCode::CONFLICT,
            &json!({"code": "kafka_mode", "message": message}),
            None,
        );
    }
    let (submissions, single) = match parse_commands(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": "malformed_command", "message": message}),
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
            for (i, line) in answered.lines().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(line);
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
