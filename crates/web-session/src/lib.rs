//! The browser's side of a Conclave meeting: [`session::GroupSession`] (the same pure MLS
//! state machine the native bot runs) behind a small interface for the web app's E2EE worker.
//!
//! Nothing here is new cryptography or new protocol logic: server messages go in as the JSON
//! that crossed the WebSocket (parsed by `proto`), messages to send come out as JSON
//! (`proto::encode`), and media frames are sealed and opened by `e2ee` through the group
//! session. The worker that owns this object is the one that sees every encoded frame, so the
//! keys never leave it.
//!
//! [`Core`] is plain Rust (tested natively); [`wasm`] is the wasm-bindgen shell around it.

use std::collections::VecDeque;

use e2ee::MediaKind;
use proto::ServerMessage;
use serde_json::json;
use session::group::GroupEvent;
use session::{GroupSession, LinkSecrets, Unopened};

pub mod links;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// Why a `Core` could not be made or fed.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What became of a received frame.
#[derive(Debug, PartialEq)]
pub enum FrameOutcome {
    /// Decrypted; `sender` is the participant id from the MLS credential of the key.
    Opened { plaintext: Vec<u8>, sender: String },
    /// Encrypted before this participant joined: unreadable by design, drop it.
    NotForUs,
    /// Keys not here yet (their Commit is still on the WebSocket): retry shortly.
    NotYet,
    /// Failed to authenticate or malformed: drop it.
    Failed(String),
}

/// One participant's group session, as the browser drives it.
pub struct Core {
    group: GroupSession,
    participant_id: u64,
    /// Events for the UI (JSON), oldest first.
    events: VecDeque<String>,
    /// The emoji form of the current security code (from the last `keys_changed` event).
    security_emoji: String,
}

impl Core {
    /// Starts from the server's `welcome` message (JSON as received): creates the group when
    /// the welcome says so, otherwise publishes a KeyPackage and waits to be added.
    pub fn from_welcome(
        welcome_json: &str,
        name: &str,
        secrets: LinkSecrets,
        now_ms: u64,
    ) -> Result<Core, Error> {
        let msg = proto::parse_server_message(welcome_json)
            .map_err(|e| Error(format!("unreadable welcome: {e}")))?;
        let ServerMessage::Welcome { participant_id, .. } = &msg else {
            return Err(Error("expected a welcome".into()));
        };
        let participant_id = participant_id.0;
        let group = GroupSession::from_welcome(name, &msg, secrets, now_ms)
            .map_err(|e| Error(format!("cannot start end-to-end encryption: {e}")))?;
        let mut core = Core {
            group,
            participant_id,
            events: VecDeque::new(),
            security_emoji: String::new(),
        };
        core.note_changes();
        Ok(core)
    }

    pub fn participant_id(&self) -> u64 {
        self.participant_id
    }

    /// Feeds one server message (JSON as received). Messages the group does not care about
    /// are ignored; unreadable ones are an error for the caller to log.
    pub fn on_server_message(&mut self, json: &str, now_ms: u64) -> Result<(), Error> {
        let msg = proto::parse_server_message(json).map_err(|e| Error(e.to_string()))?;
        self.group.on_server_message(&msg, now_ms);
        self.group.tick(now_ms);
        self.note_changes();
        Ok(())
    }

    /// Lets time pass: commits outstanding adds and removals when it is this member's turn.
    pub fn tick(&mut self, now_ms: u64) {
        self.group.tick(now_ms);
        self.note_changes();
    }

    /// The next message to send on the WebSocket (JSON), if any.
    pub fn poll_message(&mut self) -> Option<String> {
        self.group.poll_message().map(|m| proto::encode(&m))
    }

    /// The next event for the UI (JSON with a `type`), if any.
    pub fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    /// This user removes `participant` (call it when sending `remove`).
    pub fn removed_by_this_user(&mut self, participant: u64) {
        self.group.removed_by_this_user(participant);
        self.note_changes();
    }

    /// This user admits `participant` from the lobby (call it when sending `admit`): only then
    /// does this client sign its MLS admission.
    pub fn admission_requested(&mut self, participant: u64) {
        self.group.admission_requested(participant);
    }

    /// This user (holding the host link) makes `participant` a co-host in the group, or takes
    /// it back; committed at the next tick.
    pub fn set_cohost(&mut self, participant: u64, cohost: bool) {
        self.group.set_cohost(participant, cohost);
        self.group.tick(0);
        self.note_changes();
    }

    /// Queues an end-to-end encrypted chat message to the group.
    pub fn send_chat(&mut self, text: &str) -> Result<(), Error> {
        self.group
            .send_chat(text)
            .map_err(|e| Error(format!("cannot send the message: {e}")))
    }

    /// SFrame-encrypts one encoded frame; None when this participant holds no group keys yet
    /// (the frame must then be dropped: never sent in the clear).
    pub fn encrypt_frame(&mut self, kind: &str, frame: &[u8]) -> Option<Vec<u8>> {
        let kind = MediaKind::parse(kind)?;
        self.group.encrypt(kind, frame)
    }

    /// Opens one received frame.
    pub fn decrypt_frame(&mut self, kind: &str, bytes: &[u8], now_ms: u64) -> FrameOutcome {
        let Some(kind) = MediaKind::parse(kind) else {
            return FrameOutcome::Failed(format!("unknown media kind {kind:?}"));
        };
        match self.group.decrypt(kind, bytes, now_ms) {
            Ok(opened) => FrameOutcome::Opened {
                plaintext: opened.plaintext,
                sender: opened.sender_participant_id,
            },
            Err(Unopened::NotForUs) => FrameOutcome::NotForUs,
            Err(Unopened::NotYet(_)) => FrameOutcome::NotYet,
            Err(Unopened::Failed(e)) => FrameOutcome::Failed(e.to_string()),
        }
    }

    /// A frame held for its keys never became readable.
    pub fn count_failure(&mut self) {
        self.group.count_failure();
    }

    pub fn is_member(&self) -> bool {
        self.group.is_member()
    }

    /// The E2EE report (epoch, security code, counters, alarms) as JSON.
    pub fn report(&self) -> String {
        let report = self.group.report();
        json!({
            "epoch": report.epoch,
            "security_code": report.security_code,
            "security_emoji": self.security_emoji,
            "member": self.group.is_member(),
            "decrypted": report.decrypted,
            "decrypt_failures": report.decrypt_failures,
            "undecryptable_before_join": report.undecryptable_before_join,
            "alarms": report.alarms,
            "commits_made": report.commits_made,
        })
        .to_string()
    }

    /// Problems worth a line in the browser console, as a JSON array of strings.
    pub fn take_errors(&mut self) -> String {
        json!(self.group.take_errors()).to_string()
    }

    /// Moves the group session's events (keys changed, chat, alarms...) to the UI queue.
    fn note_changes(&mut self) {
        while let Some(event) = self.group.poll_event() {
            if let GroupEvent::KeysChanged { security_emoji, .. } = &event {
                self.security_emoji.clone_from(security_emoji);
            }
            self.events
                .push_back(serde_json::to_string(&event).unwrap_or_else(|e| {
                    json!({"type": "alarm", "message": e.to_string()}).to_string()
                }));
        }
    }
}

#[cfg(test)]
mod tests;
