//! wasm-bindgen shell around [`Core`] for the web app's E2EE worker. Times cross as `f64`
//! milliseconds (exact far beyond any meeting); messages and reports cross as JSON strings.

use wasm_bindgen::prelude::*;

use crate::{links, Core, FrameOutcome};

/// `{"host_secret"?, "invite"?}`: what `hello` carries for a link's `#host=` and `#invite=`.
#[wasm_bindgen(js_name = helloFields)]
pub fn hello_fields(host: &str, invite: &str) -> Result<String, JsError> {
    links::hello_fields(host, invite).map_err(|e| JsError::new(&e.0))
}

/// A new meeting's host link: `{"seed", "host_secret", "host_secret_sha256", "meeting_key"}`.
#[wasm_bindgen(js_name = newHostLink)]
pub fn new_host_link() -> Result<String, JsError> {
    links::new_host_link().map_err(|e| JsError::new(&e.0))
}

/// A new invitation's secret to register: `{"secret", "token_sha256"}`.
#[wasm_bindgen(js_name = newInvitationSecret)]
pub fn new_invitation_secret() -> Result<String, JsError> {
    links::new_invitation_secret().map_err(|e| JsError::new(&e.0))
}

/// The `#invite=` value of an invitation issued under the host link `host`.
#[wasm_bindgen(js_name = issueInvitation)]
pub fn issue_invitation(
    host: &str,
    secret: &str,
    id: &str,
    expires_at: f64,
    skip_lobby: bool,
) -> Result<String, JsError> {
    links::issue_invitation(host, secret, id, expires_at as u64, skip_lobby)
        .map_err(|e| JsError::new(&e.0))
}

/// The meeting key (`#k=`) of a host link.
#[wasm_bindgen(js_name = meetingKeyOf)]
pub fn meeting_key_of(host: &str) -> Result<String, JsError> {
    links::meeting_key_of(host).map_err(|e| JsError::new(&e.0))
}

/// The group session of one browser participant.
#[wasm_bindgen]
pub struct WebSession {
    core: Core,
}

/// A received frame after decryption.
#[wasm_bindgen]
pub struct DecryptedFrame {
    status: &'static str,
    plaintext: Vec<u8>,
    sender: String,
    error: String,
}

#[wasm_bindgen]
impl DecryptedFrame {
    /// `"opened"`, `"not_for_us"` (sent before we joined: drop), `"not_yet"` (keys still on
    /// their way: retry shortly) or `"failed"` (drop).
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        self.status.into()
    }

    /// The opened frame (empty unless `status` is `"opened"`); hands the bytes over once.
    #[wasm_bindgen(js_name = takePlaintext)]
    pub fn take_plaintext(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plaintext)
    }

    /// The sender's participant id, from the MLS credential of the key that opened the frame.
    #[wasm_bindgen(getter)]
    pub fn sender(&self) -> String {
        self.sender.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn error(&self) -> String {
        self.error.clone()
    }
}

/// The key a meeting page keeps across its reconnections (see `e2ee::continuity`): made once
/// per page, given to every `WebSession` of it, never sent.
#[wasm_bindgen]
pub struct WebDevice(e2ee::DeviceKey);

#[wasm_bindgen]
impl WebDevice {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<WebDevice, JsError> {
        e2ee::DeviceKey::generate()
            .map(WebDevice)
            .map_err(|e| JsError::new(&e.to_string()))
    }
}

#[wasm_bindgen]
impl WebSession {
    /// Starts from the server's `welcome` (its JSON as received) with this participant's name,
    /// its link's secrets (`#host=`, `#invite=`, `#k=`; empty strings when absent) and the
    /// page's device key, the same for every session of one meeting page.
    #[wasm_bindgen(constructor)]
    pub fn new(
        welcome_json: &str,
        name: &str,
        host: &str,
        invite: &str,
        meeting_key: &str,
        now_ms: f64,
        device: &WebDevice,
    ) -> Result<WebSession, JsError> {
        let mut secrets =
            links::secrets(host, invite, meeting_key).map_err(|e| JsError::new(&e.0))?;
        secrets.device = Some(device.0.clone());
        Core::from_welcome(welcome_json, name, secrets, now_ms as u64)
            .map(|core| WebSession { core })
            .map_err(|e| JsError::new(&e.0))
    }

    /// This user removes a participant: call it as the app sends `remove`, so a host's client
    /// bars the participant's device from coming back as a returning one.
    #[wasm_bindgen(js_name = removedByThisUser)]
    pub fn removed_by_this_user(&mut self, participant: f64) {
        self.core.removed_by_this_user(participant as u64);
    }

    /// This user admits a participant from the lobby: call it as the app sends `admit`.
    #[wasm_bindgen(js_name = admissionRequested)]
    pub fn admission_requested(&mut self, participant: f64) {
        self.core.admission_requested(participant as u64);
    }

    /// This user (holding the host link) makes a participant a co-host, or takes it back.
    #[wasm_bindgen(js_name = setCohost)]
    pub fn set_cohost(&mut self, participant: f64, cohost: bool) {
        self.core.set_cohost(participant as u64, cohost);
    }

    #[wasm_bindgen(js_name = participantId)]
    pub fn participant_id(&self) -> f64 {
        self.core.participant_id() as f64
    }

    /// Feeds one server message (JSON as received).
    #[wasm_bindgen(js_name = onServerMessage)]
    pub fn on_server_message(&mut self, json: &str, now_ms: f64) -> Result<(), JsError> {
        self.core
            .on_server_message(json, now_ms as u64)
            .map_err(|e| JsError::new(&e.0))
    }

    /// Call about every 100 ms.
    pub fn tick(&mut self, now_ms: f64) {
        self.core.tick(now_ms as u64);
    }

    /// Next message for the WebSocket (JSON), or undefined.
    #[wasm_bindgen(js_name = pollMessage)]
    pub fn poll_message(&mut self) -> Option<String> {
        self.core.poll_message()
    }

    /// Next UI event (JSON with a `type`), or undefined.
    #[wasm_bindgen(js_name = pollEvent)]
    pub fn poll_event(&mut self) -> Option<String> {
        self.core.poll_event()
    }

    /// Queues an encrypted chat message (then drain `pollMessage`).
    #[wasm_bindgen(js_name = sendChat)]
    pub fn send_chat(&mut self, text: &str) -> Result<(), JsError> {
        self.core.send_chat(text).map_err(|e| JsError::new(&e.0))
    }

    /// SFrame-encrypts a frame (`kind`: `"vp8"` or `"opus"`); undefined when there are no
    /// keys yet: the caller drops the frame.
    #[wasm_bindgen(js_name = encryptFrame)]
    pub fn encrypt_frame(&mut self, kind: &str, frame: &[u8]) -> Option<Vec<u8>> {
        self.core.encrypt_frame(kind, frame)
    }

    /// Opens a received frame.
    #[wasm_bindgen(js_name = decryptFrame)]
    pub fn decrypt_frame(&mut self, kind: &str, bytes: &[u8], now_ms: f64) -> DecryptedFrame {
        let mut out = DecryptedFrame {
            status: "failed",
            plaintext: Vec::new(),
            sender: String::new(),
            error: String::new(),
        };
        match self.core.decrypt_frame(kind, bytes, now_ms as u64) {
            FrameOutcome::Opened { plaintext, sender } => {
                out.status = "opened";
                out.plaintext = plaintext;
                out.sender = sender;
            }
            FrameOutcome::NotForUs => out.status = "not_for_us",
            FrameOutcome::NotYet => out.status = "not_yet",
            FrameOutcome::Failed(e) => out.error = e,
        }
        out
    }

    /// A frame held for its keys never became readable: count it as a failure.
    #[wasm_bindgen(js_name = countFailure)]
    pub fn count_failure(&mut self) {
        self.core.count_failure();
    }

    #[wasm_bindgen(js_name = isMember)]
    pub fn is_member(&self) -> bool {
        self.core.is_member()
    }

    /// `{epoch, security_code, security_emoji, member, decrypted, decrypt_failures, ...}`.
    pub fn report(&self) -> String {
        self.core.report()
    }

    /// JSON array of problems worth logging.
    #[wasm_bindgen(js_name = takeErrors)]
    pub fn take_errors(&mut self) -> String {
        self.core.take_errors()
    }
}
