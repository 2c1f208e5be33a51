//! The meeting API: create (with passcode, invitation requirement, permissions), look up,
//! and the host-only invitations and audit log.
//!
//! The server never makes a link's secrets. A client creating a meeting makes the host link
//! itself and sends only the SHA-256 of the host secret derived from it; a host's client making
//! an invitation sends only the SHA-256 of its token. So the answers carry no host link and no
//! invitation link: the client composes those (`e2ee::link_secrets`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto::MeetingId;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::api::{authorize_host, current_user, json_body, same_origin, ApiError};
use super::unix_now;
use crate::config::MeetingCreation;
use crate::storage::{InvitationRecord, MeetingRecord};
use crate::AppContext;

/// Passcode length bounds, in characters.
const PASSCODE_CHARS: std::ops::RangeInclusive<usize> = 4..=64;
const LABEL_MAX_CHARS: usize = 100;
const DEFAULT_INVITATION_SECS: u64 = 7 * 24 * 3600;
const MAX_INVITATION_SECS: u64 = 90 * 24 * 3600;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMeeting {
    /// Hex SHA-256 of the host secret the client derived from the host link it made.
    host_secret_sha256: Option<String>,
    passcode: Option<String>,
    #[serde(default)]
    require_invitation: bool,
    permissions: Option<proto::Permissions>,
}

#[derive(Serialize)]
struct CreatedMeeting {
    id: String,
    /// The join link without the meeting key (`#k=`), which only the creating client has
    /// and adds; with `#pwd=` for a passcode.
    join_url: String,
}

/// A hex SHA-256 digest from a request body.
fn digest_field(value: Option<&str>, field: &str) -> Result<Vec<u8>, ApiError> {
    value
        .and_then(|hex| data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()).ok())
        .filter(|d| d.len() == 32)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{field} (64 hex digits) is required: the client makes the link's secret and sends only its digest (`conclave meeting create`, `conclave meeting invite` and the web app do)"
            ))
        })
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a URL fragment value.
fn fragment_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub async fn create_meeting(
    State(ctx): State<Arc<AppContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match create(&ctx, &headers, &body).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(e) => e.respond(&ctx),
    }
}

async fn create(
    ctx: &AppContext,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<CreatedMeeting, ApiError> {
    let request: NewMeeting = json_body(body)?;
    let host_secret_sha256 =
        digest_field(request.host_secret_sha256.as_deref(), "host_secret_sha256")?;
    let owner = current_user(ctx, headers).await;
    if owner.is_some() {
        // The cookie makes the account the owner: only our own pages may use it so.
        same_origin(ctx, headers)?;
    }
    if ctx.meeting_creation == MeetingCreation::Accounts && owner.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "login_required",
            "this server lets only logged-in accounts create meetings",
        ));
    }
    if let Some(passcode) = &request.passcode {
        let chars = passcode.chars().count();
        if !PASSCODE_CHARS.contains(&chars) || passcode.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "a passcode has {} to {} printable characters",
                PASSCODE_CHARS.start(),
                PASSCODE_CHARS.end()
            )));
        }
    }
    let permissions = request.permissions.unwrap_or_default();
    if permissions.max_participants == 0 {
        return Err(ApiError::invalid("max_participants must be at least 1"));
    }
    let passcode_hash = match &request.passcode {
        Some(p) => Some(
            crate::password::hash_blocking(p.clone())
                .await
                .map_err(ApiError::storage)?,
        ),
        None => None,
    };

    let mut id_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut id_bytes);
    let id = MeetingId::from_random_bytes(id_bytes);
    let record = MeetingRecord {
        passcode_hash,
        require_invitation: request.require_invitation,
        permissions,
        owner_user_id: owner.as_ref().map(|u| u.id),
        ..MeetingRecord::new(id.clone(), host_secret_sha256, unix_now())
    };
    ctx.storage
        .create_meeting(&record)
        .await
        .map_err(ApiError::storage)?;
    ctx.metrics
        .meetings_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = format!("{}/m/{id}", ctx.base_url);
    // Secrets ride in the #fragment, which browsers never send to a server.
    let join_url = match &request.passcode {
        Some(p) => format!("{base}#pwd={}", fragment_encode(p)),
        None => base.clone(),
    };
    Ok(CreatedMeeting {
        id: id.to_string(),
        join_url,
    })
}

#[derive(Deserialize)]
pub struct LookupQuery {
    passcode: Option<String>,
}

/// Public facts about a meeting. Rate limited like a knock; a passcode-protected meeting
/// answers 404, exactly like an unknown id, without its passcode.
pub async fn get_meeting(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Response {
    let now_ms = crate::storage::unix_now_ms();
    let Some(id) = MeetingId::parse(&id) else {
        // Not an id this server could have issued; still costs a token, like an unknown one.
        if let Err(wait) = ctx.gate.acquire(peer.ip(), now_ms) {
            return ApiError::rate_limited(wait).respond(&ctx);
        }
        return ApiError::unknown_meeting().respond(&ctx);
    };
    match ctx
        .gate
        .lookup(
            &ctx.storage,
            peer.ip(),
            &id,
            query.passcode.as_deref(),
            now_ms,
        )
        .await
    {
        Ok(record) => Json(serde_json::json!({
            "id": id,
            "created_at": record.created_at,
            "ended": record.ended_at.is_some(),
            "participants": ctx.hub.participants_in(&id),
            "require_invitation": record.require_invitation,
            "locked": record.locked,
        }))
        .into_response(),
        Err(refusal) => ApiError::from(refusal).respond(&ctx),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvitation {
    #[serde(default)]
    label: String,
    expires_in_secs: Option<u64>,
    #[serde(default)]
    single_use: bool,
    #[serde(default)]
    skip_lobby: bool,
    /// Hex SHA-256 of the token the host's client derived from the invitation's secret.
    token_sha256: Option<String>,
}

pub async fn create_invitation(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (meeting, proof) = authorize_host(&ctx, peer.ip(), &headers, &id, true).await?;
        let request: NewInvitation = json_body(&body)?;
        let token_sha256 = digest_field(request.token_sha256.as_deref(), "token_sha256")?;
        let label = request.label.trim().to_owned();
        if label.chars().count() > LABEL_MAX_CHARS || label.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "a label has at most {LABEL_MAX_CHARS} printable characters"
            )));
        }
        let lifetime = request.expires_in_secs.unwrap_or(DEFAULT_INVITATION_SECS);
        if lifetime == 0 || lifetime > MAX_INVITATION_SECS {
            return Err(ApiError::invalid(format!(
                "expires_in_secs is 1 to {MAX_INVITATION_SECS} (90 days)"
            )));
        }
        if meeting.ended_at.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "meeting_ended",
                "the meeting has ended",
            ));
        }
        let now = unix_now();
        let record = InvitationRecord {
            id: crate::invitation::new_invitation_id(),
            meeting_id: meeting.id.to_string(),
            label,
            created_at: now,
            expires_at: now + lifetime as i64,
            single_use: request.single_use,
            skip_lobby: request.skip_lobby,
            used_at: None,
            revoked_at: None,
            token_sha256: Some(token_sha256),
        };
        ctx.storage
            .create_invitation(&record)
            .await
            .map_err(ApiError::storage)?;
        let detail = serde_json::json!({
            "label": record.label, "single_use": record.single_use,
            "skip_lobby": record.skip_lobby, "expires_at": record.expires_at,
        })
        .to_string();
        ctx.storage
            .audit(
                &meeting.id,
                "invitation_created",
                Some(&proof.actor()),
                Some(&record.id),
                &detail,
            )
            .await
            .map_err(ApiError::storage)?;
        Ok(serde_json::json!({
            "id": record.id, "expires_at": record.expires_at,
            "url": format!("{}/m/{}", ctx.base_url, meeting.id),
        }))
    }
    .await;
    match result {
        Ok(body) => (StatusCode::CREATED, Json(body)).into_response(),
        Err(e) => e.respond(&ctx),
    }
}

pub async fn list_invitations(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result: Result<_, ApiError> = async {
        let (meeting, _) = authorize_host(&ctx, peer.ip(), &headers, &id, false).await?;
        let records = ctx
            .storage
            .invitations(&meeting.id)
            .await
            .map_err(ApiError::storage)?;
        Ok(serde_json::json!({ "invitations": records }))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.respond(&ctx),
    }
}

pub async fn revoke_invitation(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((id, invitation)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (meeting, proof) = authorize_host(&ctx, peer.ip(), &headers, &id, true).await?;
        let revoked = ctx
            .storage
            .revoke_invitation(&meeting.id, &invitation, unix_now())
            .await
            .map_err(ApiError::storage)?;
        if !revoked {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_invitation",
                "this meeting has no such invitation",
            ));
        }
        ctx.storage
            .audit(
                &meeting.id,
                "invitation_revoked",
                Some(&proof.actor()),
                Some(&invitation),
                "",
            )
            .await
            .map_err(ApiError::storage)?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.respond(&ctx),
    }
}

pub async fn audit_log(
    State(ctx): State<Arc<AppContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result: Result<_, ApiError> = async {
        let (meeting, _) = authorize_host(&ctx, peer.ip(), &headers, &id, false).await?;
        let events = ctx
            .storage
            .audit_log(&meeting.id)
            .await
            .map_err(ApiError::storage)?;
        Ok(serde_json::json!({ "meeting": meeting.id, "events": events }))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.respond(&ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_values_are_percent_encoded() {
        assert_eq!(fragment_encode("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(fragment_encode("a b#c&d"), "a%20b%23c%26d");
        assert_eq!(fragment_encode("é"), "%C3%A9");
    }
}
