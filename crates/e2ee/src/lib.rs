//! # Conclave end-to-end encryption
//!
//! Pure (no IO, no threads of its own, time passed in as `now_ms`) protocol core shared by
//! the server, the native client and, compiled to wasm, the browser:
//!
//! * **Group keys: MLS (RFC 9420)** via OpenMLS, cipher suite
//!   `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`. Each participant has an Ed25519 key and a
//!   BasicCredential with display name and participant id ([`Identity`]).
//! * **Lobby lock**: a Commit adding a KeyPackage that no host admitted, and that carries no
//!   valid proof of a host link or a host-issued invitation, is refused by every honest member
//!   ([`E2eeError::UnadmittedAdd`]), so a malicious server cannot add a silent listener. Proofs
//!   and host powers derive from the meeting key that only host links hold. See [`group`],
//!   [`proofs`] and [`link_secrets`].
//! * **Media: SFrame (RFC 9605)** `AES_128_GCM_SHA256_128`, keys from the MLS exporter as in
//!   RFC 9605 §5.2 ([`sframe_keys`]), a codec-aware clear prefix ([`frame`]), replay windows
//!   and a grace period for the previous epoch.
//! * **Security code** from the epoch authenticator ([`Member::security_code`]).
//! * **Delivery-service view**: [`inspect`] classifies MLS bytes without any key.
//!
//! ## Why OpenMLS rather than mls-rs
//! Both implement RFC 9420. OpenMLS builds for `wasm32-unknown-unknown` with its `js` feature
//! and a pure-Rust crypto provider (`openmls_rust_crypto`), so the browser runs the very same
//! code as the native client without a C toolchain; it has a long public history, an external
//! audit, and interop test vectors; and its `StagedCommit` API lets the application inspect a
//! Commit's proposals *before* merging, which is exactly what the lobby lock needs. mls-rs is
//! equally capable, but its default crypto provider is aws-lc (C) and its wasm story goes
//! through a WebCrypto provider with async plumbing we do not want in this synchronous core.
//!
//! ## Why the `sframe` crate
//! `sframe` 2.x implements the RFC 9605 header, key/salt derivation and AEAD, ships the RFC's
//! test vectors, supports authenticated cleartext metadata (our codec prefix) with exactly the
//! `[metadata][header][ciphertext]` layout we want, and has a pure-Rust backend
//! (`rust-crypto` feature) that builds for wasm. We add what is specific to MLS meetings: the
//! epoch/leaf KID, per-sender replay windows and epoch grace.
//!
//! ## Building for wasm
//! ```sh
//! rustup target add wasm32-unknown-unknown
//! cargo build -p e2ee --target wasm32-unknown-unknown
//! ```
//! No RUSTFLAGS are needed. The wasm32-only dependency table of this crate enables OpenMLS's
//! `js` feature and JS randomness for each getrandom major version in the graph: 0.2 (via
//! `rand_core` 0.6, used by the RustCrypto curves under `hpke-rs`) with feature `js`, and 0.4
//! (OpenMLS, `sframe`) with feature `wasm_js`. getrandom 0.3 is not in the graph; should a
//! future dependency pull it in, 0.3.4+ only needs its `wasm_js` feature (measured: it selects
//! the backend on `wasm32-unknown-unknown` by feature alone), while 0.3.0-0.3.3 additionally
//! need `RUSTFLAGS='--cfg getrandom_backend="wasm_js"'`. The exports live in [`wasm`]
//! (compiled only for `target_arch = "wasm32"`).
//!
//! ## Cargo features
//! * `insecure-test-hooks` (off by default): **never for production**. Exposes
//!   `Member::commit_add_unchecked`, which builds the Commit a compromised insider would send
//!   (adding a KeyPackage no host admitted), so end-to-end tests can check that honest members
//!   refuse it. Only test code (dev-dependencies) may enable it.
//!
//! ## Clock use
//! This crate never reads a clock. OpenMLS itself checks KeyPackage lifetimes against the
//! system clock when validating a KeyPackage (on wasm through `web-time`, i.e. `Date.now()`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod continuity;
pub mod error;
pub mod frame;
pub mod group;
pub mod identity;
pub mod inspect;
pub mod link_secrets;
pub mod proofs;
pub mod security_code;
pub mod sframe_keys;

pub use continuity::DeviceKey;
pub use error::E2eeError;
pub use frame::{DecryptedFrame, MediaKind};
pub use group::{key_package_hash, Member, PendingJoin, Processed, CIPHERSUITE};
pub use identity::Identity;
pub use inspect::{inspect, MessageKind, MlsMessageInfo};
pub use link_secrets::{
    HostLinkSecret, Invitation, InvitationSecret, MeetingKey, MeetingPublicKey,
};
pub use proofs::{EntryProof, Proven};

#[cfg(test)]
mod tests;
