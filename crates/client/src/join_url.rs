//! Reads a join link (`http://host:port/m/<id>`, with `#host=<secret>` on host links).

use proto::MeetingId;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// The signaling WebSocket URL.
    pub ws_url: String,
    pub meeting: MeetingId,
    pub host_secret: Option<String>,
    /// `#pwd=` on links of passcode-protected meetings.
    pub passcode: Option<String>,
    /// `#invite=` on per-invitee invitation links.
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
        let host_secret = fragment("host=");
        let passcode = fragment("pwd=");
        let invite = fragment("invite=");
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let host_for_url = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => host.clone(),
        };
        Ok(JoinLink {
            ws_url: format!("{ws_scheme}://{host_for_url}{port}/ws"),
            meeting,
            host_secret,
            passcode,
            invite,
            host,
        })
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
    fn parses_join_and_host_links() {
        let id = MeetingId::from_random_bytes([5; 16]);
        let join = JoinLink::parse(&format!("http://127.0.0.1:8080/m/{id}")).unwrap();
        assert_eq!(join.ws_url, "ws://127.0.0.1:8080/ws");
        assert_eq!(join.meeting, id);
        assert_eq!(join.host_secret, None);
        let host = JoinLink::parse(&format!("https://example.org/m/{id}#host=abc")).unwrap();
        assert_eq!(host.ws_url, "wss://example.org/ws");
        assert_eq!(host.host_secret.as_deref(), Some("abc"));
        let guarded =
            JoinLink::parse(&format!("http://h/m/{id}#pwd=open%20sesame&invite=a.1.x")).unwrap();
        assert_eq!(guarded.passcode.as_deref(), Some("open sesame"));
        assert_eq!(guarded.invite.as_deref(), Some("a.1.x"));
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
