//! HTTP routes: the meeting API, health, metrics, the WebSocket and the static pages.

mod api;
mod login;
mod meetings;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppContext;

/// Transport-level ceiling for one WebSocket message. Above the protocol's own limits so that
/// a too-large message still reaches the session and gets a `too_large` answer.
const WS_TRANSPORT_LIMIT: usize = 2 * proto::MAX_SDP_MESSAGE_BYTES;

pub fn router(ctx: Arc<AppContext>) -> Router {
    // Browsers that once saw HTTPS here refuse plain HTTP for a year: no downgrade on a
    // hostile network. Only sent when serving TLS (over HTTP it would be ignored anyway).
    let hsts = ctx.tls.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        )
    });
    Router::new()
        .route("/", get(landing_page))
        .route("/m/{id}", get(landing_page))
        .route("/static/landing.js", get(landing_js))
        .route("/static/style.css", get(style_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/meetings", post(meetings::create_meeting))
        .route("/api/meetings/{id}", get(meetings::get_meeting))
        .route(
            "/api/meetings/{id}/invitations",
            post(meetings::create_invitation).get(meetings::list_invitations),
        )
        .route(
            "/api/meetings/{id}/invitations/{inv}",
            delete(meetings::revoke_invitation),
        )
        .route("/api/meetings/{id}/audit", get(meetings::audit_log))
        .route("/api/login", post(login::login))
        .route("/api/logout", post(login::logout))
        .route("/api/me", get(login::me))
        .route("/ws", get(websocket))
        .merge(crate::web_app::routes())
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::web_app::app_pages,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
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
        .layer(tower::util::option_layer(hsts))
        .with_state(ctx)
}

async fn not_found(State(ctx): State<Arc<AppContext>>) -> Response {
    api::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page").respond(&ctx)
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

async fn websocket(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The login cookie makes an account's owner a host of its meetings (checked at hello);
    // a page on another site opening this socket gets no account (cross-site WebSocket
    // hijacking), even in a browser that would send the cookie.
    let user = match api::same_origin(&ctx, &headers) {
        Ok(()) => crate::accounts::user_from_headers(&ctx.storage, &headers, unix_now()).await,
        Err(_) => None,
    };
    upgrade
        .max_message_size(WS_TRANSPORT_LIMIT)
        .max_frame_size(WS_TRANSPORT_LIMIT)
        .on_upgrade(move |socket| crate::signaling::run(socket, ctx, peer, user))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
