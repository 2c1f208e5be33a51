//! wasm-bindgen shell for the browser. Deliberately thin: bytes in, bytes out, structured
//! results as JSON strings (no serde types cross the boundary, so the JS side needs no
//! generated typings to stay in sync). Errors are `Error` objects whose message starts with a
//! stable code (`UnadmittedAdd: ...`), so the UI can raise the lobby alarm without parsing
//! prose. Epochs and times cross as `f64`: exact up to 2^53, far beyond any meeting.

use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::{E2eeError, Identity, MediaKind, Member, PendingJoin, Processed};

fn code(e: &E2eeError) -> &'static str {
    match e {
        E2eeError::Malformed(_) => "Malformed",
        E2eeError::Truncated => "Truncated",
        E2eeError::FrameTooShort => "FrameTooShort",
        E2eeError::Authentication => "Authentication",
        E2eeError::UnknownKid(_) => "UnknownKid",
        E2eeError::Replay(_) => "Replay",
        E2eeError::WrongEpoch { .. } => "WrongEpoch",
        E2eeError::StaleEpoch { .. } => "StaleEpoch",
        E2eeError::WrongGroup => "WrongGroup",
        E2eeError::NotMember => "NotMember",
        E2eeError::NotHost => "NotHost",
        E2eeError::UnadmittedAdd => "UnadmittedAdd",
        E2eeError::Locked => "Locked",
        E2eeError::UnsupportedProposal => "UnsupportedProposal",
        E2eeError::PendingCommit(_) => "PendingCommit",
        E2eeError::NoSuchLeaf(_) => "NoSuchLeaf",
        E2eeError::Mls(_) => "Mls",
        E2eeError::Sframe(_) => "Sframe",
    }
}

fn err(e: E2eeError) -> JsError {
    JsError::new(&format!("{}: {e}", code(&e)))
}

fn kind(name: &str) -> Result<MediaKind, JsError> {
    MediaKind::parse(name).ok_or_else(|| JsError::new("Malformed: unknown media kind"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn processed_json(p: &Processed) -> String {
    match p {
        Processed::Admission { kp_hash, by_leaf } => {
            json!({"type": "admission", "kpHash": hex(kp_hash), "byLeaf": by_leaf})
        }
        Processed::HostGranted { leaf, by_leaf, epoch } => {
            json!({"type": "hostGranted", "leaf": leaf, "byLeaf": by_leaf, "epoch": epoch})
        }
        Processed::Chat { from_leaf, sender_name, text } => {
            json!({"type": "chat", "fromLeaf": from_leaf, "senderName": sender_name, "text": text})
        }
        Processed::LockChanged { locked, by_leaf } => {
            json!({"type": "lockChanged", "locked": locked, "byLeaf": by_leaf})
        }
        Processed::Reaction { from_leaf, sender_name, emoji } => {
            json!({"type": "reaction", "fromLeaf": from_leaf, "senderName": sender_name, "emoji": emoji})
        }
        Processed::CommitMerged { epoch, added, removed, self_removed } => json!({
            "type": "commitMerged",
            "epoch": epoch,
            "added": added.iter().map(|(l, n)| json!({"leaf": l, "name": n})).collect::<Vec<_>>(),
            "removed": removed,
            "selfRemoved": self_removed,
        }),
        Processed::Own => json!({"type": "own"}),
    }
    .to_string()
}

/// A participant waiting in the lobby.
#[wasm_bindgen]
pub struct WasmPendingJoin {
    inner: Option<PendingJoin>,
    key_package: Vec<u8>,
}

#[wasm_bindgen]
impl WasmPendingJoin {
    /// New identity and KeyPackage for the lobby.
    #[wasm_bindgen(constructor)]
    pub fn new(name: &str, participant_id: &str) -> Result<WasmPendingJoin, JsError> {
        let identity = Identity::generate(name, participant_id).map_err(err)?;
        let (pending, key_package) = Member::new_pending(identity).map_err(err)?;
        Ok(WasmPendingJoin {
            inner: Some(pending),
            key_package,
        })
    }

    /// KeyPackage bytes to send to the server.
    #[wasm_bindgen(js_name = keyPackage)]
    pub fn key_package(&self) -> Vec<u8> {
        self.key_package.clone()
    }

    /// Join with a Welcome; usable once.
    pub fn join(&mut self, welcome: &[u8]) -> Result<WasmMember, JsError> {
        let pending = self
            .inner
            .take()
            .ok_or_else(|| JsError::new("PendingCommit: already joined"))?;
        Ok(WasmMember {
            inner: pending.join(welcome, None).map_err(err)?,
        })
    }
}

/// `KeyPackageRef` of a KeyPackage, for `admit`.
#[wasm_bindgen(js_name = keyPackageHash)]
pub fn key_package_hash(kp: &[u8]) -> Result<Vec<u8>, JsError> {
    crate::key_package_hash(kp).map(|h| h.to_vec()).map_err(err)
}

/// Secret-free classification of MLS bytes, as JSON.
#[wasm_bindgen]
pub fn inspect(bytes: &[u8]) -> Result<String, JsError> {
    let i = crate::inspect(bytes).map_err(err)?;
    Ok(json!({
        "kind": format!("{:?}", i.kind),
        "epoch": i.epoch,
        "groupId": i.group_id.as_deref().map(hex),
        "welcomeKeyPackageRefs": i.welcome_key_package_refs.iter().map(|r| hex(r)).collect::<Vec<_>>(),
    })
    .to_string())
}

/// One participant's group state.
#[wasm_bindgen]
pub struct WasmMember {
    inner: Member,
}

#[wasm_bindgen]
impl WasmMember {
    /// Create the meeting group (caller becomes host).
    #[wasm_bindgen(js_name = createGroup)]
    pub fn create_group(
        name: &str,
        participant_id: &str,
        group_id: &[u8],
    ) -> Result<WasmMember, JsError> {
        let identity = Identity::generate(name, participant_id).map_err(err)?;
        Ok(WasmMember {
            inner: Member::create_group(identity, group_id).map_err(err)?,
        })
    }

    /// Host only: admit a KeyPackage hash; returns the MLS message to send.
    pub fn admit(&mut self, kp_hash: &[u8]) -> Result<Vec<u8>, JsError> {
        let h = <[u8; 32]>::try_from(kp_hash)
            .map_err(|_| JsError::new("Malformed: hash must be 32 bytes"))?;
        self.inner.admit(h).map_err(err)
    }

    /// Process an incoming MLS message; returns JSON describing it.
    pub fn process(&mut self, bytes: &[u8], now_ms: f64) -> Result<String, JsError> {
        self.inner
            .process(bytes, now_ms as u64)
            .map(|p| processed_json(&p))
            .map_err(err)
    }

    /// Commit adding one admitted KeyPackage; returns `[commit, welcome]`.
    #[wasm_bindgen(js_name = commitAdd)]
    pub fn commit_add(&mut self, key_package: &[u8]) -> Result<js_sys::Array, JsError> {
        let (c, w) = self.inner.commit_add(&[key_package]).map_err(err)?;
        let out = js_sys::Array::new();
        out.push(&js_sys::Uint8Array::from(&c[..]));
        out.push(&js_sys::Uint8Array::from(&w[..]));
        Ok(out)
    }

    /// Commit removing leaves.
    #[wasm_bindgen(js_name = commitRemove)]
    pub fn commit_remove(&mut self, leaves: Vec<u32>) -> Result<Vec<u8>, JsError> {
        self.inner.commit_remove(&leaves).map_err(err)
    }

    /// Host only: commit granting host to `leaf`.
    #[wasm_bindgen(js_name = grantHost)]
    pub fn grant_host(&mut self, leaf: u32) -> Result<Vec<u8>, JsError> {
        self.inner.grant_host(leaf).map_err(err)
    }

    /// The server accepted our commit.
    #[wasm_bindgen(js_name = mergePendingCommit)]
    pub fn merge_pending_commit(&mut self, now_ms: f64) -> Result<String, JsError> {
        self.inner
            .merge_pending_commit(now_ms as u64)
            .map(|p| processed_json(&p))
            .map_err(err)
    }

    /// The server refused our commit as stale.
    #[wasm_bindgen(js_name = discardPendingCommit)]
    pub fn discard_pending_commit(&mut self) -> Result<(), JsError> {
        self.inner.discard_pending_commit().map_err(err)
    }

    /// Encrypt a chat message.
    #[wasm_bindgen(js_name = encryptChat)]
    pub fn encrypt_chat(&mut self, text: &str) -> Result<Vec<u8>, JsError> {
        self.inner.encrypt_chat(text).map_err(err)
    }

    /// Encrypt a reaction.
    #[wasm_bindgen(js_name = encryptReaction)]
    pub fn encrypt_reaction(&mut self, emoji: &str) -> Result<Vec<u8>, JsError> {
        self.inner.encrypt_reaction(emoji).map_err(err)
    }

    /// SFrame-encrypt a frame; `kind` is `"vp8"`, `"opus"` or `"raw"`.
    #[wasm_bindgen(js_name = encryptFrame)]
    pub fn encrypt_frame(&mut self, kind_name: &str, frame: &[u8]) -> Result<Vec<u8>, JsError> {
        self.inner
            .encrypt_frame(kind(kind_name)?, frame)
            .map_err(err)
    }

    /// SFrame-decrypt a frame; returns `{senderLeaf, epoch, plaintext: Uint8Array}`.
    #[wasm_bindgen(js_name = decryptFrame)]
    pub fn decrypt_frame(
        &mut self,
        kind_name: &str,
        bytes: &[u8],
        now_ms: f64,
    ) -> Result<js_sys::Object, JsError> {
        let d = self
            .inner
            .decrypt_frame(kind(kind_name)?, bytes, now_ms as u64)
            .map_err(err)?;
        let o = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
        set("senderLeaf", &JsValue::from(d.sender_leaf))
            .and_then(|_| set("epoch", &JsValue::from(d.epoch as f64)))
            .and_then(|_| {
                set(
                    "plaintext",
                    &js_sys::Uint8Array::from(&d.plaintext[..]).into(),
                )
            })
            .map_err(|_| JsError::new("Sframe: could not build result"))?;
        Ok(o)
    }

    /// Security code (6 groups of 5 digits).
    #[wasm_bindgen(js_name = securityCode)]
    pub fn security_code(&self) -> String {
        self.inner.security_code()
    }

    /// Security code as 8 emoji.
    #[wasm_bindgen(js_name = securityEmoji)]
    pub fn security_emoji(&self) -> String {
        self.inner.security_emoji()
    }

    /// Current epoch.
    pub fn epoch(&self) -> f64 {
        self.inner.epoch() as f64
    }

    /// Own leaf index.
    #[wasm_bindgen(js_name = leafIndex)]
    pub fn leaf_index(&self) -> u32 {
        self.inner.leaf_index()
    }

    /// Members as JSON `[{leaf, name, participantId, host}]`.
    pub fn members(&self) -> String {
        let hosts = self.inner.hosts();
        serde_json::Value::Array(
            self.inner
                .members()
                .into_iter()
                .map(|(l, n, p)| json!({"leaf": l, "name": n, "participantId": p, "host": hosts.contains(&l)}))
                .collect(),
        )
        .to_string()
    }

    /// False once removed.
    #[wasm_bindgen(js_name = isActive)]
    pub fn is_active(&self) -> bool {
        self.inner.is_active()
    }
}
