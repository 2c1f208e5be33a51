//! Reads a meeting link: `http://host:port/m/<id>`, and in its `#fragment` (which no browser
//! sends to a server) `host=<seed>` on host links, `k=<meeting key>`, `pwd=<passcode>`,
//! `invite=<invitation>`. See `e2ee::link_secrets` for what each secret is and what the server
//! gets of it.

use e2ee::{HostLinkSecret, Invitation, MeetingPublicKey};
use proto::MeetingId;
use session::LinkSecrets;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// The signaling WebSocket URL.
    pub ws_url: String,
    /// `http(s)://host:port`, the server's base for the API.
    pub base: String,
    pub meeting: MeetingId,
    /// `#host=`: the host link's seed (never sent; see [`JoinLink::hello_host_secret`]).
    pub host_link: Option<String>,
    /// `#k=`: the meeting key the group must be under.
    pub meeting_key: Option<String>,
    /// `#pwd=` on links of passcode-protected meetings.
    pub passcode: Option<String>,
    /// `#invite=` on per-invitee invitation links (never sent; see
    /// [`JoinLink::hello_invite`]).
    pub invite: Option<String>,
    /// The server's host, for choosing the local address media goes out from.
    pub host: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinLinkError {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("a join link is http(s)://host/m/<meeting id>")]
    NotAJoinLink,
    #[error("the link's #{0} is damaged: {1}")]
    BadSecret(&'static str, e2ee::E2eeError),
}

impl JoinLink {
    pub fn parse(link: &str) -> Result<Self, JoinLinkError> {
        let url = Url::parse(link).map_err(|e| JoinLinkError::NotAUrl(e.to_string()))?;
        let ws_scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            _ => return Err(JoinLinkError::NotAJoinLink),
        };
        let host = url
            .host_str()
            .ok_or(JoinLinkError::NotAJoinLink)?
            .to_owned();
        let mut segments = url.path_segments().ok_or(JoinLinkError::NotAJoinLink)?;
        let meeting = match (segments.next(), segments.next(), segments.next()) {
            (Some("m"), Some(id), None) => {
                MeetingId::parse(id).ok_or(JoinLinkError::NotAJoinLink)?
            }
            _ => return Err(JoinLinkError::NotAJoinLink),
        };
        let fragment = |key: &str| {
            url.fragment()
                .and_then(|f| f.split('&').find_map(|kv| kv.strip_prefix(key)))
                .map(percent_decode)
        };
        let host_link = fragment("host=");
        let meeting_key = fragment("k=");
        let passcode = fragment("pwd=");
        let invite = fragment("invite=");
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let host_for_url = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => host.clone(),
        };
        let link = JoinLink {
            ws_url: format!("{ws_scheme}://{host_for_url}{port}/ws"),
            base: format!("{}://{host_for_url}{port}", url.scheme()),
            meeting,
            host_link,
            meeting_key,
            passcode,
            invite,
            host,
        };
        link.secrets()?;
        Ok(link)
    }

    /// The secrets this link carries, parsed.
    pub fn secrets(&self) -> Result<LinkSecrets, JoinLinkError> {
        Ok(LinkSecrets {
            host_link: self
                .host_link
                .as_deref()
                .map(HostLinkSecret::parse)
                .transpose()
                .map_err(|e| JoinLinkError::BadSecret("host", e))?,
            invitation: self
                .invite
                .as_deref()
                .map(Invitation::parse)
                .transpose()
                .map_err(|e| JoinLinkError::BadSecret("invite", e))?,
            meeting_key: self
                .meeting_key
                .as_deref()
                .map(MeetingPublicKey::parse)
                .transpose()
                .map_err(|e| JoinLinkError::BadSecret("k", e))?,
            ..LinkSecrets::default()
        })
    }

    /// What `hello` carries for a host link: the host secret derived from its seed.
    pub fn hello_host_secret(&self) -> Option<String> {
        let secrets = self.secrets().ok()?;
        secrets.host_link.map(|link| link.server_secret())
    }

    /// What `hello` carries for an invitation: `<id>.<token>`, derived from its secret.
    pub fn hello_invite(&self) -> Option<String> {
        let secrets = self.secrets().ok()?;
        secrets.invitation.map(|inv| inv.hello_token())
    }
}

/// Fragment values are percent-encoded by browsers and by the server's links.
fn percent_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_join_and_host_links_and_derives_what_the_server_gets() {
        let id = MeetingId::from_random_bytes([5; 16]);
        let join = JoinLink::parse(&format!("http://127.0.0.1:8080/m/{id}")).unwrap();
        assert_eq!(join.ws_url, "ws://127.0.0.1:8080/ws");
        assert_eq!(join.base, "http://127.0.0.1:8080");
        assert_eq!(join.meeting, id);
        assert_eq!(join.host_link, None);
        let seed = HostLinkSecret::generate().unwrap();
        let host = JoinLink::parse(&format!(
            "https://example.org/m/{id}#host={}",
            seed.encode()
        ))
        .unwrap();
        assert_eq!(host.ws_url, "wss://example.org/ws");
        assert_eq!(host.hello_host_secret(), Some(seed.server_secret()));
        assert_ne!(
            host.hello_host_secret(),
            host.host_link,
            "the seed itself is never sent"
        );
        let key = seed.meeting_key().public().encode();
        let guarded =
            JoinLink::parse(&format!("http://h/m/{id}#pwd=open%20sesame&k={key}")).unwrap();
        assert_eq!(guarded.passcode.as_deref(), Some("open sesame"));
        assert_eq!(
            guarded.secrets().unwrap().meeting_key,
            Some(seed.meeting_key().public())
        );
        assert!(matches!(
            JoinLink::parse(&format!("http://h/m/{id}#host=abc")),
            Err(JoinLinkError::BadSecret("host", _))
        ));
        assert!(matches!(
            JoinLink::parse(&format!("http://h/m/{id}#invite=a.1.x")),
            Err(JoinLinkError::BadSecret("invite", _))
        ));
    }

    #[test]
    fn refuses_other_links() {
        assert!(JoinLink::parse("not a url").is_err());
        assert_eq!(
            JoinLink::parse("http://h/x/y"),
            Err(JoinLinkError::NotAJoinLink)
        );
        assert_eq!(
            JoinLink::parse("ftp://h/m/aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(JoinLinkError::NotAJoinLink)
        );
        assert_eq!(
            JoinLink::parse("http://h/m/short"),
            Err(JoinLinkError::NotAJoinLink)
        );
    }
}
