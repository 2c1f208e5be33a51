//! Counters the server exposes at `/metrics` in the Prometheus text format.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::ErrorCode;
use sfu::SfuStats;

use crate::ice_tcp::{TcpRefusal, TcpStats};

#[derive(Default)]
pub struct Metrics {
    /// Signaling messages refused, by reason.
    rejected: Mutex<HashMap<ErrorCode, u64>>,
    pub sessions_opened: AtomicU64,
    pub participants_joined: AtomicU64,
    pub meetings_created: AtomicU64,
    sfu: Mutex<SfuStats>,
    tcp: Mutex<TcpStats>,
    /// HTTP API requests refused, by the `error` code of the answer.
    http_refused: Mutex<HashMap<&'static str, u64>>,
    /// The built-in TURN relay's counters, when it runs.
    turn: std::sync::OnceLock<std::sync::Arc<turn::RelayStats>>,
}

impl Metrics {
    pub fn count_rejected(&self, code: ErrorCode) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(code).or_default() += 1;
        }
    }

    pub fn rejected(&self, code: ErrorCode) -> u64 {
        self.rejected
            .lock()
            .map(|map| map.get(&code).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn count_http_refused(&self, code: &'static str) {
        if let Ok(mut map) = self.http_refused.lock() {
            *map.entry(code).or_default() += 1;
        }
    }

    pub fn http_refused(&self, code: &str) -> u64 {
        self.http_refused
            .lock()
            .map(|map| map.get(code).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn set_sfu_stats(&self, stats: SfuStats) {
        if let Ok(mut s) = self.sfu.lock() {
            *s = stats;
        }
    }

    pub fn set_turn_stats(&self, stats: std::sync::Arc<turn::RelayStats>) {
        let _ = self.turn.set(stats);
    }

    pub fn set_tcp_stats(&self, stats: TcpStats) {
        if let Ok(mut s) = self.tcp.lock() {
            *s = stats;
        }
    }

    /// The ICE-TCP connections' counters, as last reported by the media loop.
    pub fn tcp_stats(&self) -> TcpStats {
        self.tcp.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn render(&self, participants: usize, meetings: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE conclave_signaling_rejected_total counter");
        if let Ok(map) = self.rejected.lock() {
            for code in ErrorCode::ALL {
                let n = map.get(&code).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "conclave_signaling_rejected_total{{reason=\"{}\"}} {n}",
                    code.as_str()
                );
            }
        }
        let _ = writeln!(out, "# TYPE conclave_http_refused_total counter");
        if let Ok(map) = self.http_refused.lock() {
            let mut codes: Vec<_> = map.iter().collect();
            codes.sort();
            for (code, n) in codes {
                let _ = writeln!(out, "conclave_http_refused_total{{reason=\"{code}\"}} {n}");
            }
        }
        let counters = [
            ("conclave_sessions_opened_total", &self.sessions_opened),
            (
                "conclave_participants_joined_total",
                &self.participants_joined,
            ),
            ("conclave_meetings_created_total", &self.meetings_created),
        ];
        for (name, value) in counters {
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE conclave_participants gauge");
        let _ = writeln!(out, "conclave_participants {participants}");
        let _ = writeln!(out, "# TYPE conclave_live_meetings gauge");
        let _ = writeln!(out, "conclave_live_meetings {meetings}");
        if let Ok(s) = self.sfu.lock() {
            let sfu = [
                ("conclave_media_datagrams_in_total", s.datagrams_in),
                (
                    "conclave_media_datagrams_rejected_total",
                    s.datagrams_rejected,
                ),
                ("conclave_media_frames_in_total", s.frames_in),
                ("conclave_media_frames_forwarded_total", s.frames_forwarded),
                ("conclave_media_frames_blocked_total", s.frames_blocked),
                (
                    "conclave_media_keyframe_requests_total",
                    s.keyframe_requests,
                ),
            ];
            for (name, value) in sfu {
                let _ = writeln!(out, "# TYPE {name} counter");
                let _ = writeln!(out, "{name} {value}");
            }
        }
        if let Some(turn) = self.turn.get() {
            for (name, value) in turn.snapshot() {
                let _ = writeln!(out, "# TYPE conclave_{name} counter");
                let _ = writeln!(out, "conclave_{name} {value}");
            }
        }
        if let Ok(tcp) = self.tcp.lock() {
            let _ = writeln!(out, "# TYPE conclave_media_tcp_connections gauge");
            let _ = writeln!(out, "conclave_media_tcp_connections {}", tcp.open);
            let _ = writeln!(out, "# TYPE conclave_media_tcp_refused_total counter");
            for why in TcpRefusal::ALL {
                let n = tcp.refused.get(&why).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "conclave_media_tcp_refused_total{{reason=\"{}\"}} {n}",
                    why.as_str()
                );
            }
            let _ = writeln!(
                out,
                "# TYPE conclave_media_tcp_dropped_frames_total counter"
            );
            let _ = writeln!(
                out,
                "conclave_media_tcp_dropped_frames_total {}",
                tcp.dropped_frames
            );
        }
        out
    }
}
