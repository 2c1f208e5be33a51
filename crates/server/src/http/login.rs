//! Logging in and out: `POST /api/login`, `POST /api/logout`, `GET /api/me`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::api::{current_user, json_body, same_origin, ApiError};
use super::unix_now;
use crate::accounts::{
    new_session_token, session_token, session_token_digest, SESSION_COOKIE, SESSION_LIFETIME_SECS,
};
use crate::AppContext;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// Longest account name.
pub const MAX_NAME_BYTES: usize = 64;

fn login_failed() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "login_failed",
        "wrong name or password",
    )
}

fn cookie(ctx: &AppContext, value: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if ctx.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

pub async fn login(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        // A login sets the cookie: a page on another site must not log the browser in either.
        same_origin(&ctx, &headers)?;
        let credentials: Credentials = json_body(&body)?;
        if credentials.name.len() > MAX_NAME_BYTES
            || credentials.password.len() > MAX_NAME_BYTES * 16
        {
            // Not a name or password anyone has: refused before it can grow the throttle's map.
            return Err(login_failed());
        }
        let now_ms = crate::storage::unix_now_ms();
        ctx.logins
            .acquire(peer.ip(), &credentials.name, now_ms)
            .map_err(ApiError::rate_limited)?;
        let found = ctx
            .storage
            .user_by_name(&credentials.name)
            .await
            .map_err(ApiError::storage)?;
        // Unknown names are verified against a decoy so both failures take the same time.
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, crate::password::decoy_hash().to_owned()),
        };
        let right = crate::password::verify_blocking(hash, credentials.password).await;
        let Some(user) = user.filter(|_| right) else {
            return Err(login_failed());
        };
        ctx.logins.refund(peer.ip(), &credentials.name);
        let token = new_session_token();
        let now = unix_now();
        ctx.storage
            .create_user_session(
                &session_token_digest(&token),
                user.id,
                now,
                now + SESSION_LIFETIME_SECS,
            )
            .await
            .map_err(ApiError::storage)?;
        tracing::info!(user = %user.name, "logged in");
        Ok((token, user))
    }
    .await;
    match result {
        Ok((token, user)) => {
            let mut response =
                Json(serde_json::json!({ "id": user.id, "name": user.name })).into_response();
            if let Some(value) = cookie(&ctx, &token, SESSION_LIFETIME_SECS) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => e.respond(&ctx),
    }
}

pub async fn logout(State(ctx): State<Arc<AppContext>>, headers: HeaderMap) -> Response {
    if let Err(e) = same_origin(&ctx, &headers) {
        return e.respond(&ctx);
    }
    if let Some(token) = session_token(&headers) {
        if let Err(e) = ctx
            .storage
            .delete_user_session(&session_token_digest(token))
            .await
        {
            return ApiError::storage(e).respond(&ctx);
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(value) = cookie(&ctx, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub async fn me(State(ctx): State<Arc<AppContext>>, headers: HeaderMap) -> Response {
    match current_user(&ctx, &headers).await {
        Some(user) => Json(serde_json::json!({ "id": user.id, "name": user.name })).into_response(),
        None => {
            ApiError::new(StatusCode::UNAUTHORIZED, "login_required", "not logged in").respond(&ctx)
        }
    }
}
