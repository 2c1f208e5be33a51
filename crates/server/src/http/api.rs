//! What every JSON API handler shares: error answers (counted), body parsing, the caller's
//! identity (host secret or login cookie) and the cross-origin check for cookie-authorized
//! requests.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto::MeetingId;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::accounts::User;
use crate::gate::Refusal;
use crate::ratelimit::RetryAfter;
use crate::storage::MeetingRecord;
use crate::AppContext;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A refused API request: the answer and the code it is counted under.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
    pub retry_after: Option<RetryAfter>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// The same answer for an unknown meeting and for a missing or wrong passcode.
    pub fn unknown_meeting() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_meeting",
            crate::gate::UNKNOWN_MEETING_REASON,
        )
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason)
    }

    pub fn rate_limited(wait: RetryAfter) -> Self {
        ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts: retry in {} s", wait.secs()),
            )
        }
    }

    pub fn storage(e: impl std::fmt::Display) -> Self {
        warn!("storage error: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "try again later",
        )
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason)
    }

    /// Answers, and counts the refusal in `conclave_http_refused_total`.
    pub fn respond(self, ctx: &AppContext) -> Response {
        ctx.metrics.count_http_refused(self.code);
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.code, "reason": self.reason })),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&wait.secs().to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        use proto::ErrorCode;
        match refusal.code {
            ErrorCode::UnknownMeeting => ApiError::unknown_meeting(),
            ErrorCode::RateLimited => ApiError {
                retry_after: Some(RetryAfter(std::time::Duration::from_secs(1))),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    refusal.reason,
                )
            },
            ErrorCode::Internal => ApiError::storage("gate"),
            ErrorCode::Forbidden => ApiError::forbidden(refusal.reason),
            code => ApiError::new(StatusCode::FORBIDDEN, code.as_str(), refusal.reason),
        }
    }
}

/// Reads an optional JSON body: empty means all defaults.
pub fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "malformed_json"
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A state-changing request authorized by the login cookie must come from our own pages:
/// a present `Origin` must be the server's. (SameSite=Strict on the cookie is the second layer;
/// requests without `Origin` are not from a browser page on another site.)
pub fn same_origin(ctx: &AppContext, headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::ORIGIN) {
        None => Ok(()),
        Some(origin) if origin.as_bytes() == origin_of(&ctx.base_url).as_bytes() => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "cross-origin request refused: use this server's own pages",
        )),
    }
}

/// The login cookie's account, if valid.
pub async fn current_user(ctx: &AppContext, headers: &HeaderMap) -> Option<User> {
    crate::accounts::user_from_headers(&ctx.storage, headers, super::unix_now()).await
}

/// How a host proved itself.
pub enum HostProof {
    Secret,
    Owner(User),
}

impl HostProof {
    /// Who did it, for the audit log.
    pub fn actor(&self) -> String {
        match self {
            HostProof::Secret => "host".into(),
            HostProof::Owner(user) => format!("user {}", user.name),
        }
    }
}

/// Authorizes a host request on meeting `id`: `Authorization: Bearer <host secret>`, or the
/// login cookie of the account that owns it (then, for state changes, from our own origin).
/// Unknown meetings are 404, anyone else 403; both drain the caller's rate-limit bucket.
pub async fn authorize_host(
    ctx: &Arc<AppContext>,
    peer: IpAddr,
    headers: &HeaderMap,
    id: &str,
    changes_state: bool,
) -> Result<(MeetingRecord, HostProof), ApiError> {
    let now_ms = crate::storage::unix_now_ms();
    ctx.gate
        .acquire(peer, now_ms)
        .map_err(ApiError::rate_limited)?;
    let result = authorize_host_after_rate_limit(ctx, headers, id, changes_state).await;
    if result.is_ok() {
        ctx.gate.refund(peer);
    }
    result
}

async fn authorize_host_after_rate_limit(
    ctx: &Arc<AppContext>,
    headers: &HeaderMap,
    id: &str,
    changes_state: bool,
) -> Result<(MeetingRecord, HostProof), ApiError> {
    let id = MeetingId::parse(id).ok_or_else(ApiError::unknown_meeting)?;
    let record = ctx
        .storage
        .meeting(&id)
        .await
        .map_err(ApiError::storage)?
        .ok_or_else(ApiError::unknown_meeting)?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(secret) = bearer {
        if Sha256::digest(secret.as_bytes()).as_slice() == record.host_secret_sha256.as_slice() {
            return Ok((record, HostProof::Secret));
        }
        return Err(ApiError::forbidden("the host secret does not match"));
    }
    if let Some(user) = current_user(ctx, headers).await {
        if record.owner_user_id == Some(user.id) {
            if changes_state {
                same_origin(ctx, headers)?;
            }
            return Ok((record, HostProof::Owner(user)));
        }
    }
    Err(ApiError::forbidden(
        "send the host secret as `Authorization: Bearer <secret>`, or log in as the meeting's owner",
    ))
}
