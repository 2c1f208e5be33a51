//! One WebSocket signaling session: from `hello` to goodbye.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use proto::{ClientMessage, ErrorCode, LeaveReason, MeetingId, ParticipantId, Role, ServerMessage};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::hub::{Outbound, OutboundTx};
use crate::media::MediaError;
use crate::AppContext;

const MAX_NAME_CHARS: usize = 64;

struct Joined {
    id: ParticipantId,
    meeting: MeetingId,
}

struct Session {
    ctx: Arc<AppContext>,
    tx: OutboundTx,
    joined: Option<Joined>,
    left: bool,
}

/// Runs a session until the peer leaves, its connection drops or the server shuts down.
pub async fn run(socket: WebSocket, ctx: Arc<AppContext>) {
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
        match (msg, self.joined.is_some()) {
            (
                ClientMessage::Hello {
                    meeting,
                    name,
                    host_secret,
                    ..
                },
                false,
            ) => self.hello(meeting, name, host_secret).await,
            (ClientMessage::Hello { .. }, true) => self.reject(
                ErrorCode::AlreadyJoined,
                "this session has already joined".into(),
            ),
            (ClientMessage::Ping, _) => self.send(ServerMessage::Pong),
            (msg, false) => self.reject(
                ErrorCode::HelloRequired,
                format!("{:?} before hello: send hello first", msg.kind()),
            ),
            (ClientMessage::Offer { sdp, .. }, true) => self.offer(sdp).await,
            (ClientMessage::Answer { sdp }, true) => self.answer(sdp).await,
            (ClientMessage::MlsKeyPackage { key_package }, true) => self.mls(|hub, id| {
                let bytes = decode(&key_package)?;
                hub.mls_key_package(id, bytes).map_err(into_rejection)
            }),
            (ClientMessage::MlsCommit { commit, welcome }, true) => self.mls(|hub, id| {
                let commit = decode(&commit)?;
                let welcome = welcome.as_deref().map(decode).transpose()?;
                hub.mls_commit(id, commit, welcome)
                    .map(|_| ())
                    .map_err(into_rejection)
            }),
            (ClientMessage::MlsMessage { data, .. }, true) => self.mls(|hub, id| {
                let data = decode(&data)?;
                hub.mls_message(id, data).map_err(into_rejection)
            }),
            (ClientMessage::Leave, true) => {
                self.left = true;
                let _ = self.tx.send(Outbound::Close {
                    code: 1000,
                    reason: "left".into(),
                });
            }
            (other, true) => self.reject(
                ErrorCode::Forbidden,
                format!("{:?} is not available yet", other.kind()),
            ),
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

    async fn hello(&mut self, meeting: MeetingId, name: String, host_secret: Option<String>) {
        let name = name.trim().to_owned();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return self.reject(
                ErrorCode::InvalidMessage,
                format!("a name has 1 to {MAX_NAME_CHARS} printable characters"),
            );
        }
        let record = match self.ctx.storage.meeting(&meeting).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return self.reject_and_close(
                    ErrorCode::UnknownMeeting,
                    "no such meeting".into(),
                    proto::CLOSE_POLICY,
                )
            }
            Err(e) => {
                warn!("storage error: {e}");
                return self.reject(ErrorCode::Internal, "storage unavailable".into());
            }
        };
        if record.ended_at.is_some() {
            return self.reject_and_close(
                ErrorCode::MeetingEnded,
                "the meeting has ended".into(),
                proto::CLOSE_POLICY,
            );
        }
        let role = match host_secret {
            None => Role::Participant,
            Some(secret)
                if Sha256::digest(secret.as_bytes()).as_slice()
                    == record.host_secret_sha256.as_slice() =>
            {
                Role::Host
            }
            Some(_) => {
                return self.reject_and_close(
                    ErrorCode::Forbidden,
                    "the host secret does not match".into(),
                    proto::CLOSE_POLICY,
                )
            }
        };
        let joined = self
            .ctx
            .hub
            .join(&meeting, name.clone(), role, self.tx.clone());
        if let Err(e) = self.ctx.media.add(joined.room, joined.id).await {
            self.ctx.hub.leave(joined.id, LeaveReason::Disconnected);
            return self.reject(ErrorCode::Internal, format!("media unavailable: {e}"));
        }
        self.ctx
            .metrics
            .participants_joined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(participant = joined.id.0, meeting = %meeting, ?role, "joined");
        self.joined = Some(Joined {
            id: joined.id,
            meeting,
        });
    }

    async fn offer(&mut self, sdp: String) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if let Err(e) = self.ctx.media.offer(id, sdp).await {
            self.media_refused(e);
        }
    }

    async fn answer(&mut self, sdp: String) {
        let Some(id) = self.joined.as_ref().map(|j| j.id) else {
            return;
        };
        if let Err(e) = self.ctx.media.answer(id, sdp).await {
            self.media_refused(e);
        }
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
