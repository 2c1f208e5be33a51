//! HTTP routes: the meeting API, health, metrics, the WebSocket and the static pages.

use std::sync::Arc;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use proto::MeetingId;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::warn;

use crate::storage::MeetingRecord;
use crate::AppContext;

/// Transport-level ceiling for one WebSocket message. Above the protocol's own limits so that
/// a too-large message still reaches the session and gets a `too_large` answer.
const WS_TRANSPORT_LIMIT: usize = 2 * proto::MAX_SDP_MESSAGE_BYTES;

pub fn router(ctx: Arc<AppContext>) -> Router {
    Router::new()
        .route("/", get(landing_page))
        .route("/m/{id}", get(landing_page))
        .route("/static/landing.js", get(landing_js))
        .route("/static/style.css", get(style_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/meetings", post(create_meeting))
        .route("/api/meetings/{id}", get(get_meeting))
        .route("/ws", get(websocket))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; \
                 img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .with_state(ctx)
}

async fn landing_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../static/index.html"),
    )
}

async fn landing_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/landing.js"),
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/style.css"),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(ctx): State<Arc<AppContext>>) -> impl IntoResponse {
    let (participants, meetings) = ctx.hub.counts();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(participants, meetings),
    )
}

#[derive(Serialize)]
struct CreatedMeeting {
    id: String,
    join_url: String,
    host_url: String,
    host_secret: String,
}

fn error(status: StatusCode, code: &str, reason: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "reason": reason })),
    )
        .into_response()
}

async fn create_meeting(State(ctx): State<Arc<AppContext>>) -> Response {
    let mut id_bytes = [0u8; 16];
    let mut secret_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut id_bytes);
    rand::rng().fill_bytes(&mut secret_bytes);
    let id = MeetingId::from_random_bytes(id_bytes);
    let host_secret = data_encoding::BASE32_NOPAD
        .encode(&secret_bytes)
        .to_ascii_lowercase();
    let record = MeetingRecord {
        id: id.clone(),
        host_secret_sha256: Sha256::digest(host_secret.as_bytes()).to_vec(),
        created_at: unix_now(),
        ended_at: None,
    };
    if let Err(e) = ctx.storage.create_meeting(&record).await {
        warn!("cannot store meeting: {e}");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the meeting could not be stored",
        );
    }
    ctx.metrics
        .meetings_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let join_url = format!("{}/m/{id}", ctx.base_url);
    let body = CreatedMeeting {
        id: id.to_string(),
        host_url: format!("{join_url}#host={host_secret}"),
        join_url,
        host_secret,
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn get_meeting(State(ctx): State<Arc<AppContext>>, Path(id): Path<String>) -> Response {
    let Some(id) = MeetingId::parse(&id) else {
        return error(StatusCode::NOT_FOUND, "unknown_meeting", "no such meeting");
    };
    match ctx.storage.meeting(&id).await {
        Ok(Some(record)) => Json(serde_json::json!({
            "id": id,
            "created_at": record.created_at,
            "ended": record.ended_at.is_some(),
            "participants": ctx.hub.participants_in(&id),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "unknown_meeting", "no such meeting"),
        Err(e) => {
            warn!("storage error: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "try again later",
            )
        }
    }
}

async fn websocket(State(ctx): State<Arc<AppContext>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_TRANSPORT_LIMIT)
        .max_frame_size(WS_TRANSPORT_LIMIT)
        .on_upgrade(move |socket| crate::signaling::run(socket, ctx))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
