//! The scenarios: who publishes, who subscribes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Everyone publishes audio and video and receives everyone else.
    Meeting(usize),
    /// One publisher, this many subscribers.
    Webinar(usize),
}

pub const ALL: &[Scenario] = &[
    Scenario::Meeting(3),
    Scenario::Meeting(10),
    Scenario::Meeting(25),
    Scenario::Meeting(50),
    Scenario::Webinar(50),
    Scenario::Webinar(200),
];

pub const QUICK: &[Scenario] = &[Scenario::Meeting(3), Scenario::Meeting(10)];

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        let (kind, n) = s.split_once('-')?;
        let n: usize = n.parse().ok()?;
        match kind {
            "meeting" if n >= 2 => Some(Scenario::Meeting(n)),
            "webinar" if n >= 1 => Some(Scenario::Webinar(n)),
            _ => None,
        }
    }

    /// Bots in the run (participants).
    pub fn participants(self) -> usize {
        match self {
            Scenario::Meeting(n) => n,
            Scenario::Webinar(m) => m + 1,
        }
    }

    pub fn publishes(self, bot: usize) -> bool {
        match self {
            Scenario::Meeting(_) => true,
            Scenario::Webinar(_) => bot == 0,
        }
    }

    pub fn publishers(self) -> usize {
        match self {
            Scenario::Meeting(n) => n,
            Scenario::Webinar(_) => 1,
        }
    }

    /// How many bots verify every frame they receive. In meetings above 25 participants the
    /// others only count datagrams once the window opens: decrypting and verifying 270 k
    /// packets/s (meeting-50) would take the generator about three cores, more than this
    /// machine has beside the server's, and a saturated generator (dropping at its sockets,
    /// asking for retransmissions) would measure itself instead of the server. Ten
    /// verifying bots receive from all 49 others, so latency and loss still cover every
    /// publisher and every path through the server.
    pub fn verifying_bots(self) -> usize {
        match self {
            Scenario::Meeting(n) if n > 25 => 10,
            other => other.participants(),
        }
    }

    /// Distinct publishers bot `bot` should hear.
    pub fn expected_publishers(self, bot: usize) -> usize {
        match self {
            Scenario::Meeting(n) => n - 1,
            Scenario::Webinar(_) => usize::from(bot != 0),
        }
    }

    /// Spacing of joins, so that join time measures the server, not a thundering herd.
    pub fn join_interval_ms(self) -> u64 {
        match self {
            Scenario::Meeting(n) if n <= 10 => 50,
            Scenario::Meeting(_) => 100,
            Scenario::Webinar(_) => 20,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::Meeting(n) => write!(f, "meeting-{n}"),
            Scenario::Webinar(m) => write!(f, "webinar-{m}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// `conclave serve --downlink-estimation false`: forwards every subscribed track, as
    /// Janus VideoRoom does (it has no downlink estimator deciding what a subscriber gets).
    Conclave,
    /// `conclave serve` as installed: each subscriber's TWCC downlink estimate decides which
    /// tracks it gets, and str0m paces what it sends.
    ConclaveBwe,
    Janus,
    Floor,
}

impl TargetKind {
    pub fn parse(s: &str) -> Option<TargetKind> {
        match s {
            "conclave" => Some(TargetKind::Conclave),
            "conclave-bwe" => Some(TargetKind::ConclaveBwe),
            "janus" => Some(TargetKind::Janus),
            "floor" => Some(TargetKind::Floor),
            _ => None,
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Conclave => "conclave",
            TargetKind::ConclaveBwe => "conclave-bwe",
            TargetKind::Janus => "janus",
            TargetKind::Floor => "floor",
        })
    }
}
