//! Making a meeting's links, as a host's client does: the client makes every secret, the
//! server gets only digests (see `e2ee::link_secrets`). `conclave meeting create` and
//! `conclave meeting invite` are thin shells around this, and tests use it as the real thing.

use e2ee::{HostLinkSecret, Invitation, InvitationSecret};
use serde_json::Value;

use crate::join_url::{JoinLink, JoinLinkError};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: Value,
    },
    #[error("{url} answered without {field}: {body}")]
    Incomplete {
        url: String,
        field: &'static str,
        body: Value,
    },
    #[error(transparent)]
    Link(#[from] JoinLinkError),
    #[error("{0} is not a host link (<server>/m/<id>#host=<secret>)")]
    NotAHostLink(String),
    #[error("cannot make the link's secret: {0}")]
    Secret(#[from] e2ee::E2eeError),
}

/// A new meeting's links.
#[derive(Debug, Clone)]
pub struct MeetingLinks {
    pub id: String,
    /// For guests: `<server>/m/<id>#k=<meeting key>` (and `&pwd=` with a passcode).
    pub join_url: String,
    /// For hosts: `<server>/m/<id>#host=<seed>`. Keep it to yourself.
    pub host_url: String,
    /// What the server checks for hosts (the API's bearer token), derived from the seed.
    pub host_secret: String,
}

async fn post_json(request: reqwest::RequestBuilder, url: &str) -> Result<Value, LinkError> {
    Ok(send(request, url).await?.1)
}

/// Sends `request`; the answer's headers and JSON body, or why there was none that succeeded.
async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::header::HeaderMap, Value), LinkError> {
    let response = request.send().await.map_err(|e| LinkError::Unreachable {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(LinkError::Refused {
            url: url.to_owned(),
            status: status.as_u16(),
            body,
        });
    }
    Ok((headers, body))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Logs in to an account on `server`, as the web app's sign-in does; the `conclave_session`
/// cookie (`name=value`) that [`create_meeting`] takes to make the account a meeting's owner.
pub async fn log_in(server: &str, name: &str, password: &str) -> Result<String, LinkError> {
    let url = format!("{}/api/login", server.trim_end_matches('/'));
    let request = crate::tls::http()
        .post(&url)
        .json(&serde_json::json!({ "name": name, "password": password }));
    let (headers, body) = send(request, &url).await?;
    let cookie = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .find(|pair| pair.starts_with("conclave_session="))
        .map(str::to_owned);
    cookie.ok_or(LinkError::Incomplete {
        url,
        field: "the conclave_session cookie",
        body,
    })
}

/// Creates a meeting on `server` (`http(s)://host:port`). `options` is the rest of the
/// `POST /api/meetings` body (`passcode`, `require_invitation`, `permissions`); `cookie`, a
/// logged-in account's `conclave_session` cookie header value, makes that account the owner.
pub async fn create_meeting(
    server: &str,
    options: Value,
    cookie: Option<&str>,
) -> Result<MeetingLinks, LinkError> {
    let seed = HostLinkSecret::generate()?;
    let url = format!("{}/api/meetings", server.trim_end_matches('/'));
    let mut body = match options {
        Value::Object(map) => Value::Object(map),
        _ => Value::Object(Default::default()),
    };
    body["host_secret_sha256"] = hex(&seed.server_secret_sha256()).into();
    let mut request = crate::tls::http().post(&url).json(&body);
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let answer = post_json(request, &url).await?;
    let (Some(id), Some(join)) = (answer["id"].as_str(), answer["join_url"].as_str()) else {
        return Err(LinkError::Incomplete {
            url,
            field: "id/join_url",
            body: answer,
        });
    };
    let page = join.split('#').next().unwrap_or(join);
    let key = seed.meeting_key().public().encode();
    // The server's join link carries `#pwd=` for a passcode; the meeting key is ours to add.
    let join_url = match join.split_once('#') {
        Some((_, fragment)) => format!("{page}#{fragment}&k={key}"),
        None => format!("{page}#k={key}"),
    };
    Ok(MeetingLinks {
        id: id.to_owned(),
        join_url,
        host_url: format!("{page}#host={}", seed.encode()),
        host_secret: seed.server_secret(),
    })
}

/// The pieces of a host link the API needs.
pub struct HostLink {
    pub link: JoinLink,
    pub seed: HostLinkSecret,
    /// The host secret the server checks (bearer token).
    pub server_secret: String,
}

impl HostLink {
    pub fn parse(host_link: &str) -> Result<Self, LinkError> {
        let link = JoinLink::parse(host_link)?;
        let seed = link
            .secrets()?
            .host_link
            .ok_or_else(|| LinkError::NotAHostLink(host_link.to_owned()))?;
        Ok(HostLink {
            server_secret: seed.server_secret(),
            link,
            seed,
        })
    }

    /// The guests' link of the same meeting: `<server>/m/<id>#k=<meeting key>`.
    pub fn join_url(&self) -> String {
        format!(
            "{}/m/{}#k={}",
            self.link.base,
            self.link.meeting,
            self.seed.meeting_key().public().encode()
        )
    }

    /// `<server>/api/meetings/<id>`.
    pub fn api(&self) -> String {
        format!("{}/api/meetings/{}", self.link.base, self.link.meeting)
    }
}

/// A new invitation, issued by this host's client.
#[derive(Debug, Clone)]
pub struct InvitationLink {
    pub id: String,
    /// `<server>/m/<id>#invite=<invitation>&k=<meeting key>`.
    pub url: String,
    pub expires_at: u64,
}

/// Issues an invitation under the meeting key of `host_link` and registers its token's digest
/// with the server (for revocation, single use and its label).
pub async fn invite(
    host_link: &str,
    label: &str,
    expires_in_secs: u64,
    single_use: bool,
    skip_lobby: bool,
) -> Result<InvitationLink, LinkError> {
    let host = HostLink::parse(host_link)?;
    let secret = InvitationSecret::generate()?;
    let url = format!("{}/invitations", host.api());
    let body = serde_json::json!({
        "label": label, "expires_in_secs": expires_in_secs,
        "single_use": single_use, "skip_lobby": skip_lobby,
        "token_sha256": hex(&secret.server_token_sha256()),
    });
    let request = crate::tls::http()
        .post(&url)
        .bearer_auth(&host.server_secret)
        .json(&body);
    let answer = post_json(request, &url).await?;
    let (Some(id), Some(expires_at)) = (answer["id"].as_str(), answer["expires_at"].as_u64())
    else {
        return Err(LinkError::Incomplete {
            url,
            field: "id/expires_at",
            body: answer,
        });
    };
    let meeting_key = host.seed.meeting_key();
    let invitation = Invitation::issue(&meeting_key, id, secret, expires_at, skip_lobby)?;
    Ok(InvitationLink {
        id: id.to_owned(),
        url: format!(
            "{}/m/{}#invite={}&k={}",
            host.link.base,
            host.link.meeting,
            invitation.encode(),
            meeting_key.public().encode()
        ),
        expires_at,
    })
}
