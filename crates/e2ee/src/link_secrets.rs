//! What meeting links carry in their `#fragment`, and what each party may learn of it.
//!
//! Browsers never send a fragment to a server, so a secret there reaches only whoever holds the
//! link. Everything the server needs is derived from it one-way (HKDF-SHA256), so what the
//! server sees and stores cannot be turned back into what proves admission to the group.
//!
//! - A **host link** (`#host=<seed>`) carries a 32-byte seed. From it come the *host secret*
//!   the server checks (it proves to the server that a host knocks, and is stored as SHA-256)
//!   and the **meeting key**, an Ed25519 key pair. The meeting's public key rides in every join
//!   link (`#k=`) and in the MLS group itself; its private half, which only host-link holders
//!   have, signs host-link proofs, co-host promotions and invitations. Whoever runs the server
//!   has the host secret's hash at most, and can sign none of these.
//! - An **invitation** (`#invite=<id>.<seed>.<expiry>.<skip lobby>.<certificate>`) is made by a
//!   host's client: a seed of its own (from which the server's token and an Ed25519 invitation
//!   key are derived) and the meeting key's certificate over the invitation key, its expiry and
//!   whether it skips the lobby. The server gets `<id>.<token>` and a SHA-256 of the token.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::{random::OpenMlsRand, OpenMlsProvider};
use sha2::{Digest, Sha256};

use crate::error::E2eeError;

/// Length of every seed a link carries.
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Everything the meeting key signs starts with one of these, so a signature made for one
/// purpose never verifies for another.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// A member's leaf signature key belongs to a host-link holder.
    HostLinkProof,
    /// This group (id, creator) was created by a host-link holder.
    Group,
    /// A host-link holder promoted this member to co-host in this group.
    CoHost,
    /// A host's client issued this invitation key.
    Invitation,
    /// The invitation key vouches for this member's leaf signature key.
    InvitationBinding,
    /// A device key vouches for a new leaf signature key of the same device (a rejoin).
    Continuity,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::HostLinkProof => b"conclave/v1/host-link-proof",
            Purpose::Group => b"conclave/v1/group",
            Purpose::CoHost => b"conclave/v1/co-host",
            Purpose::Invitation => b"conclave/v1/invitation",
            Purpose::InvitationBinding => b"conclave/v1/invitation-binding",
            Purpose::Continuity => b"conclave/v1/continuity",
        }
    }

    /// `label || 0x00 || message`: labels contain no zero byte, so this is unambiguous.
    pub(crate) fn message(self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.label().len() + 1 + message.len());
        out.extend_from_slice(self.label());
        out.push(0);
        out.extend_from_slice(message);
        out
    }
}

fn derive(seed: &[u8; SEED_LEN], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HKDF-SHA256 can expand up to 255 * 32 bytes; 32 cannot fail.
    if Hkdf::<Sha256>::new(None, seed)
        .expand(info.as_bytes(), &mut out)
        .is_err()
    {
        unreachable!("32 bytes is within HKDF-SHA256's output limit");
    }
    out
}

pub(crate) fn random_seed() -> Result<[u8; SEED_LEN], E2eeError> {
    OpenMlsRustCrypto::default()
        .rand()
        .random_array()
        .map_err(|_| E2eeError::Mls("no randomness".into()))
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

fn un_b64<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], E2eeError> {
    data_encoding::BASE64URL_NOPAD
        .decode(text.as_bytes())
        .ok()
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or(E2eeError::Malformed(what))
}

/// The server-facing token of a seed: 128 bits, lowercase base32 (what the server has always
/// taken as a host secret).
fn server_token(seed: &[u8; SEED_LEN], info: &str) -> String {
    let derived = derive(seed, info);
    data_encoding::BASE32_NOPAD
        .encode(&derived[..16])
        .to_ascii_lowercase()
}

/// The seed of a host link.
#[derive(Clone)]
pub struct HostLinkSecret([u8; SEED_LEN]);

impl HostLinkSecret {
    /// A fresh random seed: a new meeting's host link.
    pub fn generate() -> Result<Self, E2eeError> {
        Ok(HostLinkSecret(random_seed()?))
    }

    /// Reads the `#host=` value of a host link.
    pub fn parse(text: &str) -> Result<Self, E2eeError> {
        Ok(HostLinkSecret(un_b64(text, "host link secret")?))
    }

    /// The `#host=` value.
    pub fn encode(&self) -> String {
        b64(&self.0)
    }

    /// What the server checks (sent in `hello` and as the API's bearer token). One-way: it
    /// reveals nothing of the meeting key.
    pub fn server_secret(&self) -> String {
        server_token(&self.0, "conclave/v1/host-link/server-secret")
    }

    /// SHA-256 of [`Self::server_secret`], which is all a server stores.
    pub fn server_secret_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.server_secret().as_bytes()).into()
    }

    /// The meeting key this link holds.
    pub fn meeting_key(&self) -> MeetingKey {
        MeetingKey(SigningKey::from_bytes(&derive(
            &self.0,
            "conclave/v1/host-link/meeting-key",
        )))
    }
}

/// The private meeting key: only host-link holders have it.
pub struct MeetingKey(SigningKey);

impl MeetingKey {
    /// Its public half, which join links carry and the group records.
    pub fn public(&self) -> MeetingPublicKey {
        MeetingPublicKey(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, purpose: Purpose, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&purpose.message(message)).to_bytes()
    }
}

/// The public meeting key (`#k=` in join links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeetingPublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl MeetingPublicKey {
    /// Reads a `#k=` value.
    pub fn parse(text: &str) -> Result<Self, E2eeError> {
        Ok(MeetingPublicKey(un_b64(text, "meeting key")?))
    }

    /// The `#k=` value.
    pub fn encode(&self) -> String {
        b64(&self.0)
    }

    /// Whether `signature` is the meeting key's over `message` for `purpose`. Any malformed
    /// key or signature is simply not valid.
    pub(crate) fn verifies(&self, purpose: Purpose, message: &[u8], signature: &[u8]) -> bool {
        verify(&self.0, purpose, message, signature)
    }
}

pub(crate) fn verify(public: &[u8], purpose: Purpose, message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(signature)) = (
        <[u8; PUBLIC_KEY_LEN]>::try_from(public),
        <[u8; SIGNATURE_LEN]>::try_from(signature),
    ) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    key.verify_strict(
        &purpose.message(message),
        &Signature::from_bytes(&signature),
    )
    .is_ok()
}

/// The seed of one invitation.
#[derive(Clone)]
pub struct InvitationSecret([u8; SEED_LEN]);

impl InvitationSecret {
    /// A fresh random invitation seed.
    pub fn generate() -> Result<Self, E2eeError> {
        Ok(InvitationSecret(random_seed()?))
    }

    /// Reads the encoding of [`Self::encode`].
    pub fn parse(text: &str) -> Result<Self, E2eeError> {
        Ok(InvitationSecret(un_b64(text, "invitation seed")?))
    }

    /// Base64url, for a client to keep the secret between registering and issuing.
    pub fn encode(&self) -> String {
        b64(&self.0)
    }

    /// The token the server checks (it stores its SHA-256).
    pub fn server_token(&self) -> String {
        server_token(&self.0, "conclave/v1/invitation/server-token")
    }

    /// SHA-256 of [`Self::server_token`], what the server stores.
    pub fn server_token_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.server_token().as_bytes()).into()
    }

    pub(crate) fn key(&self) -> SigningKey {
        SigningKey::from_bytes(&derive(&self.0, "conclave/v1/invitation/key"))
    }

    /// The invitation's public key.
    pub fn public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key().verifying_key().to_bytes()
    }
}

/// What the meeting key certifies about an invitation: `pub || expires_at (u64 BE) || skip`.
pub(crate) fn invitation_certified(
    invitation_key: &[u8; PUBLIC_KEY_LEN],
    expires_at: u64,
    skip_lobby: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PUBLIC_KEY_LEN + 9);
    out.extend_from_slice(invitation_key);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.push(u8::from(skip_lobby));
    out
}

/// An invitation as its link carries it (`#invite=`).
#[derive(Clone)]
pub struct Invitation {
    /// The server's id of this invitation (for revocation, single use and its label).
    pub id: String,
    secret: InvitationSecret,
    /// Unix seconds after which members refuse it.
    pub expires_at: u64,
    /// Whether its holder goes straight in, without a host's admission.
    pub skip_lobby: bool,
    certificate: [u8; SIGNATURE_LEN],
}

/// Longest invitation id accepted in a link.
const MAX_INVITATION_ID_LEN: usize = 64;

impl Invitation {
    /// A host's client issues an invitation under the meeting key. `id` is the server's id for
    /// it, given when the client registered the secret's token.
    pub fn issue(
        meeting_key: &MeetingKey,
        id: &str,
        secret: InvitationSecret,
        expires_at: u64,
        skip_lobby: bool,
    ) -> Result<Self, E2eeError> {
        if id.is_empty()
            || id.len() > MAX_INVITATION_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(E2eeError::Malformed("invitation id"));
        }
        let certificate = meeting_key.sign(
            Purpose::Invitation,
            &invitation_certified(&secret.public(), expires_at, skip_lobby),
        );
        Ok(Invitation {
            id: id.to_owned(),
            secret,
            expires_at,
            skip_lobby,
            certificate,
        })
    }

    /// The `#invite=` value: `<id>.<seed>.<expires_at>.<0|1>.<certificate>`.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            self.id,
            b64(&self.secret.0),
            self.expires_at,
            u8::from(self.skip_lobby),
            b64(&self.certificate)
        )
    }

    /// Reads an `#invite=` value. The certificate is checked by members, not here: a client
    /// does not yet know the meeting key it must verify against when it reads its link.
    pub fn parse(text: &str) -> Result<Self, E2eeError> {
        let bad = E2eeError::Malformed("invitation link");
        let parts: Vec<&str> = text.split('.').collect();
        let [id, seed, expires_at, skip, certificate] = parts.as_slice() else {
            return Err(bad);
        };
        if id.is_empty()
            || id.len() > MAX_INVITATION_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(bad);
        }
        let skip_lobby = match *skip {
            "0" => false,
            "1" => true,
            _ => return Err(bad),
        };
        Ok(Invitation {
            id: (*id).to_owned(),
            secret: InvitationSecret(un_b64(seed, "invitation seed")?),
            expires_at: expires_at.parse().map_err(|_| bad)?,
            skip_lobby,
            certificate: un_b64(certificate, "invitation certificate")?,
        })
    }

    /// What `hello` carries to the server: `<id>.<server token>`.
    pub fn hello_token(&self) -> String {
        format!("{}.{}", self.id, self.secret.server_token())
    }

    pub(crate) fn secret(&self) -> &InvitationSecret {
        &self.secret
    }

    pub(crate) fn certificate(&self) -> &[u8; SIGNATURE_LEN] {
        &self.certificate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_server_sees_is_derived_one_way_and_differs_per_purpose() {
        let host = HostLinkSecret::generate().unwrap();
        let again = HostLinkSecret::parse(&host.encode()).unwrap();
        assert_eq!(host.server_secret(), again.server_secret());
        assert_eq!(host.meeting_key().public(), again.meeting_key().public());
        assert_eq!(host.server_secret().len(), 26);
        assert_ne!(host.server_secret(), host.encode());
        let other = HostLinkSecret::generate().unwrap();
        assert_ne!(host.meeting_key().public(), other.meeting_key().public());
        assert!(HostLinkSecret::parse("short").is_err());
        assert!(MeetingPublicKey::parse("!!").is_err());
    }

    #[test]
    fn signatures_are_bound_to_their_purpose_and_key() {
        let key = HostLinkSecret::generate().unwrap().meeting_key();
        let public = key.public();
        let sig = key.sign(Purpose::HostLinkProof, b"leaf");
        assert!(public.verifies(Purpose::HostLinkProof, b"leaf", &sig));
        assert!(!public.verifies(Purpose::CoHost, b"leaf", &sig));
        assert!(!public.verifies(Purpose::HostLinkProof, b"leaf2", &sig));
        assert!(!public.verifies(Purpose::HostLinkProof, b"leaf", &sig[..63]));
        let stranger = HostLinkSecret::generate().unwrap().meeting_key().public();
        assert!(!stranger.verifies(Purpose::HostLinkProof, b"leaf", &sig));
        assert!(!verify(&[0; 31], Purpose::HostLinkProof, b"leaf", &sig));
    }

    #[test]
    fn invitation_links_round_trip_and_refuse_garbage() {
        let key = HostLinkSecret::generate().unwrap().meeting_key();
        let secret = InvitationSecret::generate().unwrap();
        let token = secret.server_token();
        let inv = Invitation::issue(&key, "abc234", secret, 1_900_000_000, true).unwrap();
        let parsed = Invitation::parse(&inv.encode()).unwrap();
        assert_eq!(parsed.id, "abc234");
        assert_eq!(parsed.expires_at, 1_900_000_000);
        assert!(parsed.skip_lobby);
        assert_eq!(parsed.hello_token(), format!("abc234.{token}"));
        assert_eq!(parsed.certificate(), inv.certificate());
        for bad in [
            "",
            "a.b.c.d",
            "a.AAAA.1.0.AAAA",
            &inv.encode().replace(".1.", ".2."),
            "a/b.x.1.0.y",
        ] {
            assert!(Invitation::parse(bad).is_err(), "{bad}");
        }
        assert!(Invitation::issue(
            &key,
            "bad id",
            InvitationSecret::generate().unwrap(),
            1,
            false
        )
        .is_err());
    }
}
