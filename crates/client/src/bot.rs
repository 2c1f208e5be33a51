//! `conclave bot`: a native participant that joins through the same signaling as a browser,
//! publishes a known Opus and VP8 clip, receives everyone else and checks every frame.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use proto::{
    ClientMessage, LeaveReason, ServerMessage, TrackInfo, TrackKind, TrackSource,
    ABS_CAPTURE_TIME_EXT_ID,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::Receive;
use str0m::rtp::{AbsCaptureTime, Extension, ExtensionMap};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::clip;
use crate::downlink::{Datagram, Downlink, DownlinkShape};
use crate::join_url::{JoinLink, JoinLinkError};
use crate::media_link::{MediaLink, Transport};
use crate::receive::{FrameCheck, TrackReceiver};
use crate::report::{Report, SentCounts};
use session::{E2eeReport, GroupSession, Unopened};

/// How long a lost signaling connection may take to come back before the bot gives up.
const RECONNECT_WINDOW: Duration = Duration::from_secs(10);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before knocking again after `rate_limited`.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(1100);
/// How long a frame whose keys have not arrived yet waits for the Commit that brings them.
const HOLD_FOR_KEYS: Duration = Duration::from_secs(1);
const MAX_HELD_FRAMES: usize = 512;
/// How often the MLS state machine looks for commits to make.
const GROUP_TICK: Duration = Duration::from_millis(100);
/// A silent bot's audio: one frame in this many (every 400 ms), like Opus DTX.
const SILENT_AUDIO_EVERY: u64 = 20;
/// Simulcast layers by RID, smallest first, and the clip each plays.
const SIMULCAST_LAYERS: [(&str, u32); 3] = [("q", 150), ("h", 500), ("f", 1500)];

#[derive(Debug, Clone)]
pub struct BotOptions {
    pub join: String,
    pub name: String,
    pub duration: Duration,
    pub video_kbps: u32,
    /// As a host: admit everyone who waits in the lobby (scripted meetings and benchmarks).
    pub admit_all: bool,
    /// An emulated bottleneck, delay and loss on what the bot receives.
    pub downlink: Option<DownlinkShape>,
    /// Whether the bot's audio says it is speaking (RFC 6464 level) or silent. A silent bot
    /// sends a comfort-noise frame every 400 ms, as Opus DTX does, instead of 50 a second.
    pub speaking: bool,
    /// Publish the camera in three simulcast layers (RIDs q, h, f: the 150, 500 and
    /// 1500 kbps clips) instead of one stream at `video_kbps`.
    pub simulcast: bool,
    /// The most the bot asks to receive in total (`video_layout.max_kbps`).
    pub max_receive_kbps: Option<u32>,
    /// As a host-link holder: make participants with these names co-hosts when they join,
    /// at the server (role) and in the MLS group (a promotion signed with the meeting key).
    pub promote: Vec<String>,
    /// Take each promotion back this long after making it.
    pub demote_after: Option<Duration>,
    /// The path media takes to the SFU: UDP, or ICE-TCP.
    pub transport: Transport,
}

impl BotOptions {
    /// A bot with the default 500 kbps video.
    pub fn new(join: impl Into<String>, name: impl Into<String>, duration: Duration) -> Self {
        BotOptions {
            join: join.into(),
            name: name.into(),
            duration,
            video_kbps: 500,
            admit_all: false,
            downlink: None,
            speaking: true,
            simulcast: false,
            max_receive_kbps: None,
            promote: Vec::new(),
            demote_after: None,
            transport: Transport::Udp,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    JoinLink(#[from] JoinLinkError),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the server refused: {code}: {reason}")]
    Refused { code: String, reason: String },
    #[error("signaling: {0}")]
    Signaling(String),
    #[error("media: {0}")]
    Media(String),
}

/// Why one signaling session ended.
enum SessionEnd {
    /// The bot's time is up and it left.
    Done,
    /// The connection dropped: join again.
    Lost(String),
}

/// A bot across reconnects.
pub struct Bot {
    options: BotOptions,
    link: JoinLink,
    deadline: Instant,
    receivers: HashMap<(u64, TrackKind), TrackReceiver>,
    errors: Vec<String>,
    sent: SentCounts,
    reconnects: u32,
    reconnect_ms: Vec<u64>,
    /// When the signaling connection was lost, until media flows again.
    lost_at: Option<Instant>,
    participant_id: Option<u64>,
    /// The path media last connected over.
    transport_used: Option<Transport>,
    /// The SFU's ICE candidates from its first answer (`"udp 203.0.113.7:10000"`).
    media_candidates: Vec<String>,
    /// The TURN URLs the welcome offered.
    turn_urls: Vec<String>,
    /// E2EE counters of finished sessions; the current session's are added in the report.
    e2ee_done: E2eeReport,
    /// The clock for the MLS state machines.
    started: Instant,
    /// Kept across reconnects, so the server lets a dropped bot straight back in.
    device_id: String,
    /// Kept across reconnects, so the hosts' clients let a dropped bot back into the group.
    device_key: e2ee::DeviceKey,
    /// Datagrams dropped by the emulated downlink in finished sessions.
    downlink_dropped: u64,
    /// Media bytes received (UDP payloads, after the emulated downlink) and over how long.
    received_bytes: u64,
    received_datagrams: u64,
    receiving_for: Duration,
    /// The last active speakers the server named, most recent first.
    speakers: Vec<String>,
    /// Lobby entries this bot already asked to admit: lobby snapshots can cross an admission.
    admitting: std::collections::HashSet<u64>,
    /// Promotions this bot made (`--promote`), and when.
    promoted: Vec<(proto::ParticipantId, Instant)>,
}

/// Runs a bot for its duration and returns its report.
pub async fn run(options: BotOptions) -> Result<Report, BotError> {
    let link = JoinLink::parse(&options.join)?;
    let mut bot = Bot {
        deadline: Instant::now() + options.duration,
        link,
        options,
        receivers: HashMap::new(),
        errors: Vec::new(),
        sent: SentCounts::default(),
        reconnects: 0,
        reconnect_ms: Vec::new(),
        lost_at: None,
        participant_id: None,
        transport_used: None,
        media_candidates: Vec::new(),
        turn_urls: Vec::new(),
        e2ee_done: E2eeReport::default(),
        started: Instant::now(),
        admitting: Default::default(),
        promoted: Vec::new(),
        downlink_dropped: 0,
        received_bytes: 0,
        received_datagrams: 0,
        receiving_for: Duration::ZERO,
        speakers: Vec::new(),
        device_key: e2ee::DeviceKey::generate()
            .map_err(|e| BotError::Media(format!("cannot make a device key: {e}")))?,
        device_id: {
            use rand::RngCore;
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        },
    };
    let mut first = true;
    loop {
        match bot.session(first).await {
            Ok(SessionEnd::Done) => break,
            Ok(SessionEnd::Lost(why)) => {
                warn!(name = %bot.options.name, "signaling lost ({why}); joining again");
                bot.errors.push(format!("connection lost: {why}"));
                if !bot.rejoin().await {
                    break;
                }
            }
            // Many bots starting at once from one address meet the server's knock limit:
            // like a person, wait a moment and knock again.
            Err(BotError::Refused { code, .. })
                if code == "rate_limited" && Instant::now() + RATE_LIMIT_BACKOFF < bot.deadline =>
            {
                tokio::time::sleep(RATE_LIMIT_BACKOFF).await;
                continue;
            }
            Err(e) if first => return Err(e),
            Err(e) => {
                bot.errors.push(e.to_string());
                if !bot.rejoin().await {
                    break;
                }
            }
        }
        first = false;
    }
    Ok(bot.report())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A received frame waiting for its keys.
struct HeldFrame {
    arrived: Instant,
    from: u64,
    kind: TrackKind,
    rtp_time: u64,
    capture: Option<SystemTime>,
    data: std::sync::Arc<[u8]>,
}

/// One signaling session's media state.
struct Session {
    rtc: Rtc,
    link: MediaLink,
    pending: Option<SdpPendingOffer>,
    audio_mid: Mid,
    video_mid: Mid,
    /// Remote tracks by our m-line.
    tracks: HashMap<Mid, (u64, TrackKind)>,
    names: HashMap<u64, String>,
    connected_at: Option<Instant>,
    group: GroupSession,
    held: std::collections::VecDeque<HeldFrame>,
    last_keyframe_request: Option<Instant>,
    audio_sent: u64,
    video_sent: u64,
    /// The video frame count at which the clip last started over (at its keyframe).
    clip_start: u64,
    /// A subscriber asked for a keyframe: start the clip over at the next frame.
    keyframe_requested: bool,
    /// Bytes and count of every datagram delivered to the WebRTC stack.
    received_bytes: u64,
    received_datagrams: u64,
    /// Simulcast layers the SFU said nobody receives: not encoded (sent) until named again.
    paused_layers: std::collections::HashSet<String>,
    /// The emulated downlink every received datagram passes through, if one is set.
    downlink: Option<Downlink>,
    /// When the downlink next delivers a datagram.
    downlink_due: Option<Instant>,
    speaking: bool,
}

impl Bot {
    async fn rejoin(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        self.lost_at.get_or_insert_with(Instant::now);
        self.reconnects += 1;
        tokio::time::sleep(RECONNECT_BACKOFF).await;
        true
    }

    /// Unix milliseconds: the group session checks invitation expiry against it.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn report(&self) -> Report {
        let mut received: Vec<_> = self.receivers.values().map(|r| r.summary()).collect();
        received.sort_by(|a, b| (&a.from, &a.kind).cmp(&(&b.from, &b.kind)));
        Report {
            name: self.options.name.clone(),
            participant_id: self.participant_id,
            received,
            errors: self.errors.clone(),
            sent: self.sent.clone(),
            reconnects: self.reconnects,
            reconnect_ms: self.reconnect_ms.clone(),
            e2ee: self.e2ee_done.clone(),
            downlink_dropped: self.downlink_dropped,
            active_speakers: self.speakers.clone(),
            received_datagrams: self.received_datagrams,
            transport: self.transport_used.map(|t| t.as_str().to_owned()),
            media_candidates: self.media_candidates.clone(),
            turn_urls: self.turn_urls.clone(),
            received_kbps: (!self.receiving_for.is_zero()).then(|| {
                self.received_bytes as f64 * 8.0 / self.receiving_for.as_secs_f64() / 1000.0
            }),
        }
    }

    async fn connect(&self) -> Result<Ws, BotError> {
        let connector = Some(crate::tls::websocket_connector());
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            &self.link.ws_url,
            None,
            false,
            connector,
        )
        .await
        .map_err(|e| BotError::Connect {
            url: self.link.ws_url.clone(),
            reason: e.to_string(),
        })?;
        Ok(ws)
    }

    async fn session(&mut self, first: bool) -> Result<SessionEnd, BotError> {
        let mut ws = match self.connect().await {
            Ok(ws) => ws,
            Err(e) if !first && Instant::now() < self.deadline + RECONNECT_WINDOW => {
                return Ok(SessionEnd::Lost(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        send(
            &mut ws,
            &ClientMessage::Hello {
                meeting: self.link.meeting.clone(),
                name: self.options.name.clone(),
                host_secret: self.link.hello_host_secret(),
                passcode: self.link.passcode.clone(),
                invite: self.link.hello_invite(),
                device_id: Some(self.device_id.clone()),
                client_version: concat!("conclave-bot/", env!("CARGO_PKG_VERSION")).into(),
            },
        )
        .await?;
        let welcome = wait_welcome(&mut ws, self.deadline).await?;
        let ServerMessage::Welcome {
            participant_id,
            participants,
            lobby,
            ice_servers,
            ..
        } = &welcome
        else {
            return Err(BotError::Signaling("expected a welcome".into()));
        };
        let participant_id = participant_id.0;
        self.participant_id = Some(participant_id);
        self.turn_urls = ice_servers.iter().flat_map(|s| s.urls.clone()).collect();
        info!(name = %self.options.name, participant = participant_id, "joined");
        let mut secrets = self.link.secrets()?;
        secrets.device = Some(self.device_key.clone());
        let group =
            GroupSession::from_welcome(&self.options.name, &welcome, secrets, self.now_ms())
                .map_err(|e| BotError::Media(format!("cannot start E2EE: {e}")))?;
        let mut session = self.open_media(group, ice_servers).await?;
        for other in participants {
            session.names.insert(other.id.0, other.name.clone());
            if self.options.promote.contains(&other.name) && session.group.holds_host_link() {
                self.set_cohost(&mut ws, &mut session, other.id, true)
                    .await?;
            }
        }
        self.admit_waiting(&mut ws, &mut session, lobby).await?;
        flush_group(&mut ws, &mut session.group).await?;
        let offer = {
            let mut change = session.rtc.sdp_api();
            session.audio_mid =
                change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let simulcast = self.options.simulcast.then(|| {
                let mut layers = Simulcast::new();
                for (rid, _) in SIMULCAST_LAYERS {
                    layers.add_send_layer(SimulcastLayer::new(rid));
                }
                layers
            });
            session.video_mid =
                change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            let (offer, pending) = change
                .apply()
                .ok_or_else(|| BotError::Media("no offer to make".into()))?;
            session.pending = Some(pending);
            offer
        };
        send(
            &mut ws,
            &ClientMessage::Offer {
                sdp: offer.to_sdp_string(),
                sources: [
                    (session.audio_mid, TrackSource::Microphone),
                    (session.video_mid, TrackSource::Camera),
                ]
                .into_iter()
                .map(|(mid, source)| (mid.to_string(), source))
                .collect(),
            },
        )
        .await?;
        if let Some(max_kbps) = self.options.max_receive_kbps {
            send(
                &mut ws,
                &ClientMessage::VideoLayout {
                    tiles: Vec::new(),
                    max_kbps: Some(max_kbps),
                },
            )
            .await?;
        }
        let end = self.drive(&mut ws, &mut session).await;
        self.downlink_dropped += session.downlink.as_ref().map_or(0, Downlink::dropped);
        if let Some(connected) = session.connected_at {
            self.received_bytes += session.received_bytes;
            self.received_datagrams += session.received_datagrams;
            self.receiving_for += connected.elapsed();
        }
        let finished = session.group.report();
        let done = &mut self.e2ee_done;
        done.epoch = finished.epoch;
        done.security_code = finished.security_code;
        done.decrypted += finished.decrypted;
        done.decrypt_failures += finished.decrypt_failures;
        done.undecryptable_before_join += finished.undecryptable_before_join;
        done.commits_made += finished.commits_made;
        done.alarms.extend(finished.alarms);
        end
    }

    async fn open_media(
        &self,
        group: GroupSession,
        ice_servers: &[proto::IceServer],
    ) -> Result<Session, BotError> {
        let local_ip = local_ip_towards(&self.link.host).await;
        let transport = self.options.transport;
        let link = MediaLink::open(transport, local_ip, ice_servers)
            .await
            .map_err(|e| BotError::Media(format!("cannot open {transport} media: {e}")))?;
        let mut extensions = ExtensionMap::standard();
        extensions.set(ABS_CAPTURE_TIME_EXT_ID, Extension::AbsoluteCaptureTime);
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_extension_map(extensions)
            .build(Instant::now());
        rtc.add_local_candidate(link.candidate().map_err(BotError::Media)?);
        Ok(Session {
            rtc,
            link,
            pending: None,
            audio_mid: Mid::from("a"),
            video_mid: Mid::from("v"),
            tracks: HashMap::new(),
            names: HashMap::new(),
            connected_at: None,
            group,
            held: std::collections::VecDeque::new(),
            last_keyframe_request: None,
            audio_sent: 0,
            video_sent: 0,
            clip_start: 0,
            keyframe_requested: false,
            paused_layers: std::collections::HashSet::new(),
            received_bytes: 0,
            received_datagrams: 0,
            downlink: self
                .options
                .downlink
                .filter(|shape| !shape.is_clear())
                .map(|shape| Downlink::new(shape, self.started, rand::random())),
            downlink_due: None,
            speaking: self.options.speaking,
        })
    }

    async fn drive(&mut self, ws: &mut Ws, s: &mut Session) -> Result<SessionEnd, BotError> {
        let mut buf = vec![0u8; 2048];
        loop {
            let rtc_timeout = self.poll_rtc(s).await?;
            let now = Instant::now();
            if now >= self.deadline {
                let _ = send(ws, &ClientMessage::Leave).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ok(SessionEnd::Done);
            }
            let mut wake = rtc_timeout.min(self.deadline).min(now + GROUP_TICK);
            if let Some(due) = s.downlink_due {
                wake = wake.min(due);
            }
            if let Some(start) = s.connected_at {
                wake = wake
                    .min(start + clip::AUDIO_FRAME_INTERVAL * s.audio_sent as u32)
                    .min(start + clip::VIDEO_FRAME_INTERVAL * s.video_sent as u32);
            }
            tokio::select! {
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(end) = self.on_signal(ws, s, text.as_str()).await? {
                            return Ok(end);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!("closed {}: {}", u16::from(f.code), f.reason)).unwrap_or_else(|| "closed".into());
                        return Ok(SessionEnd::Lost(why));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ok(SessionEnd::Lost(e.to_string())),
                    None => return Ok(SessionEnd::Lost("connection closed".into())),
                },
                received = s.link.recv(&mut buf) => {
                    let (source, n) = received.map_err(|e| BotError::Media(e.to_string()))?;
                    match &mut s.downlink {
                        Some(link) => {
                            link.push(Instant::now(), Datagram { source, data: buf[..n].to_vec() });
                            deliver_downlink(s);
                        }
                        None => receive_datagram(s, source, &buf[..n]),
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    deliver_downlink(s);
                    let now = Instant::now();
                    self.demote_due(ws, s, now).await?;
                    s.group.tick(self.now_ms());
                    flush_group(ws, &mut s.group).await?;
                    self.errors.extend(s.group.take_errors());
                    self.retry_held(s);
                    self.send_due_media(s, now);
                    if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                        return Err(BotError::Media(e.to_string()));
                    }
                }
            }
        }
    }

    /// Sends what str0m wants sent and handles its events; returns when it next wants time.
    async fn poll_rtc(&mut self, s: &mut Session) -> Result<Instant, BotError> {
        loop {
            match s
                .rtc
                .poll_output()
                .map_err(|e| BotError::Media(e.to_string()))?
            {
                Output::Timeout(t) => {
                    s.link.flush().await;
                    return Ok(t);
                }
                Output::Transmit(t) => s.link.send(t.destination, &t.contents).await,
                Output::Event(event) => self.on_media_event(s, event)?,
            }
        }
    }

    fn on_media_event(&mut self, s: &mut Session, event: Event) -> Result<(), BotError> {
        match event {
            Event::Connected => {
                self.transport_used = Some(s.link.transport());
                info!(name = %self.options.name, "media connected");
                s.connected_at = Some(Instant::now());
                if let Some(lost) = self.lost_at.take() {
                    self.reconnect_ms.push(lost.elapsed().as_millis() as u64);
                }
            }
            Event::KeyframeRequest(request) if request.mid == s.video_mid => {
                s.keyframe_requested = true;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err(BotError::Media("ICE disconnected".into()));
            }
            Event::MediaData(data) => {
                let Some(&(from, kind)) = s.tracks.get(&data.mid) else {
                    self.errors
                        .push(format!("media on unannounced m-line {}", data.mid));
                    return Ok(());
                };
                let frame = HeldFrame {
                    arrived: Instant::now(),
                    from,
                    kind,
                    rtp_time: data.time.numer(),
                    capture: data.ext_vals.abs_capture_time.map(|t| t.capture_time),
                    data: data.data,
                };
                self.open_frame(s, frame);
            }
            _ => {}
        }
        Ok(())
    }

    /// Decrypts a received frame and checks it; holds it if its keys are still on the way.
    fn open_frame(&mut self, s: &mut Session, frame: HeldFrame) {
        let media_kind = match frame.kind {
            TrackKind::Audio => e2ee::MediaKind::Opus,
            TrackKind::Video => e2ee::MediaKind::Vp8,
        };
        let opened = match s.group.decrypt(media_kind, &frame.data, self.now_ms()) {
            Ok(opened) => Some(opened),
            // Not in the group yet, or keys from before our join: not for us to read.
            Err(Unopened::NotForUs) => return,
            Err(Unopened::NotYet(_)) if frame.arrived.elapsed() < HOLD_FOR_KEYS => {
                if s.held.len() < MAX_HELD_FRAMES {
                    s.held.push_back(frame);
                }
                return;
            }
            Err(Unopened::NotYet(e)) | Err(Unopened::Failed(e)) => {
                if matches!(
                    e,
                    e2ee::E2eeError::UnknownKid(_) | e2ee::E2eeError::WrongEpoch { .. }
                ) {
                    s.group.count_failure();
                }
                debug!("frame from {} did not decrypt: {e}", frame.from);
                None
            }
        };
        let (from, kind, started) = (frame.from, frame.kind, self.started);
        let name = s
            .names
            .get(&from)
            .cloned()
            .unwrap_or_else(|| format!("p{from}"));
        let receiver = self
            .receivers
            .entry((from, kind))
            .or_insert_with(|| TrackReceiver::new(name, from, kind, started));
        match opened {
            // The sender named by the key that opened the frame must be the participant the
            // server says publishes this track.
            Some(opened) if opened.sender_participant_id == from.to_string() => {
                let check = receiver.check(
                    frame.arrived,
                    frame.rtp_time,
                    &opened.plaintext,
                    frame.capture,
                );
                if check == FrameCheck::NeedsKeyframe {
                    request_keyframe(s, from);
                }
            }
            Some(opened) => {
                receiver.on_unreadable();
                self.errors.push(format!(
                    "a frame on {from}'s track was sent by {} ({})",
                    opened.sender_name, opened.sender_participant_id
                ));
            }
            None => receiver.on_unreadable(),
        }
    }

    /// Tries held frames again after the group changed (or drops them once too old).
    fn retry_held(&mut self, s: &mut Session) {
        for frame in std::mem::take(&mut s.held) {
            self.open_frame(s, frame);
        }
    }

    fn send_due_media(&mut self, s: &mut Session, now: Instant) {
        let Some(start) = s.connected_at else {
            return;
        };
        while start + clip::AUDIO_FRAME_INTERVAL * s.audio_sent as u32 <= now {
            let audio = clip::audio();
            let index = s.audio_sent % audio.frames.len() as u64;
            let time = MediaTime::new(
                s.audio_sent * clip::AUDIO_TICKS_PER_FRAME,
                Frequency::FORTY_EIGHT_KHZ,
            );
            let dtx_skip = !s.speaking && !s.audio_sent.is_multiple_of(SILENT_AUDIO_EVERY);
            if !dtx_skip
                && send_sealed(
                    s,
                    TrackKind::Audio,
                    None,
                    time,
                    &audio.frames[index as usize],
                )
            {
                self.sent.audio += 1;
            }
            s.audio_sent += 1;
        }
        while start + clip::VIDEO_FRAME_INTERVAL * s.video_sent as u32 <= now {
            if std::mem::take(&mut s.keyframe_requested) {
                s.clip_start = s.video_sent;
            }
            let time = MediaTime::new(
                s.video_sent * clip::VIDEO_TICKS_PER_FRAME,
                Frequency::NINETY_KHZ,
            );
            let position = s.video_sent - s.clip_start;
            // Every layer plays its own clip from the same position, so that a receiver
            // switched between simulcast layers finds its place by the keyframe.
            let single = [(None, self.options.video_kbps)];
            let simulcast = SIMULCAST_LAYERS.map(|(rid, kbps)| (Some(rid), kbps));
            let layers: &[(Option<&str>, u32)] = if self.options.simulcast {
                &simulcast
            } else {
                &single
            };
            let mut sent = false;
            for &(rid, kbps) in layers {
                if rid.is_some_and(|rid| s.paused_layers.contains(rid)) {
                    continue;
                }
                let clip = clip::video(kbps);
                let frame = &clip.frames[(position % clip.frames.len() as u64) as usize];
                sent |= send_sealed(s, TrackKind::Video, rid, time, frame);
            }
            if sent {
                self.sent.video += 1;
            }
            s.video_sent += 1;
        }
    }

    /// Makes `participant` a co-host (or takes it back): the server's role, for its powers
    /// there, and the group's host set, for admissions members accept.
    async fn set_cohost(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        participant: proto::ParticipantId,
        cohost: bool,
    ) -> Result<(), BotError> {
        info!(name = %self.options.name, participant = participant.0, cohost, "changing co-host");
        let role = if cohost {
            proto::Role::CoHost
        } else {
            proto::Role::Guest
        };
        send(
            ws,
            &ClientMessage::SetRole {
                participant_id: participant,
                role,
            },
        )
        .await?;
        s.group.set_cohost(participant.0, cohost);
        if cohost {
            self.promoted.push((participant, Instant::now()));
        }
        Ok(())
    }

    /// `--demote-after`: takes back promotions that are due.
    async fn demote_due(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        now: Instant,
    ) -> Result<(), BotError> {
        let Some(after) = self.options.demote_after else {
            return Ok(());
        };
        let due: Vec<proto::ParticipantId> = self
            .promoted
            .iter()
            .filter(|(_, at)| now.duration_since(*at) >= after)
            .map(|(p, _)| *p)
            .collect();
        self.promoted
            .retain(|(_, at)| now.duration_since(*at) < after);
        for participant in due {
            self.set_cohost(ws, s, participant, false).await?;
        }
        Ok(())
    }

    /// With `--admit-all`, a host bot lets in everyone who waits.
    async fn admit_waiting(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        waiting: &[proto::LobbyEntry],
    ) -> Result<(), BotError> {
        if !self.options.admit_all {
            return Ok(());
        }
        for entry in waiting {
            if !self.admitting.insert(entry.id.0) {
                continue;
            }
            info!(name = %self.options.name, admitted = %entry.name, "admitting from the lobby");
            // Our own decision: only for it does our client sign the MLS admission.
            s.group.admission_requested(entry.id.0);
            send(
                ws,
                &ClientMessage::Admit {
                    participant_id: entry.id,
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn on_signal(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        text: &str,
    ) -> Result<Option<SessionEnd>, BotError> {
        let msg = match proto::parse_server_message(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.errors.push(format!("unreadable server message: {e}"));
                return Ok(None);
            }
        };
        s.group.on_server_message(&msg, self.now_ms());
        s.group.tick(self.now_ms());
        flush_group(ws, &mut s.group).await?;
        self.errors.extend(s.group.take_errors());
        self.retry_held(s);
        match msg {
            ServerMessage::Answer { sdp } => {
                if self.media_candidates.is_empty() {
                    self.media_candidates = candidates_of(&sdp);
                }
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| BotError::Signaling(format!("bad answer: {e}")))?;
                let pending = s
                    .pending
                    .take()
                    .ok_or_else(|| BotError::Signaling("answer without an offer".into()))?;
                s.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| BotError::Signaling(format!("answer refused: {e}")))?;
            }
            ServerMessage::Offer { sdp, tracks } => {
                let offer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| BotError::Signaling(format!("bad offer: {e}")))?;
                let answer = s
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| BotError::Signaling(format!("offer refused: {e}")))?;
                self.update_tracks(s, tracks);
                send(
                    ws,
                    &ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    },
                )
                .await?;
            }
            ServerMessage::PublishLayers { mid, active }
                if Mid::from(mid.as_str()) == s.video_mid =>
            {
                s.paused_layers = SIMULCAST_LAYERS
                    .iter()
                    .map(|(rid, _)| *rid)
                    .filter(|rid| !active.iter().any(|a| a == rid))
                    .map(String::from)
                    .collect();
                // A resumed encoder starts with a keyframe.
                s.keyframe_requested = true;
            }
            ServerMessage::ParticipantJoined { participant, .. } => {
                if self.options.promote.contains(&participant.name) && s.group.holds_host_link() {
                    self.set_cohost(ws, s, participant.id, true).await?;
                }
                s.names.insert(participant.id.0, participant.name);
            }
            ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            } => {
                debug!(participant = participant_id.0, ?reason, "participant left");
                if reason == LeaveReason::ServerShutdown {
                    return Ok(Some(SessionEnd::Lost("server shutting down".into())));
                }
            }
            ServerMessage::Error { code, reason } => {
                self.errors
                    .push(format!("server error {}: {reason}", code.as_str()));
            }
            ServerMessage::ServerShutdown => {
                return Ok(Some(SessionEnd::Lost("server shutting down".into())));
            }
            ServerMessage::LobbyChanged { waiting } => self.admit_waiting(ws, s, &waiting).await?,
            ServerMessage::ActiveSpeakers { speakers } => {
                self.speakers = speakers
                    .iter()
                    .map(|p| {
                        s.names
                            .get(&p.0)
                            .cloned()
                            .unwrap_or_else(|| format!("#{}", p.0))
                    })
                    .collect();
            }
            ServerMessage::Removed { reason } | ServerMessage::Denied { reason } => {
                self.errors
                    .push(format!("removed from the meeting: {reason}"));
                return Ok(Some(SessionEnd::Done));
            }
            ServerMessage::MeetingEnded => {
                self.errors.push("the host ended the meeting".into());
                return Ok(Some(SessionEnd::Done));
            }
            ServerMessage::Lobby { .. } => {
                // Sent back to the lobby: this session's keys and media are over.
                self.errors
                    .push("a host sent this bot back to the lobby".into());
                return Ok(Some(SessionEnd::Done));
            }
            ServerMessage::Welcome { .. }
            | ServerMessage::Pong
            | ServerMessage::MlsCreateGroup { .. }
            | ServerMessage::MlsKeyPackage { .. }
            | ServerMessage::MlsCommit { .. }
            | ServerMessage::MlsCommitAccepted { .. }
            | ServerMessage::MlsWelcome { .. }
            | ServerMessage::MlsMessage { .. } => {}
            _ => {}
        }
        Ok(None)
    }

    fn update_tracks(&mut self, s: &mut Session, tracks: Vec<TrackInfo>) {
        let mut now_present = HashMap::new();
        for t in tracks {
            now_present.insert(Mid::from(t.mid.as_str()), (t.participant_id.0, t.kind));
        }
        for (mid, key) in &s.tracks {
            if !now_present.contains_key(mid) {
                if let Some(receiver) = self.receivers.get_mut(key) {
                    receiver.removed = true;
                }
            }
        }
        for key in now_present.values() {
            if let Some(receiver) = self.receivers.get_mut(key) {
                receiver.removed = false;
            }
        }
        s.tracks = now_present;
    }
}

/// Encrypts a frame for the group and writes it on our track of that kind. False if nothing
/// was sent: not in the group yet (never a plaintext fallback), or no negotiated codec.
fn send_sealed(
    s: &mut Session,
    kind: TrackKind,
    rid: Option<&str>,
    time: MediaTime,
    frame: &[u8],
) -> bool {
    let (mid, codec, media_kind) = match kind {
        TrackKind::Audio => (s.audio_mid, Codec::Opus, e2ee::MediaKind::Opus),
        TrackKind::Video => (s.video_mid, Codec::Vp8, e2ee::MediaKind::Vp8),
    };
    let Some(sealed) = s.group.encrypt(media_kind, frame) else {
        return false;
    };
    let Some(writer) = s.rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return false;
    };
    let capture = AbsCaptureTime {
        capture_time: SystemTime::now(),
        clock_offset: None,
    };
    let mut writer = writer.abs_capture_time(capture);
    if let Some(rid) = rid {
        writer = writer.rid(Rid::from(rid));
    }
    // RFC 6464 audio level, in the clear beside the encrypted frame: the SFU finds active
    // speakers from it. A speaking bot talks at -30 dBov, a silent one sends silence.
    let writer = match kind {
        TrackKind::Audio if s.speaking => writer.audio_level(-30, true),
        TrackKind::Audio => writer.audio_level(-127, false),
        TrackKind::Video => writer,
    };
    writer.write(pt, Instant::now(), time, sealed).is_ok()
}

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<(), BotError> {
    ws.send(Message::Text(proto::encode(msg).into()))
        .await
        .map_err(|e| BotError::Signaling(e.to_string()))
}

/// Waits for the welcome, through the lobby if the bot is not pre-admitted (until `deadline`).
async fn wait_welcome(ws: &mut Ws, deadline: Instant) -> Result<ServerMessage, BotError> {
    let wait = async {
        while let Some(incoming) = ws.next().await {
            let text = match incoming {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    return Err(BotError::Signaling(format!(
                        "closed before welcome: {frame:?}"
                    )))
                }
                Ok(_) => continue,
                Err(e) => return Err(BotError::Signaling(e.to_string())),
            };
            match proto::parse_server_message(text.as_str()) {
                Ok(welcome @ ServerMessage::Welcome { .. }) => return Ok(welcome),
                Ok(ServerMessage::Lobby { .. }) => {
                    info!("waiting in the lobby for a host");
                }
                Ok(ServerMessage::Denied { reason } | ServerMessage::Removed { reason }) => {
                    return Err(BotError::Refused {
                        code: "denied".into(),
                        reason,
                    })
                }
                Ok(ServerMessage::Error { code, reason }) => {
                    return Err(BotError::Refused {
                        code: code.as_str().into(),
                        reason,
                    })
                }
                Ok(_) => {}
                Err(e) => return Err(BotError::Signaling(e.to_string())),
            }
        }
        Err(BotError::Signaling("closed before welcome".into()))
    };
    // A welcome comes at once unless a host must admit the bot: then it waits its whole run.
    let limit = WELCOME_TIMEOUT.max(deadline.saturating_duration_since(Instant::now()));
    tokio::time::timeout(limit, wait).await.map_err(|_| {
        BotError::Signaling("no host admitted this bot from the lobby in time".into())
    })?
}

/// Hands a datagram to the WebRTC stack.
fn receive_datagram(s: &mut Session, source: SocketAddr, bytes: &[u8]) {
    s.received_bytes += bytes.len() as u64;
    s.received_datagrams += 1;
    if let Ok(contents) = bytes.try_into() {
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: s.link.protocol(),
                source,
                destination: s.link.local(),
                contents,
            },
        );
        if let Err(e) = s.rtc.handle_input(input) {
            debug!("media input refused: {e}");
        }
    }
}

/// Passes on what the emulated downlink delivers by now.
fn deliver_downlink(s: &mut Session) {
    let Some(link) = &mut s.downlink else {
        return;
    };
    let mut delivered = Vec::new();
    s.downlink_due = link.deliver(Instant::now(), &mut delivered);
    for datagram in delivered {
        receive_datagram(s, datagram.source, &datagram.data);
    }
}

/// Asks a publisher (through the SFU) for a keyframe on its video track, at most every 300 ms.
fn request_keyframe(s: &mut Session, publisher: u64) {
    let now = Instant::now();
    if s.last_keyframe_request
        .is_some_and(|at| now.duration_since(at) < Duration::from_millis(300))
    {
        return;
    }
    let mid = s
        .tracks
        .iter()
        .find(|(_, (p, k))| *p == publisher && *k == TrackKind::Video)
        .map(|(mid, _)| *mid);
    if let Some(mut writer) = mid.and_then(|mid| s.rtc.writer(mid)) {
        if writer
            .request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
            .is_ok()
        {
            s.last_keyframe_request = Some(now);
        }
    }
}

/// Sends whatever MLS messages the group state machine has queued.
async fn flush_group(ws: &mut Ws, group: &mut GroupSession) -> Result<(), BotError> {
    while let Some(msg) = group.poll_message() {
        send(ws, &msg).await?;
    }
    Ok(())
}

/// The local address media should leave from to reach `host`: loopback for a loopback
/// server, otherwise whatever the routing table picks.
async fn local_ip_towards(host: &str) -> IpAddr {
    let target = tokio::net::lookup_host((host, 9))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next());
    match target {
        Some(addr) if addr.ip().is_loopback() => addr.ip(),
        Some(addr) => {
            let probe = UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).await;
            match probe {
                Ok(probe) if probe.connect(addr).await.is_ok() => probe
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or(Ipv4Addr::LOCALHOST.into()),
                _ => Ipv4Addr::LOCALHOST.into(),
            }
        }
        None => Ipv4Addr::LOCALHOST.into(),
    }
}

/// The candidates of an SDP as `"<transport> <address>"` (`"tcp 203.0.113.7:443"`): where the
/// SFU says its media goes, for the report (and `conclave doctor`).
fn candidates_of(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|line| line.trim().strip_prefix("a=candidate:"))
        .filter_map(|candidate| {
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            let (transport, ip, port) = (fields.get(2)?, fields.get(4)?, fields.get(5)?);
            let addr = std::net::SocketAddr::new(ip.parse().ok()?, port.parse().ok()?);
            Some(format!("{} {addr}", transport.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::candidates_of;

    #[test]
    fn the_report_names_each_candidate_by_transport_and_address() {
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2130706175 203.0.113.7 10000 typ host\r\n\
            a=candidate:2 1 TCP 1694498815 203.0.113.7 443 typ host tcptype passive\r\n\
            a=candidate:3 1 udp 1 2001:db8::1 10000 typ host\r\n\
            a=candidate:4 1 udp 1 not-an-ip 10000 typ host\r\n\
            a=candidate:5 1\r\n";
        assert_eq!(
            candidates_of(sdp),
            [
                "udp 203.0.113.7:10000",
                "tcp 203.0.113.7:443",
                "udp [2001:db8::1]:10000"
            ]
        );
    }
}
