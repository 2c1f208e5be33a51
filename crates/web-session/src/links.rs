//! What the web app does with a link's secrets, before and outside the group session: the
//! server-facing values derived one-way from them, a new meeting's host link, and a host's
//! invitation. The same `e2ee::link_secrets` as the native client; JSON out, so the wasm shell
//! stays thin.

use e2ee::{HostLinkSecret, Invitation, InvitationSecret, MeetingPublicKey};
use serde_json::json;
use session::LinkSecrets;

use crate::Error;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(what: &str, e: e2ee::E2eeError) -> Error {
    Error(format!("the link's {what} is damaged: {e}"))
}

/// Parses the fragment values a link carries (each may be empty: absent).
pub fn secrets(host: &str, invite: &str, meeting_key: &str) -> Result<LinkSecrets, Error> {
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    Ok(LinkSecrets {
        host_link: some(host)
            .map(|v| HostLinkSecret::parse(&v))
            .transpose()
            .map_err(|e| bad("#host", e))?,
        invitation: some(invite)
            .map(|v| Invitation::parse(&v))
            .transpose()
            .map_err(|e| bad("#invite", e))?,
        meeting_key: some(meeting_key)
            .map(|v| MeetingPublicKey::parse(&v))
            .transpose()
            .map_err(|e| bad("#k", e))?,
        ..LinkSecrets::default()
    })
}

/// What `hello` carries: `{"host_secret"?, "invite"?}` derived from the link's secrets.
pub fn hello_fields(host: &str, invite: &str) -> Result<String, Error> {
    let s = secrets(host, invite, "")?;
    Ok(json!({
        "host_secret": s.host_link.map(|l| l.server_secret()),
        "invite": s.invitation.map(|i| i.hello_token()),
    })
    .to_string())
}

/// A new meeting's host link: `{"seed", "host_secret_sha256", "meeting_key"}`.
pub fn new_host_link() -> Result<String, Error> {
    let seed = HostLinkSecret::generate().map_err(|e| Error(e.to_string()))?;
    Ok(json!({
        "seed": seed.encode(),
        "host_secret": seed.server_secret(),
        "host_secret_sha256": hex(&seed.server_secret_sha256()),
        "meeting_key": seed.meeting_key().public().encode(),
    })
    .to_string())
}

/// A new invitation's secret, to register with the server: `{"secret", "token_sha256"}`.
pub fn new_invitation_secret() -> Result<String, Error> {
    let secret = InvitationSecret::generate().map_err(|e| Error(e.to_string()))?;
    Ok(json!({
        "secret": secret.encode(),
        "token_sha256": hex(&secret.server_token_sha256()),
    })
    .to_string())
}

/// The `#invite=` value of an invitation this host issues under its host link's meeting key,
/// once the server gave it `id` and `expires_at`.
pub fn issue_invitation(
    host: &str,
    secret: &str,
    id: &str,
    expires_at: u64,
    skip_lobby: bool,
) -> Result<String, Error> {
    let seed = HostLinkSecret::parse(host).map_err(|e| bad("#host", e))?;
    let secret = InvitationSecret::parse(secret).map_err(|e| Error(e.to_string()))?;
    Invitation::issue(&seed.meeting_key(), id, secret, expires_at, skip_lobby)
        .map(|i| i.encode())
        .map_err(|e| Error(e.to_string()))
}

/// The meeting key of a host link (for the share link's `#k=`).
pub fn meeting_key_of(host: &str) -> Result<String, Error> {
    HostLinkSecret::parse(host)
        .map(|seed| seed.meeting_key().public().encode())
        .map_err(|e| bad("#host", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_made_here_round_trip_and_damaged_ones_are_refused() {
        let made: serde_json::Value = serde_json::from_str(&new_host_link().unwrap()).unwrap();
        let seed = made["seed"].as_str().unwrap();
        assert_eq!(meeting_key_of(seed).unwrap(), made["meeting_key"]);
        let hello: serde_json::Value =
            serde_json::from_str(&hello_fields(seed, "").unwrap()).unwrap();
        assert_eq!(hello["host_secret"], made["host_secret"]);
        assert!(hello["invite"].is_null());
        let secret: serde_json::Value =
            serde_json::from_str(&new_invitation_secret().unwrap()).unwrap();
        let invite = issue_invitation(
            seed,
            secret["secret"].as_str().unwrap(),
            "abc",
            1_900_000_000,
            true,
        )
        .unwrap();
        let parsed = secrets("", &invite, made["meeting_key"].as_str().unwrap()).unwrap();
        assert!(parsed.invitation.unwrap().skip_lobby);
        assert!(secrets("nope", "", "").is_err());
        assert!(secrets("", "a.b", "").is_err());
        assert!(secrets("", "", "!").is_err());
    }
}
