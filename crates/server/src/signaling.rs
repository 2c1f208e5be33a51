//! One WebSocket signaling session: from `hello` to goodbye.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use proto::{
    ClientMessage, Entry, ErrorCode, LeaveReason, MeetingId, ParticipantId, Role, ServerMessage,
    TrackSource,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::gate;
use crate::hub::{Deferred, Outbound, OutboundTx};
use crate::media::MediaError;
use crate::policy::{Knock, MeetingPolicy, Outcome};
use crate::storage::Ban;
use crate::AppContext;

const MAX_NAME_CHARS: usize = 64;
const MAX_DEVICE_ID_BYTES: usize = 128;

/// The fields of a `hello`.
struct Hello {
    meeting: MeetingId,
    name: String,
    host_secret: Option<String>,
    passcode: Option<String>,
    invite: Option<String>,
    device_id: Option<String>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Joined {
    id: ParticipantId,
    meeting: MeetingId,
}

struct Session {
    ctx: Arc<AppContext>,
    tx: OutboundTx,
    joined: Option<Joined>,
    left: bool,
    /// Where the WebSocket comes from: the gate rate-limits and audits by it.
    peer: std::net::SocketAddr,
    /// The account logged in on the upgrade request (login cookie), if any.
    user: Option<crate::accounts::User>,
}

/// Runs a session until the peer leaves, its connection drops or the server shuts down.
pub async fn run(
    socket: WebSocket,
    ctx: Arc<AppContext>,
    peer: std::net::SocketAddr,
    user: Option<crate::accounts::User>,
) {
    ctx.metrics
        .sessions_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut shutdown = ctx.shutdown.clone();
    let mut session = Session {
        ctx,
        tx,
        joined: None,
        left: false,
        peer,
        user,
    };
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => session.on_text(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => session.reject(
                    ErrorCode::BinaryNotSupported,
                    "binary messages are not used; send JSON text".into(),
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Includes frames over the transport limit: tell the peer why, if it still listens.
                    session.ctx.metrics.count_rejected(ErrorCode::TooLarge);
                    warn!("websocket error: {e}");
                    let _ = sink.send(close(proto::CLOSE_TOO_LARGE, "message too large or malformed frame")).await;
                    break;
                }
            },
            outbound = rx.recv() => match outbound {
                Some(Outbound::Message(msg)) => {
                    if sink.send(Message::Text(proto::encode(&msg).into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    let _ = sink.send(close(code, &reason)).await;
                    break;
                }
                Some(Outbound::Enter { room, blocked, mut welcome }) => {
                    if let (ServerMessage::Welcome { participant_id, ice_servers, .. }, Some(turn)) =
                        (&mut welcome, &session.ctx.turn)
                    {
                        ice_servers.extend(turn.ice_servers(&participant_id.0.to_string()));
                    }
                    if !session.enter_media(room, blocked).await {
                        break;
                    }
                    if sink.send(Message::Text(proto::encode(&welcome).into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Exit) => session.exit_media().await,
                None => break,
            },
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Text(proto::encode(&ServerMessage::ServerShutdown).into())).await;
                let _ = sink.send(close(proto::CLOSE_GOING_AWAY, "server shutting down")).await;
                break;
            }
        }
    }
    // Deliver what is already queued (e.g. an error before a close) on a best-effort basis.
    session.end().await;
}

fn decode(text: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
    proto::b64_decode(text).ok_or((ErrorCode::MalformedMls, "not base64".into()))
}

fn into_rejection(error: crate::delivery::DeliveryError) -> (ErrorCode, String) {
    (error.code(), error.to_string())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

impl Session {
    fn send(&self, msg: ServerMessage) {
        let _ = self.tx.send(Outbound::Message(msg));
    }

    /// Refuses a message: the sender is told why, the refusal is logged and counted, and
    /// nothing else changes.
    fn reject(&self, code: ErrorCode, reason: String) {
        self.ctx.metrics.count_rejected(code);
        let who = self.joined.as_ref().map(|j| j.id.0);
        warn!(participant = ?who, code = code.as_str(), "signaling message refused: {reason}");
        self.send(ServerMessage::Error { code, reason });
    }

    /// Refuses and ends the session.
    fn reject_and_close(&self, code: ErrorCode, reason: String, close_code: u16) {
        self.reject(code, reason.clone());
        let _ = self.tx.send(Outbound::Close {
            code: close_code,
            reason: code.as_str().into(),
        });
    }

    async fn on_text(&mut self, text: &str) {
        if self.left {
            return;
        }
        let msg = match proto::parse_client_message(text) {
            Ok(msg) => msg,
            Err(e @ proto::ProtoError::TooLarge(_)) => {
                return self.reject_and_close(e.code(), e.to_string(), proto::CLOSE_TOO_LARGE)
            }
            Err(e) => return self.reject(e.code(), e.to_string()),
        };
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return match msg {
                ClientMessage::Hello {
                    meeting,
                    name,
                    host_secret,
                    passcode,
                    invite,
                    device_id,
                    ..
                } => {
                    self.hello(Hello {
                        meeting,
                        name,
                        host_secret,
                        passcode,
                        invite,
                        device_id,
                    })
                    .await
                }
                ClientMessage::Ping => self.send(ServerMessage::Pong),
                msg => self.reject(
                    ErrorCode::HelloRequired,
                    format!("{:?} before hello: send hello first", msg.kind()),
                ),
            };
        };
        match msg {
            ClientMessage::Hello { .. } => self.reject(
                ErrorCode::AlreadyJoined,
                "this session has already joined".into(),
            ),
            ClientMessage::Ping => self.send(ServerMessage::Pong),
            ClientMessage::Offer { sdp, sources } => self.offer(sdp, sources).await,
            ClientMessage::Answer { sdp } => self.answer(sdp).await,
            ClientMessage::VideoLayout { tiles, max_kbps } => {
                self.video_layout(tiles, max_kbps).await
            }
            ClientMessage::MlsKeyPackage { key_package } => {
                let ctx = self.ctx.clone();
                self.mls(|hub, id| {
                    let bytes = decode(&key_package)?;
                    let stall = hub.mls_key_package(id, bytes).map_err(into_rejection)?;
                    if let Some(check) = stall {
                        // A silent group creator must not block E2EE: look again later.
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(
                                crate::hub::GROUP_HANDOVER_MS,
                            ))
                            .await;
                            ctx.hub.hand_over_stalled_group(&check);
                        });
                    }
                    Ok(())
                })
            }
            ClientMessage::MlsCommit { commit, welcome } => self.mls(|hub, id| {
                let commit = decode(&commit)?;
                let welcome = welcome.as_deref().map(decode).transpose()?;
                hub.mls_commit(id, commit, welcome)
                    .map(|_| ())
                    .map_err(into_rejection)
            }),
            ClientMessage::MlsMessage { data, purpose } => self.mls(|hub, id| {
                let data = decode(&data)?;
                hub.mls_message(id, data, purpose).map_err(into_rejection)
            }),
            ClientMessage::Admit { participant_id } => {
                self.act(|p| p.admit(id, participant_id)).await
            }
            ClientMessage::Deny { participant_id } => {
                self.act(|p| p.deny(id, participant_id)).await
            }
            ClientMessage::Remove { participant_id } => {
                self.act(|p| p.remove(id, participant_id)).await
            }
            ClientMessage::SendToLobby { participant_id } => {
                self.act(|p| p.send_to_lobby(id, participant_id)).await
            }
            ClientMessage::SetRole {
                participant_id,
                role,
            } => self.act(|p| p.set_role(id, participant_id, role)).await,
            ClientMessage::SetLocked { locked } => self.act(|p| p.set_locked(id, locked)).await,
            ClientMessage::Mute {
                participant_id,
                source,
            } => self.act(|p| p.mute(id, participant_id, source)).await,
            ClientMessage::SetMuted { source, muted } => {
                self.act(|p| p.set_muted(id, source, muted)).await
            }
            ClientMessage::SetPermissions { permissions } => {
                self.act(|p| p.set_permissions(id, permissions)).await
            }
            ClientMessage::SuspendAll => self.act(|p| p.suspend_all(id)).await,
            ClientMessage::ResumeAll => self.act(|p| p.resume_all(id)).await,
            ClientMessage::EndMeeting => self.act(|p| p.end(id)).await,
            ClientMessage::Leave => {
                self.left = true;
                let _ = self.tx.send(Outbound::Close {
                    code: 1000,
                    reason: "left".into(),
                });
            }
        }
    }

    /// A host action (or a participant's own mute): the policy checks the actor's role as the
    /// server knows it, the hub applies it, and storage and media follow.
    async fn act(&self, action: impl FnOnce(&mut MeetingPolicy) -> Outcome) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        match self.ctx.hub.act(id, action) {
            Ok(deferred) => self.carry_out(deferred).await,
            Err(refusal) => self.reject(refusal.code, refusal.reason),
        }
    }

    /// Storage and media effects of an action, in order.
    async fn carry_out(&self, deferred: Vec<Deferred>) {
        let Some(meeting) = self.joined.as_ref().map(|j| j.meeting.clone()) else {
            return;
        };
        let storage = &self.ctx.storage;
        for effect in deferred {
            let stored = match effect {
                Deferred::Block {
                    id,
                    source,
                    blocked,
                } => {
                    self.ctx.media.block(id, source, blocked).await;
                    Ok(())
                }
                Deferred::Audit(entry) => {
                    storage
                        .audit(
                            &meeting,
                            entry.event,
                            entry.actor.as_deref(),
                            entry.subject.as_deref(),
                            &entry.detail,
                        )
                        .await
                }
                Deferred::Ban(keys) => {
                    let ban = Ban {
                        name: Some(keys.name),
                        device_id: keys.device_id,
                        invitation_id: keys.invitation_id,
                        user_id: keys.user_id,
                    };
                    storage.add_ban(&meeting, &ban).await
                }
                Deferred::PersistState(state) => {
                    match storage.set_locked(&meeting, state.locked).await {
                        Ok(()) => storage.set_permissions(&meeting, &state.permissions).await,
                        Err(e) => Err(e),
                    }
                }
                Deferred::PersistEnded => storage.end_meeting(&meeting, unix_ms() / 1000).await,
            };
            if let Err(e) = stored {
                warn!(meeting = %meeting, "cannot store a meeting change: {e}");
            }
        }
    }

    /// Admitted: the participant's media session starts before its welcome goes out.
    async fn enter_media(&self, room: u64, blocked: Vec<TrackSource>) -> bool {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return false;
        };
        if let Err(e) = self.ctx.media.add(room, id).await {
            warn!(participant = id.0, "media unavailable: {e}");
            self.ctx.metrics.count_rejected(ErrorCode::Internal);
            return false;
        }
        for source in blocked {
            self.ctx.media.block(id, source, true).await;
        }
        self.ctx
            .metrics
            .participants_joined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(participant = id.0, "entered the meeting");
        true
    }

    async fn exit_media(&self) {
        if let Some(id) = self.joined.as_ref().map(|j| j.id) {
            self.ctx.media.remove(id).await;
        }
    }

    /// Tests only: the lying server fakes its listener's admission, and sends the listener
    /// into a meeting whose group a host-link holder just opened.
    #[cfg(feature = "insecure-test-hooks")]
    fn tell_test_lie(
        &mut self,
        lie: Option<std::sync::Arc<crate::test_lie::TestLie>>,
        host_link: bool,
        id: ParticipantId,
        meeting: &proto::MeetingId,
    ) {
        if let Some(lie) = lie {
            lie.after_knock(&self.ctx.hub, id);
        } else if let (Some(lie), true) = (self.ctx.test_lie.clone(), host_link) {
            lie.smuggle_into(
                self.ctx.storage.clone(),
                self.ctx.base_url.clone(),
                meeting.clone(),
            );
        }
    }

    /// Runs an MLS delivery-service action for this participant; refusals are answered.
    fn mls(
        &self,
        action: impl FnOnce(&crate::hub::Hub, ParticipantId) -> Result<(), (ErrorCode, String)>,
    ) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if let Err((code, reason)) = action(&self.ctx.hub, id) {
            self.reject(code, reason);
        }
    }

    async fn hello(&mut self, hello: Hello) {
        let name = hello.name.trim().to_owned();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return self.reject(
                ErrorCode::InvalidMessage,
                format!("a name has 1 to {MAX_NAME_CHARS} printable characters"),
            );
        }
        if hello.device_id.as_deref().is_some_and(|d| {
            d.is_empty() || d.len() > MAX_DEVICE_ID_BYTES || d.chars().any(char::is_control)
        }) {
            return self.reject(
                ErrorCode::InvalidMessage,
                format!("a device id has 1 to {MAX_DEVICE_ID_BYTES} printable bytes"),
            );
        }
        let knock = gate::Knock {
            peer: self.peer.ip(),
            meeting: &hello.meeting,
            host_secret: hello.host_secret.as_deref(),
            passcode: hello.passcode.as_deref(),
            invite: hello.invite.as_deref(),
            device_id: hello.device_id.as_deref(),
            user: self.user.as_ref(),
        };
        let pass = match self
            .ctx
            .gate
            .check(&self.ctx.storage, knock, unix_ms())
            .await
        {
            Ok(pass) => pass,
            Err(refusal) => {
                return self.reject_and_close(refusal.code, refusal.reason, proto::CLOSE_POLICY)
            }
        };
        let (role, pre_admitted) = match (&pass.invitation, pass.host) {
            (_, true) => (Role::Host, Some(Entry::HostLink)),
            (Some(invitation), false) => (
                Role::Participant,
                invitation.skip_lobby.then_some(Entry::Invitation),
            ),
            (None, false) => (Role::Guest, None),
        };
        #[cfg(feature = "insecure-test-hooks")]
        let lie = self
            .ctx
            .test_lie
            .clone()
            .filter(|lie| lie.is_listener(&name));
        #[cfg(feature = "insecure-test-hooks")]
        let (role, pre_admitted) = match &lie {
            Some(lie) => lie.claimed(role, pre_admitted),
            None => (role, pre_admitted),
        };
        let id = self.ctx.hub.next_id();
        let knock = Knock {
            id,
            name: name.clone(),
            role,
            pre_admitted,
            device_id: hello.device_id,
            invitation_id: pass.invitation.as_ref().map(|i| i.id.clone()),
            invitation_label: pass.invitation.as_ref().map(|i| i.label.clone()),
            user_id: self.user.as_ref().map(|u| u.id),
        };
        // Joined before the knock: the welcome of a pre-admitted knock is already queued.
        self.joined = Some(Joined {
            id,
            meeting: hello.meeting.clone(),
        });
        let stored = (pass.record.locked, pass.record.permissions);
        match self.ctx.hub.knock(
            &hello.meeting,
            stored,
            knock,
            pass.host_link,
            self.tx.clone(),
        ) {
            Ok(deferred) => {
                info!(participant = id.0, meeting = %hello.meeting, ?role, "knocked");
                self.carry_out(deferred).await;
                #[cfg(feature = "insecure-test-hooks")]
                self.tell_test_lie(lie, pass.host_link, id, &hello.meeting);
            }
            Err(refusal) => {
                if refusal.code == ErrorCode::Banned {
                    let _ = self
                        .ctx
                        .storage
                        .audit(&hello.meeting, "banned_refused", None, Some(&name), "")
                        .await;
                }
                self.joined = None;
                self.reject_and_close(refusal.code, refusal.reason, proto::CLOSE_POLICY);
            }
        }
    }

    /// Refuses media signaling from someone still in the lobby.
    fn require_member(&self, id: ParticipantId) -> bool {
        if self.ctx.hub.is_member(id) {
            return true;
        }
        self.reject(
            ErrorCode::NotPermitted,
            "media starts once a host admits you from the lobby".into(),
        );
        false
    }

    async fn offer(&mut self, sdp: String, sources: BTreeMap<String, TrackSource>) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if !self.require_member(id) {
            return;
        }
        let mut seen = BTreeSet::new();
        if sources.len() > 3 || !sources.values().all(|s| seen.insert(*s)) {
            return self.reject(
                ErrorCode::InvalidMessage,
                "sources: at most one microphone, one camera and one screen".into(),
            );
        }
        if let Err(e) = self.ctx.media.offer(id, sdp, sources).await {
            self.media_refused(e);
        }
    }

    async fn answer(&mut self, sdp: String) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if !self.require_member(id) {
            return;
        }
        if let Err(e) = self.ctx.media.answer(id, sdp).await {
            self.media_refused(e);
        }
    }

    async fn video_layout(&mut self, tiles: Vec<proto::VideoTile>, max_kbps: Option<u32>) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if !self.require_member(id) {
            return;
        }
        let tiles = tiles
            .into_iter()
            .map(|t| {
                let shown = t.visible && t.width > 0 && t.height > 0;
                (t.mid, shown.then_some(t.height))
            })
            .collect();
        let max_receive_bps = max_kbps.map(|k| u64::from(k) * 1000);
        self.ctx
            .media
            .video_layout(id, tiles, max_receive_bps)
            .await;
    }

    fn media_refused(&self, error: MediaError) {
        use sfu::SfuError;
        let code = match &error {
            MediaError::Sfu(SfuError::InvalidSdp(_) | SfuError::SdpRejected(_)) => {
                ErrorCode::InvalidSdp
            }
            MediaError::Sfu(SfuError::NoPendingOffer) => ErrorCode::NoPendingOffer,
            _ => ErrorCode::Internal,
        };
        self.reject(code, error.to_string());
    }

    async fn end(self) {
        if let Some(joined) = self.joined {
            let reason = if self.left {
                LeaveReason::Left
            } else {
                LeaveReason::Disconnected
            };
            if self.ctx.hub.leave(joined.id, reason) {
                info!(participant = joined.id.0, meeting = %joined.meeting, ?reason, "left");
            }
            self.ctx.media.remove(joined.id).await;
        }
    }
}
