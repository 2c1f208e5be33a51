//! `conclave doctor`: a running server checked from the outside, as a participant would
//! reach it: the web address and its TLS certificate, a test meeting, the media address the
//! SFU names in its candidates, and media over UDP, ICE-TCP and the TURN relay, each by a bot
//! that must receive the others' verified frames. What is wrong is said in plain language.
//!
//! The judging is pure (`judge_*`, unit-tested); [`examine`] is the IO around it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::meeting_links::{self, HostLink};
use crate::{BotOptions, Report, Transport};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, but some participants or browsers will have trouble.
    Warn,
    /// Broken for some or all participants.
    Fail,
}

/// One check's outcome: `check` names it (`web`, `tls`, `meeting`, `links`, `candidates`, `udp`,
/// `tcp`, `turn`), `message` says what was found and, when wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub message: String,
}

impl Finding {
    fn new(check: &'static str, verdict: Verdict, message: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{tag}  {:<10} {}", self.check, self.message)
    }
}

/// What to examine.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The server's address (`https://meet.example.org`), or any link of it.
    pub url: String,
    /// A host link to test in, for servers where only accounts may create meetings.
    pub host_link: Option<String>,
    /// How long the media bots stay in the test meeting.
    pub media_seconds: f64,
}

/// Runs every check in order; later ones are skipped (and say so) when an earlier one
/// leaves nothing to test.
pub async fn examine(options: &DoctorOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let base = match base_of(&options.url) {
        Ok(base) => base,
        Err(why) => {
            findings.push(Finding::new("web", Verdict::Fail, why));
            return findings;
        }
    };
    let (scheme, host, port) = (base.scheme.as_str(), base.host.as_str(), base.port);
    if scheme == "https" {
        findings.push(check_tls(host, port).await);
    } else {
        findings.push(judge_plain_http(host));
    }
    let health = crate::tls::http()
        .get(format!("{}/healthz", base.origin))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match health {
        Ok(answer) if answer.status().is_success() => findings.push(Finding::new(
            "web",
            Verdict::Ok,
            format!("{} answers", base.origin),
        )),
        Ok(answer) => {
            findings.push(Finding::new(
                "web",
                Verdict::Fail,
                format!(
                    "{}/healthz answered {}: is this a Conclave server, or a proxy in front of \
                     one that does not pass requests on?",
                    base.origin,
                    answer.status()
                ),
            ));
            return findings;
        }
        Err(e) => {
            findings.push(Finding::new(
                "web",
                Verdict::Fail,
                format!(
                    "cannot reach {}: {}. Is `conclave serve` running, and its listen port \
                     open in the firewall?",
                    base.origin,
                    error_chain(&e)
                ),
            ));
            return findings;
        }
    }

    let links = match &options.host_link {
        Some(host_link) => {
            HostLink::parse(host_link).map(|host| (host_link.clone(), host.join_url()))
        }
        None => meeting_links::create_meeting(&base.origin, serde_json::json!({}), None)
            .await
            .map(|links| (links.host_url, links.join_url)),
    };
    let (host_url, join_url) = match links {
        Ok(links) => {
            findings.push(Finding::new(
                "meeting",
                Verdict::Ok,
                "a test meeting to join",
            ));
            findings.push(judge_link_origin(&links.1, &base.origin));
            links
        }
        Err(e) => {
            findings.push(Finding::new(
                "meeting",
                Verdict::Fail,
                format!(
                    "cannot make a test meeting: {e}. Where only accounts may create meetings, \
                     give one with --host-link"
                ),
            ));
            return findings;
        }
    };

    let duration = Duration::from_secs_f64(options.media_seconds);
    let bot = |join: &str, name: &str, transport: Transport| BotOptions {
        transport,
        ..BotOptions::new(join, name, duration)
    };
    let udp_host = BotOptions {
        admit_all: true,
        ..bot(&host_url, "doctor-udp", Transport::Udp)
    };
    let (udp, tcp, turn) = tokio::join!(
        crate::run(udp_host),
        crate::run(bot(&join_url, "doctor-tcp", Transport::Tcp)),
        crate::run(bot(&join_url, "doctor-turn", Transport::TurnTls)),
    );
    let resolved: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let udp = udp.map_err(|e| e.to_string());
    if let Ok(report) = &udp {
        findings.push(judge_candidates(&report.media_candidates, host, &resolved));
    }
    let others = |me: &str| -> Vec<String> {
        ["doctor-udp", "doctor-tcp", "doctor-turn"]
            .into_iter()
            .filter(|name| *name != me)
            .map(str::to_owned)
            .collect()
    };
    findings.push(judge_media(Transport::Udp, &udp, &others("doctor-udp")));
    findings.push(judge_media(
        Transport::Tcp,
        &tcp.map_err(|e| e.to_string()),
        &others("doctor-tcp"),
    ));
    findings.push(judge_media(
        Transport::TurnTls,
        &turn.map_err(|e| e.to_string()),
        &others("doctor-turn"),
    ));
    findings
}

/// The links a server hands out send participants to its `public_url`: it should be the
/// address they reach it by, or they land somewhere else (or on a certificate for another name).
fn judge_link_origin(join_url: &str, reached: &str) -> Finding {
    let named = url::Url::parse(join_url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_else(|_| join_url.to_owned());
    if named == reached {
        Finding::new("links", Verdict::Ok, format!("links name {reached}"))
    } else {
        Finding::new(
            "links",
            Verdict::Warn,
            format!(
                "the server's links name {named}, but it was reached at {reached}: people \
                 following a link go to {named}. Set conclave serve --public-url {reached} if \
                 that is the address participants use"
            ),
        )
    }
}

/// The server's origin as a client dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Base {
    origin: String,
    scheme: String,
    host: String,
    port: u16,
}

fn base_of(url: &str) -> Result<Base, String> {
    let parsed = url::Url::parse(url).map_err(|e| {
        format!(
            "{url:?} is not a web address ({e}); give the server's, like https://meet.example.org"
        )
    })?;
    let scheme = parsed.scheme().to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} is not an http: or https: address"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{url:?} names no port"))?;
    Ok(Base {
        origin: parsed.origin().ascii_serialization(),
        scheme,
        host,
        port,
    })
}

/// Plain HTTP: fine on this machine, a problem anywhere else.
fn judge_plain_http(host: &str) -> Finding {
    let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if local {
        Finding::new("tls", Verdict::Ok, "plain HTTP on this machine only")
    } else {
        Finding::new(
            "tls",
            Verdict::Warn,
            format!(
                "{host} is served over plain HTTP: browsers allow the camera and microphone only \
                 on HTTPS, and passcodes and links would cross the network in clear. Give \
                 conclave serve --tls-cert and --tls-key, or put a TLS proxy in front"
            ),
        )
    }
}

/// Connects with the client's roots and says what a browser would think of the certificate.
async fn check_tls(host: &str, port: u16) -> Finding {
    let name = match rustls::pki_types::ServerName::try_from(host.to_owned()) {
        Ok(name) => name,
        Err(e) => return Finding::new("tls", Verdict::Fail, format!("{host}: {e}")),
    };
    let tcp = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Finding::new(
                "tls",
                Verdict::Fail,
                format!("cannot connect to {host}:{port}: {e}. Is the port open?"),
            )
        }
        Err(_) => {
            return Finding::new(
                "tls",
                Verdict::Fail,
                format!("{host}:{port} did not answer within 10 s: a firewall dropping it?"),
            )
        }
    };
    let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config());
    let handshake =
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await;
    match handshake {
        Ok(Ok(stream)) => {
            let (_, session) = stream.get_ref();
            let not_after = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| not_after(leaf.as_ref()));
            judge_certificate_lifetime(host, not_after, SystemTime::now())
        }
        Ok(Err(e)) => judge_tls_error(host, &e),
        Err(_) => Finding::new(
            "tls",
            Verdict::Fail,
            format!("{host}:{port} accepted the connection but no TLS handshake within 10 s: is it HTTPS?"),
        ),
    }
}

/// The leaf certificate's end of validity.
fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn judge_certificate_lifetime(
    host: &str,
    not_after: Option<SystemTime>,
    now: SystemTime,
) -> Finding {
    let Some(not_after) = not_after else {
        return Finding::new(
            "tls",
            Verdict::Ok,
            format!("a valid certificate for {host}"),
        );
    };
    let days = not_after
        .duration_since(now)
        .map(|left| left.as_secs() / 86_400)
        .unwrap_or(0);
    if days < 14 {
        Finding::new(
            "tls",
            Verdict::Warn,
            format!("the certificate for {host} expires in {days} days: renew it"),
        )
    } else {
        Finding::new(
            "tls",
            Verdict::Ok,
            format!("a valid certificate for {host}, {days} days left"),
        )
    }
}

/// A failed handshake, in the words of what to do about it.
fn judge_tls_error(host: &str, error: &std::io::Error) -> Finding {
    use rustls::CertificateError as C;
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match rustls_error {
        Some(rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        )) => {
            format!(
                "the certificate is not for {host}: browsers will refuse the site. Use one that \
                 names {host}"
            )
        }
        Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            format!(
                "the certificate for {host} has expired: browsers will refuse the site. Renew it"
            )
        }
        Some(rustls::Error::InvalidCertificate(C::UnknownIssuer)) => format!(
            "the certificate for {host} is not signed by an authority this machine trusts \
             (self-signed?): browsers will refuse the site. Use one from a public CA (such as \
             Let's Encrypt), or install your organisation's CA on every device"
        ),
        Some(other) => format!("TLS with {host} failed: {other}"),
        None => format!("TLS with {host} failed: {error}"),
    };
    Finding::new("tls", Verdict::Fail, message)
}

/// The SFU's UDP candidate: an address participants can reach, ideally the one the web
/// address resolves to.
fn judge_candidates(candidates: &[String], host: &str, resolved: &[IpAddr]) -> Finding {
    let udp: Vec<IpAddr> = candidates
        .iter()
        .filter_map(|c| c.strip_prefix("udp "))
        .filter_map(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.ip())
        .collect();
    let listed = candidates.join(", ");
    let Some(&ip) = udp.first() else {
        return Finding::new(
            "candidates",
            Verdict::Fail,
            format!("the server names no UDP media address (candidates: [{listed}])"),
        );
    };
    let reachable_from_here = resolved.iter().all(|r| r.is_loopback());
    if ip.is_unspecified() {
        return Finding::new(
            "candidates",
            Verdict::Fail,
            format!("media goes to {ip}, which no one can send to: set --public-ip"),
        );
    }
    if ip.is_loopback() && !reachable_from_here {
        return Finding::new(
            "candidates",
            Verdict::Fail,
            format!(
                "media goes to {ip}, this server's loopback: participants elsewhere cannot \
                 reach it. Set --public-ip to the address they reach {host} at"
            ),
        );
    }
    if is_private(ip) && resolved.iter().any(|r| !is_private(*r) && !r.is_loopback()) {
        return Finding::new(
            "candidates",
            Verdict::Warn,
            format!(
                "media goes to {ip}, a private address, while {host} is public: only \
                 participants inside that network can send media. Set --public-ip"
            ),
        );
    }
    if !resolved.is_empty() && !resolved.contains(&ip) {
        return Finding::new(
            "candidates",
            Verdict::Warn,
            format!(
                "media goes to {ip} but {host} is at {}: fine behind a NAT or proxy that forwards \
                 the media port, wrong otherwise (--public-ip). Candidates: {listed}",
                resolved
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    Finding::new(
        "candidates",
        Verdict::Ok,
        format!("media address: {listed}"),
    )
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            // 100.64.0.0/10, carrier-grade NAT (`Ipv4Addr::is_shared` is unstable).
            let carrier_nat = v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64;
            v4.is_private() || v4.is_link_local() || carrier_nat
        }
        IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// One path's bot: it connected over its path and received the others' verified media.
fn judge_media(
    transport: Transport,
    report: &Result<Report, String>,
    others: &[String],
) -> Finding {
    let check = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::TurnTls => "turn",
    };
    let advice = match transport {
        Transport::Udp => "open the media port (UDP) in the server's firewall",
        Transport::Tcp => {
            "open the ICE-TCP port (--media-tcp-port, the media port's number by default) to TCP"
        }
        Transport::TurnTls => {
            "participants whose networks pass only TLS cannot join; run the relay with \
             --turn-port 443 (or point --turn-url at coturn)"
        }
    };
    let report = match report {
        Ok(report) => report,
        Err(e) if transport == Transport::TurnTls && e.contains("names no turns: server") => {
            return Finding::new(
                check,
                Verdict::Warn,
                format!("no TURN relay offered: {advice}"),
            )
        }
        Err(e) => {
            return Finding::new(check, Verdict::Fail, format!("the {check} bot failed: {e}"))
        }
    };
    if report.transport.as_deref() != Some(transport.as_str()) {
        return Finding::new(
            check,
            Verdict::Fail,
            format!(
                "media did not connect over {}: {advice}",
                transport.as_str()
            ),
        );
    }
    let missing: Vec<&str> = others
        .iter()
        .filter(|other| {
            !report
                .received
                .iter()
                .any(|track| &track.from == *other && track.verified > 0)
        })
        .map(String::as_str)
        .collect();
    let heard: Vec<&str> = others
        .iter()
        .map(String::as_str)
        .filter(|o| !missing.contains(o))
        .collect();
    if heard.is_empty() {
        return Finding::new(
            check,
            Verdict::Fail,
            format!(
                "connected over {} but received no verified media from anyone",
                transport.as_str()
            ),
        );
    }
    let mut message = format!(
        "media connected over {}; verified frames from {}",
        transport.as_str(),
        heard.join(", ")
    );
    if let Some(turn) = report
        .turn_urls
        .first()
        .filter(|_| transport == Transport::TurnTls)
    {
        message.push_str(&format!(" (relay {turn})"));
    }
    Finding::new(check, Verdict::Ok, message)
}

/// An error and its causes on one line (reqwest hides the useful part in `source`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReceivedTrack;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn links_for_another_origin_warn_and_name_the_flag() {
        let same = judge_link_origin(
            "https://meet.example.org/m/abc#k=1",
            "https://meet.example.org",
        );
        assert_eq!(same.verdict, Verdict::Ok, "{same}");
        let other = judge_link_origin("http://10.0.0.5:8080/m/abc#k=1", "https://meet.example.org");
        assert_eq!(other.verdict, Verdict::Warn, "{other}");
        assert!(
            other
                .message
                .contains("--public-url https://meet.example.org"),
            "{other}"
        );
    }

    #[test]
    fn any_link_of_the_server_names_its_origin() {
        let base = base_of("https://meet.example.org/m/abc#k=secret").unwrap();
        assert_eq!(base.origin, "https://meet.example.org");
        assert_eq!((base.host.as_str(), base.port), ("meet.example.org", 443));
        let base = base_of("http://[::1]:8080/").unwrap();
        assert_eq!((base.host.as_str(), base.port), ("::1", 8080));
        assert!(base_of("ftp://x").unwrap_err().contains("not an http"));
        assert!(base_of("meet.example.org")
            .unwrap_err()
            .contains("not a web address"));
    }

    #[test]
    fn plain_http_is_fine_on_loopback_only() {
        assert_eq!(judge_plain_http("127.0.0.1").verdict, Verdict::Ok);
        assert_eq!(judge_plain_http("localhost").verdict, Verdict::Ok);
        let remote = judge_plain_http("meet.example.org");
        assert_eq!(remote.verdict, Verdict::Warn);
        assert!(remote.message.contains("--tls-cert"), "{remote}");
    }

    #[test]
    fn a_certificate_near_its_end_is_a_warning() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let soon =
            judge_certificate_lifetime("h", Some(now + Duration::from_secs(3 * 86_400)), now);
        assert_eq!(soon.verdict, Verdict::Warn);
        assert!(soon.message.contains("expires in 3 days"), "{soon}");
        let fine =
            judge_certificate_lifetime("h", Some(now + Duration::from_secs(90 * 86_400)), now);
        assert_eq!(fine.verdict, Verdict::Ok);
        assert!(fine.message.contains("90 days left"), "{fine}");
    }

    #[test]
    fn tls_failures_say_what_a_browser_would_do() {
        let wrong_name = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ));
        let finding = judge_tls_error("meet.example.org", &wrong_name);
        assert_eq!(finding.verdict, Verdict::Fail);
        assert!(
            finding.message.contains("not for meet.example.org"),
            "{finding}"
        );
        let unknown = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(judge_tls_error("h", &unknown)
            .message
            .contains("self-signed?"));
        let expired = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert!(judge_tls_error("h", &expired)
            .message
            .contains("has expired"));
    }

    #[test]
    fn the_media_address_must_be_one_participants_reach() {
        let public = [
            "udp 203.0.113.7:10000".to_owned(),
            "tcp 203.0.113.7:10000".to_owned(),
        ];
        let ok = judge_candidates(&public, "meet.example.org", &[ip("203.0.113.7")]);
        assert_eq!(ok.verdict, Verdict::Ok, "{ok}");
        let loopback = ["udp 127.0.0.1:10000".to_owned()];
        let bad = judge_candidates(&loopback, "meet.example.org", &[ip("203.0.113.7")]);
        assert_eq!(bad.verdict, Verdict::Fail, "{bad}");
        assert!(bad.message.contains("--public-ip"), "{bad}");
        // Testing on the server itself, loopback is right.
        let local = judge_candidates(&loopback, "127.0.0.1", &[ip("127.0.0.1")]);
        assert_eq!(local.verdict, Verdict::Ok, "{local}");
        let private = ["udp 10.0.0.5:10000".to_owned()];
        let nat = judge_candidates(&private, "meet.example.org", &[ip("203.0.113.7")]);
        assert_eq!(nat.verdict, Verdict::Warn, "{nat}");
        let other = ["udp 198.51.100.9:10000".to_owned()];
        let elsewhere = judge_candidates(&other, "meet.example.org", &[ip("203.0.113.7")]);
        assert_eq!(elsewhere.verdict, Verdict::Warn, "{elsewhere}");
        let none = judge_candidates(&["tcp 203.0.113.7:443".to_owned()], "h", &[]);
        assert_eq!(none.verdict, Verdict::Fail, "{none}");
    }

    fn report(transport: Option<&str>, from: &[(&str, u64)]) -> Report {
        Report {
            transport: transport.map(str::to_owned),
            received: from
                .iter()
                .map(|(name, verified)| ReceivedTrack {
                    from: (*name).to_owned(),
                    verified: *verified,
                    ..ReceivedTrack::default()
                })
                .collect(),
            ..Report::default()
        }
    }

    #[test]
    fn a_path_works_when_it_connected_and_carried_verified_media() {
        let others = ["b".to_owned(), "c".to_owned()];
        let ok = judge_media(
            Transport::Tcp,
            &Ok(report(Some("tcp"), &[("b", 5), ("c", 0)])),
            &others,
        );
        assert_eq!(ok.verdict, Verdict::Ok, "{ok}");
        assert!(ok.message.contains("verified frames from b"), "{ok}");
        let silent = judge_media(
            Transport::Tcp,
            &Ok(report(Some("tcp"), &[("b", 0)])),
            &others,
        );
        assert_eq!(silent.verdict, Verdict::Fail, "{silent}");
        let blocked = judge_media(Transport::Udp, &Ok(report(None, &[])), &others);
        assert_eq!(blocked.verdict, Verdict::Fail, "{blocked}");
        assert!(
            blocked.message.contains("open the media port (UDP)"),
            "{blocked}"
        );
        let no_relay = judge_media(
            Transport::TurnTls,
            &Err("cannot open turn-tls media: the welcome names no turns: server".into()),
            &others,
        );
        assert_eq!(no_relay.verdict, Verdict::Warn, "{no_relay}");
        assert!(no_relay.message.contains("--turn-port 443"), "{no_relay}");
    }
}
