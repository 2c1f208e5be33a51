//! The MLS group of one meeting, seen from one participant, plus the SFrame keys derived from
//! it.
//!
//! ## Lobby / admission (the cryptographic lock)
//! A joiner publishes a KeyPackage. Only when a **host** sends an `Admission` application
//! message naming that KeyPackage's hash (its RFC 9420 `KeyPackageRef`) does anyone add it.
//! Every member checks every Commit it receives: each Add must name a KeyPackage for which this
//! member processed an Admission from a host, otherwise the Commit is refused with
//! [`E2eeError::UnadmittedAdd`] and not merged. The server relays all of these messages but
//! holds no group key, so it cannot forge an Admission (which is encrypted and signed inside
//! the group) and cannot slip a silent listener into the group: honest members would refuse
//! the Commit and stay in their epoch, where the server's listener has no keys. External
//! commits and standalone proposals are refused for the same reason.
//!
//! A KeyPackage may instead carry its own proof (see [`crate::proofs`]): that its holder has
//! the host link, or an invitation a host's client issued that skips the lobby. Members check
//! the proof against the meeting key recorded in the group; no Admission is needed for it, and
//! nothing the server says about how someone came in counts.
//!
//! ## Hosts
//! Hosts are the members whose leaf proves the host link, and the co-hosts a host-link holder
//! promoted (signed entries in the GroupContext's host set, so all members agree on them by
//! construction: the GroupContext is hashed into the key schedule). Promoting and demoting is a
//! Commit carrying a GroupContextExtensions proposal, which every member accepts only from a
//! host-link holder and only with entries the meeting key signed.

use std::collections::{BTreeSet, HashMap, HashSet};

use openmls::prelude::{
    tls_codec::{Deserialize, Serialize},
    Capabilities, Ciphersuite, CredentialType, Extension, ExtensionType, Extensions, GroupContext,
    GroupId, KeyPackage, KeyPackageIn, LeafNodeIndex, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessedMessageContent,
    Proposal, ProtocolMessage, ProtocolVersion, RatchetTreeIn, RequiredCapabilitiesExtension,
    Sender, StagedCommit, StagedWelcome, UnknownExtension,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider;

use crate::admission::AppPayload;
use crate::continuity::{device_of, DeviceKey, CONTINUITY_EXTENSION_TYPE, REJOIN_WINDOW_MS};
use crate::error::{mls, E2eeError};
use crate::frame::{DecryptedFrame, MediaKind, KEY_LEN};
use crate::identity::{decode_credential, Identity};
use crate::link_secrets::{HostLinkSecret, MeetingPublicKey};
use crate::proofs::{
    decode_hosts, encode_hosts, verify_proof, EntryProof, GroupRecord, HostEntry, Proven,
    ADMISSION_PROOF_EXTENSION_TYPE, GROUP_RECORD_EXTENSION_TYPE, HOSTS_EXTENSION_TYPE,
};
use crate::security_code;
use crate::sframe_keys::{MediaKeys, SFRAME_EXPORTER_LABEL};

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (0x0001), the RFC 9420 mandatory suite.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Past epochs whose application-message keys OpenMLS keeps, so a chat or Admission sent just
/// before a commit still decrypts after it.
const MAX_PAST_EPOCHS: usize = 2;

/// What processing an incoming MLS message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// A host admitted the KeyPackage with this hash; any member may now commit its Add.
    Admission {
        /// `KeyPackageRef` of the admitted KeyPackage.
        kp_hash: [u8; 32],
        /// Leaf of the admitting host.
        by_leaf: u32,
    },
    /// A host-link holder promoted or demoted co-hosts. The commit is merged: the group is at
    /// `epoch`.
    HostsChanged {
        /// Leaves that became co-hosts.
        granted: Vec<u32>,
        /// Leaves that are hosts no more.
        revoked: Vec<u32>,
        /// The host-link holder who committed it.
        by_leaf: u32,
        /// Epoch after the change.
        epoch: u64,
    },
    /// A host barred a device from coming back without the lobby (see [`Member::bar`]).
    Barred {
        /// Leaf of the host.
        by_leaf: u32,
    },
    /// A chat message.
    Chat {
        /// Sender leaf.
        from_leaf: u32,
        /// Sender display name from its credential.
        sender_name: String,
        /// Message text.
        text: String,
    },
    /// A host locked or unlocked the meeting (see [`Member::set_locked`]).
    LockChanged {
        /// Locked (true) or unlocked.
        locked: bool,
        /// Leaf of the host.
        by_leaf: u32,
    },
    /// A reaction (emoji).
    Reaction {
        /// Sender leaf.
        from_leaf: u32,
        /// Sender display name from its credential.
        sender_name: String,
        /// The reaction.
        emoji: String,
    },
    /// A commit was vetted and merged.
    CommitMerged {
        /// New epoch.
        epoch: u64,
        /// Leaves and names of members added.
        added: Vec<(u32, String)>,
        /// Leaves removed.
        removed: Vec<u32>,
        /// This member was removed: the group is now inactive and learns no further keys.
        self_removed: bool,
    },
    /// Our own message fanned back by the delivery service; nothing to do.
    Own,
}

/// A joiner waiting in the lobby: holds the private keys of its KeyPackage until a Welcome
/// arrives.
pub struct PendingJoin {
    provider: OpenMlsRustCrypto,
    identity: Identity,
    /// The meeting key from the joiner's own link: a Welcome into a group under another key is
    /// refused.
    expected_meeting: Option<MeetingPublicKey>,
}

/// One participant's view of the meeting group.
pub struct Member {
    provider: OpenMlsRustCrypto,
    identity: Identity,
    group: MlsGroup,
    /// The meeting key in the group record: what every proof is checked against.
    meeting: MeetingPublicKey,
    /// KeyPackageRefs a host admitted, with the admitting host's leaf.
    admitted: HashMap<[u8; 32], u32>,
    /// A host locked the meeting: every Add is refused until a host unlocks. This is the lock
    /// enforced by cryptography: a server that ignores its own lock still gets no one added.
    locked: bool,
    media: MediaKeys,
    /// Devices of leaves that left the group lately: they may come back (see
    /// [`Member::returning`]).
    departed: Vec<Departed>,
    /// Devices a host barred: they do not come back without the lobby.
    barred: HashSet<[u8; 32]>,
}

/// A leaf that left the group, by its device.
struct Departed {
    device: [u8; 32],
    participant_id: String,
    at_ms: u64,
}

fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::Unknown(HOSTS_EXTENSION_TYPE),
            ExtensionType::Unknown(GROUP_RECORD_EXTENSION_TYPE),
            ExtensionType::Unknown(ADMISSION_PROOF_EXTENSION_TYPE),
            ExtensionType::Unknown(CONTINUITY_EXTENSION_TYPE),
        ]),
        None,
        Some(&[CredentialType::Basic]),
    )
}

/// GroupContext extensions of a Conclave group. OpenMLS only lets a GroupContextExtensions
/// proposal carry an extension listed in RequiredCapabilities, which also guarantees every
/// member (and every KeyPackage added later) understands the record and the host set.
fn group_extensions(
    record: &GroupRecord,
    hosts: &[HostEntry],
) -> Result<Extensions<GroupContext>, E2eeError> {
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[
                ExtensionType::Unknown(HOSTS_EXTENSION_TYPE),
                ExtensionType::Unknown(GROUP_RECORD_EXTENSION_TYPE),
            ],
            &[],
            &[],
        )),
        Extension::Unknown(
            GROUP_RECORD_EXTENSION_TYPE,
            UnknownExtension(record.encode()),
        ),
        Extension::Unknown(HOSTS_EXTENSION_TYPE, UnknownExtension(encode_hosts(hosts))),
    ])
    .map_err(mls)
}

/// The LeafNode extensions carrying `proof` and the continuity of `device` for a leaf whose
/// signature key is `leaf_key`.
fn leaf_extensions(
    proof: Option<&EntryProof>,
    device: Option<&DeviceKey>,
    leaf_key: &[u8],
) -> Result<Extensions<openmls::prelude::LeafNode>, E2eeError> {
    let proof = proof.map(|proof| {
        Extension::Unknown(
            ADMISSION_PROOF_EXTENSION_TYPE,
            UnknownExtension(proof.encode_for(leaf_key)),
        )
    });
    let continuity = device.map(|device| {
        Extension::Unknown(
            CONTINUITY_EXTENSION_TYPE,
            UnknownExtension(device.continuity_for(leaf_key)),
        )
    });
    Extensions::from_vec(proof.into_iter().chain(continuity).collect()).map_err(mls)
}

/// The device a leaf node proves it runs on, if it carries a valid continuity extension.
fn leaf_device(leaf: &openmls::prelude::LeafNode) -> Option<[u8; 32]> {
    let bytes = leaf.extensions().unknown(CONTINUITY_EXTENSION_TYPE)?;
    device_of(&bytes.0, leaf.signature_key().as_slice()).ok()
}

/// The admission proof a leaf node carries, checked against the meeting key.
fn leaf_proof(
    leaf: &openmls::prelude::LeafNode,
    meeting: &MeetingPublicKey,
) -> Option<Result<Proven, E2eeError>> {
    let proof = leaf.extensions().unknown(ADMISSION_PROOF_EXTENSION_TYPE)?;
    Some(verify_proof(
        &proof.0,
        meeting,
        leaf.signature_key().as_slice(),
    ))
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

fn to_bytes(msg: &MlsMessageOut) -> Result<Vec<u8>, E2eeError> {
    msg.tls_serialize_detached().map_err(mls)
}

fn kp_ref(provider: &OpenMlsRustCrypto, kp: &KeyPackage) -> Result<[u8; 32], E2eeError> {
    let r = kp.hash_ref(provider.crypto()).map_err(mls)?;
    <[u8; 32]>::try_from(r.as_slice()).map_err(|_| E2eeError::Malformed("key package ref length"))
}

fn parse_key_package(provider: &OpenMlsRustCrypto, bytes: &[u8]) -> Result<KeyPackage, E2eeError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| E2eeError::Malformed("not an MLS message"))?;
    let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
        return Err(E2eeError::Malformed("not a key package"));
    };
    let kp: KeyPackageIn = kp;
    let kp = kp
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|_| E2eeError::Malformed("invalid key package"))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(E2eeError::Malformed("key package cipher suite"));
    }
    Ok(kp)
}

/// Hash identifying a KeyPackage (the MLS-message-wrapped bytes [`Member::new_pending`]
/// returns): its RFC 9420 §5.2 `KeyPackageRef`, i.e.
/// `RefHash("MLS 1.0 KeyPackage Reference", KeyPackage)` with SHA-256. Using the standard ref
/// means Welcomes name joiners by the same value (see [`crate::inspect`]). The KeyPackage's
/// signature is verified on the way.
pub fn key_package_hash(kp_bytes: &[u8]) -> Result<[u8; 32], E2eeError> {
    let provider = OpenMlsRustCrypto::default();
    let kp = parse_key_package(&provider, kp_bytes)?;
    kp_ref(&provider, &kp)
}

impl PendingJoin {
    /// Join from a Welcome. The ratchet tree normally travels inside the Welcome (ratchet_tree
    /// extension); pass it separately only if a sender left it out.
    pub fn join(self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<Member, E2eeError> {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|_| E2eeError::Malformed("not an MLS message"))?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err(E2eeError::Malformed("not a welcome"));
        };
        let tree = match ratchet_tree {
            Some(b) => Some(
                RatchetTreeIn::tls_deserialize_exact(b)
                    .map_err(|_| E2eeError::Malformed("ratchet tree"))?,
            ),
            None => None,
        };
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, tree)
            .map_err(mls)?;
        let group = staged.into_group(&self.provider).map_err(mls)?;
        let record = record_of(&group)?;
        if self
            .expected_meeting
            .is_some_and(|expected| expected != record.meeting)
        {
            return Err(E2eeError::ForgedGroup(
                "its meeting key is not the one in this participant's link",
            ));
        }
        Member::from_group(self.provider, self.identity, group)
    }

    /// The KeyPackageRef of the KeyPackage this joiner published.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl Member {
    /// Create a new meeting group. Only a host-link holder can: the group's record is signed
    /// by the meeting key, and the creator's leaf proves the host link, which makes it a host.
    pub fn create_group(
        identity: Identity,
        group_id: &[u8],
        host_link: &HostLinkSecret,
    ) -> Result<Member, E2eeError> {
        let provider = OpenMlsRustCrypto::default();
        let leaf_key = identity.signature_public_key().to_vec();
        let record = GroupRecord::new(&host_link.meeting_key(), group_id, &leaf_key)?;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .capabilities(capabilities())
            .with_group_context_extensions(group_extensions(&record, &[])?)
            .with_leaf_node_extensions(leaf_extensions(
                Some(&EntryProof::HostLink(host_link)),
                identity.device.as_ref(),
                &leaf_key,
            )?)
            .map_err(mls)?
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .build();
        let group = MlsGroup::new_with_group_id(
            &provider,
            &identity.signer,
            &config,
            GroupId::from_slice(group_id),
            identity.credential.clone(),
        )
        .map_err(mls)?;
        Member::from_group(provider, identity, group)
    }

    /// Make a KeyPackage to post in the lobby, without a proof (a host must admit it) and
    /// without a meeting key to check the group against. See [`Member::new_pending_with`].
    pub fn new_pending(identity: Identity) -> Result<(PendingJoin, Vec<u8>), E2eeError> {
        Member::new_pending_with(identity, None, None)
    }

    /// Make a KeyPackage to post in the lobby. `proof` (from the joiner's link) lets members
    /// add it without a host's admission; `expected_meeting` (the link's `#k=`) is the only
    /// meeting key whose group this joiner will enter. Returns the state to keep until the
    /// Welcome arrives, and the KeyPackage as MLS-message bytes.
    pub fn new_pending_with(
        identity: Identity,
        proof: Option<EntryProof>,
        expected_meeting: Option<MeetingPublicKey>,
    ) -> Result<(PendingJoin, Vec<u8>), E2eeError> {
        let provider = OpenMlsRustCrypto::default();
        let leaf_extensions = leaf_extensions(
            proof.as_ref(),
            identity.device.as_ref(),
            identity.signature_public_key(),
        )?;
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .leaf_node_extensions(leaf_extensions)
            .build(
                CIPHERSUITE,
                &provider,
                &identity.signer,
                identity.credential.clone(),
            )
            .map_err(mls)?;
        let bytes = to_bytes(&MlsMessageOut::from(bundle.key_package().clone()))?;
        Ok((
            PendingJoin {
                provider,
                identity,
                expected_meeting,
            },
            bytes,
        ))
    }

    fn from_group(
        provider: OpenMlsRustCrypto,
        identity: Identity,
        group: MlsGroup,
    ) -> Result<Member, E2eeError> {
        // A group without a record signed by the meeting key, or with a promotion the meeting
        // key did not sign, was not opened by a host: refuse to join it.
        let record = record_of(&group)?;
        record.verify(group.group_id().as_slice())?;
        if hosts_of(&group)?
            .iter()
            .any(|e| !e.verifies(&record.meeting, group.group_id().as_slice()))
        {
            return Err(E2eeError::ForgedGroup(
                "its host set carries a promotion no host signed",
            ));
        }
        let (epoch, base_key, members) = media_inputs(&provider, &group)?;
        let media = MediaKeys::new(group.own_leaf_index().u32(), epoch, base_key, members)?;
        Ok(Member {
            provider,
            identity,
            group,
            meeting: record.meeting,
            admitted: HashMap::new(),
            locked: false,
            media,
            departed: Vec::new(),
            barred: HashSet::new(),
        })
    }

    /// Current MLS epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// This member's leaf index.
    pub fn leaf_index(&self) -> u32 {
        self.group.own_leaf_index().u32()
    }

    /// Group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// False once a merged commit removed this member.
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// This member's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// `(leaf, display name, participant id)` of every member, in leaf order. A credential
    /// that does not decode shows as an empty name and id rather than hiding the member.
    pub fn members(&self) -> Vec<(u32, String, String)> {
        self.group
            .members()
            .map(|m| {
                let (name, id) = decode_credential(&m.credential).unwrap_or_default();
                (m.index.u32(), name, id)
            })
            .collect()
    }

    /// The meeting key this group was opened under (its record's).
    pub fn meeting_key(&self) -> MeetingPublicKey {
        self.meeting
    }

    /// Leaves whose admission proof shows the host link.
    pub fn link_hosts(&self) -> Vec<u32> {
        self.group
            .members()
            .filter(|m| {
                self.group
                    .public_group()
                    .leaf(m.index)
                    .and_then(|leaf| leaf_proof(leaf, &self.meeting))
                    == Some(Ok(Proven::HostLink))
            })
            .map(|m| m.index.u32())
            .collect()
    }

    /// Leaves of the current hosts: host-link holders and the co-hosts they promoted.
    pub fn hosts(&self) -> Vec<u32> {
        let promoted: HashSet<[u8; 32]> = hosts_of(&self.group)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.verifies(&self.meeting, self.group_id()))
            .map(|e| e.key)
            .collect();
        let link_hosts = self.link_hosts();
        self.group
            .members()
            .filter(|m| {
                link_hosts.contains(&m.index.u32())
                    || <[u8; 32]>::try_from(m.signature_key.as_slice())
                        .is_ok_and(|k| promoted.contains(&k))
            })
            .map(|m| m.index.u32())
            .collect()
    }

    /// How a KeyPackage (MLS-message bytes) may enter at `now_ms` (Unix milliseconds): by a
    /// host's Admission of it, or by its own valid proof. `Err` says why not.
    pub fn admissibility(&self, key_package: &[u8], now_ms: u64) -> Result<(), E2eeError> {
        let kp = parse_key_package(&self.provider, key_package)?;
        self.admissible(&kp, now_ms)
    }

    fn admissible(&self, kp: &KeyPackage, now_ms: u64) -> Result<(), E2eeError> {
        if self.admitted.contains_key(&kp_ref(&self.provider, kp)?) {
            return Ok(());
        }
        let name = decode_credential(kp.leaf_node().credential())
            .map(|(name, _)| name)
            .unwrap_or_default();
        // A forged, copied, expired or lobby-only proof admits no more than none at all.
        match leaf_proof(kp.leaf_node(), &self.meeting) {
            Some(Ok(proven)) if proven.admits(now_ms / 1000) => Ok(()),
            _ => Err(E2eeError::UnadmittedAdd { name }),
        }
    }

    /// Whether a KeyPackage comes back from the device of a member: one whose leaf left the
    /// group within [`REJOIN_WINDOW_MS`] at `now_ms`, or one still in the group (its old leaf
    /// goes at the next commit), and whom no host barred. Returns the participant id of the
    /// leaf it replaces. A departed device comes back once: a second KeyPackage from it waits
    /// for a host like anyone else.
    pub fn returning(&mut self, key_package: &[u8], now_ms: u64) -> Result<String, E2eeError> {
        let kp = parse_key_package(&self.provider, key_package)?;
        let device = leaf_device(kp.leaf_node())
            .ok_or(E2eeError::NotReturning("its KeyPackage proves no device"))?;
        if self.barred.contains(&device) {
            return Err(E2eeError::NotReturning("a host removed this device"));
        }
        if let Some(at) = self
            .departed
            .iter()
            .position(|d| d.device == device && now_ms.saturating_sub(d.at_ms) < REJOIN_WINDOW_MS)
        {
            return Ok(self.departed.remove(at).participant_id);
        }
        self.device_leaves()
            .find(|(leaf, dev, _)| *dev == device && *leaf != self.leaf_index())
            .map(|(_, _, pid)| pid)
            .ok_or(E2eeError::NotReturning("no member left from this device"))
    }

    /// `(leaf, device, participant id)` of every member whose leaf proves a device.
    fn device_leaves(&self) -> impl Iterator<Item = (u32, [u8; 32], String)> + '_ {
        let tree = self.group.public_group();
        self.group.members().filter_map(|m| {
            let leaf = tree.leaf(m.index)?;
            let device = leaf_device(leaf)?;
            let (_, pid) = decode_credential(&m.credential).unwrap_or_default();
            Some((m.index.u32(), device, pid))
        })
    }

    /// Host only: the device of `participant_id` (in the group or lately departed) may not
    /// come back without the lobby, for any member. Returns the application message telling
    /// the others, or `None` when that participant proved no device.
    pub fn bar(&mut self, participant_id: &str) -> Result<Option<Vec<u8>>, E2eeError> {
        if !self.is_host(self.leaf_index()) {
            return Err(E2eeError::NotHost);
        }
        let Some(device) = self.refuse_return(participant_id) else {
            return Ok(None);
        };
        Ok(Some(self.send_app(&AppPayload::Bar(device))?))
    }

    /// This member alone will not take `participant_id`'s device (in the group or lately
    /// departed) for a returning one, say because the server reports a host removed it: saying
    /// so can only keep someone out. Returns the device, if that participant proved one.
    pub fn refuse_return(&mut self, participant_id: &str) -> Option<[u8; 32]> {
        let device = self
            .device_leaves()
            .find(|(_, _, pid)| pid == participant_id)
            .map(|(_, device, _)| device)
            .or_else(|| {
                self.departed
                    .iter()
                    .find(|d| d.participant_id == participant_id)
                    .map(|d| d.device)
            });
        let device = device?;
        self.barred.insert(device);
        self.departed.retain(|d| d.device != device);
        Some(device)
    }

    /// Whether `leaf` is a host in the current epoch.
    pub fn is_host(&self, leaf: u32) -> bool {
        self.hosts().contains(&leaf)
    }

    /// Short code every member of this epoch sees identically: 6 groups of 5 digits.
    pub fn security_code(&self) -> String {
        security_code::digits(self.group.epoch_authenticator().as_slice())
    }

    /// The same check as 8 emoji.
    pub fn security_emoji(&self) -> String {
        security_code::emoji(self.group.epoch_authenticator().as_slice())
    }

    // ----- application messages -------------------------------------------------------------

    fn send_app(&mut self, payload: &AppPayload) -> Result<Vec<u8>, E2eeError> {
        if !self.group.is_active() {
            return Err(E2eeError::NotMember);
        }
        let msg = self
            .group
            .create_message(&self.provider, &self.identity.signer, &payload.encode())
            .map_err(mls)?;
        to_bytes(&msg)
    }

    /// Host only: admit the KeyPackage with this hash (see [`key_package_hash`]).
    pub fn admit(&mut self, kp_hash: [u8; 32]) -> Result<Vec<u8>, E2eeError> {
        if !self.is_host(self.leaf_index()) {
            return Err(E2eeError::NotHost);
        }
        if self.locked {
            return Err(E2eeError::Locked);
        }
        let bytes = self.send_app(&AppPayload::Admission(kp_hash))?;
        // Own messages are not processed by their author, so record it here.
        self.admitted.insert(kp_hash, self.leaf_index());
        Ok(bytes)
    }

    /// Host only: lock (no Add is accepted by any member) or unlock the meeting. Returns the
    /// application message that tells the other members.
    pub fn set_locked(&mut self, locked: bool) -> Result<Vec<u8>, E2eeError> {
        if !self.is_host(self.leaf_index()) {
            return Err(E2eeError::NotHost);
        }
        let bytes = self.send_app(&AppPayload::Lock(locked))?;
        self.locked = locked;
        Ok(bytes)
    }

    /// Whether a host locked the meeting.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Encrypt a chat message for the group.
    pub fn encrypt_chat(&mut self, text: &str) -> Result<Vec<u8>, E2eeError> {
        self.send_app(&AppPayload::Chat(text.to_owned()))
    }

    /// Encrypt a reaction for the group.
    pub fn encrypt_reaction(&mut self, emoji: &str) -> Result<Vec<u8>, E2eeError> {
        if emoji.len() > crate::admission::MAX_REACTION_LEN {
            return Err(E2eeError::Malformed("reaction too long"));
        }
        self.send_app(&AppPayload::Reaction(emoji.to_owned()))
    }

    // ----- commits ---------------------------------------------------------------------------

    fn finish_commit(
        &mut self,
        bundle: openmls::prelude::CommitMessageBundle,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), E2eeError> {
        let (commit, welcome, _group_info) = bundle.into_messages();
        let commit = to_bytes(&commit)?;
        let welcome = welcome.as_ref().map(to_bytes).transpose()?;
        Ok((commit, welcome))
    }

    fn ensure_can_commit(&self) -> Result<(), E2eeError> {
        if !self.group.is_active() {
            return Err(E2eeError::NotMember);
        }
        if self.group.pending_commit().is_some() {
            return Err(E2eeError::PendingCommit("a commit is already pending"));
        }
        Ok(())
    }

    /// Commit adding the given KeyPackages (MLS-message bytes). Refuses, before anything is
    /// built, any KeyPackage no host admitted and without a valid proof at `now_ms` (Unix
    /// milliseconds). Returns (commit, welcome); the commit stays pending until
    /// [`Member::merge_pending_commit`].
    pub fn commit_add(
        &mut self,
        key_packages: &[&[u8]],
        now_ms: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), E2eeError> {
        self.ensure_can_commit()?;
        if key_packages.is_empty() {
            return Err(E2eeError::Malformed("no key packages"));
        }
        if self.locked {
            return Err(E2eeError::Locked);
        }
        let mut kps = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let kp = parse_key_package(&self.provider, bytes)?;
            self.admissible(&kp, now_ms)?;
            kps.push(kp);
        }
        let bundle = self
            .group
            .commit_builder()
            // Never sweep in proposals someone else queued: only what we vetted goes in.
            .consume_proposal_store(false)
            .propose_adds(kps)
            .load_psks(self.provider.storage())
            .map_err(mls)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.identity.signer,
                |_| true,
            )
            .map_err(mls)?
            .stage_commit(&self.provider)
            .map_err(mls)?;
        let (commit, welcome) = self.finish_commit(bundle)?;
        let welcome = welcome.ok_or(E2eeError::Mls("add commit without welcome".into()))?;
        Ok((commit, welcome))
    }

    /// Test hook: what a malicious insider could build, skipping the admission check.
    ///
    /// **Never for production.** Compiled only for this crate's unit tests and with the
    /// `insecure-test-hooks` cargo feature, which exists so that end-to-end tests can play a
    /// compromised participant that commits a KeyPackage no host admitted (honest members must
    /// refuse the Commit with [`E2eeError::UnadmittedAdd`]). No production crate may enable it.
    #[cfg(any(test, feature = "insecure-test-hooks"))]
    pub fn commit_add_unchecked(
        &mut self,
        key_packages: &[&[u8]],
    ) -> Result<(Vec<u8>, Vec<u8>), E2eeError> {
        for bytes in key_packages {
            let kp = parse_key_package(&self.provider, bytes)?;
            self.admitted.insert(kp_ref(&self.provider, &kp)?, u32::MAX);
        }
        let locked = std::mem::take(&mut self.locked);
        let out = self.commit_add(key_packages, 0);
        self.locked = locked;
        self.admitted.retain(|_, by| *by != u32::MAX);
        out
    }

    /// Test hook: send an arbitrary application payload (e.g. a forged Admission).
    #[cfg(test)]
    pub(crate) fn send_payload_unchecked(
        &mut self,
        payload: &AppPayload,
    ) -> Result<Vec<u8>, E2eeError> {
        self.send_app(payload)
    }

    /// Commit removing the given leaves. Any member may remove (e.g. the server reports a
    /// participant gone); removal only ever shrinks who holds the keys.
    pub fn commit_remove(&mut self, leaves: &[u32]) -> Result<Vec<u8>, E2eeError> {
        self.ensure_can_commit()?;
        if leaves.is_empty() {
            return Err(E2eeError::Malformed("no leaves"));
        }
        let present: BTreeSet<u32> = self.group.members().map(|m| m.index.u32()).collect();
        for leaf in leaves {
            if !present.contains(leaf) || *leaf == self.leaf_index() {
                return Err(E2eeError::NoSuchLeaf(*leaf));
            }
        }
        let bundle = self
            .group
            .commit_builder()
            .consume_proposal_store(false)
            .propose_removals(leaves.iter().copied().map(LeafNodeIndex::new))
            .load_psks(self.provider.storage())
            .map_err(mls)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.identity.signer,
                |_| true,
            )
            .map_err(mls)?
            .stage_commit(&self.provider)
            .map_err(mls)?;
        Ok(self.finish_commit(bundle)?.0)
    }

    /// Host-link holder only: commit promoting `leaf` to co-host, signed with the meeting key
    /// of `host_link` (which must be this group's). Entries of members who left are dropped on
    /// the way, so the set does not grow without bound.
    pub fn grant_host(
        &mut self,
        leaf: u32,
        host_link: &HostLinkSecret,
    ) -> Result<Vec<u8>, E2eeError> {
        let meeting_key = host_link.meeting_key();
        if meeting_key.public() != self.meeting {
            return Err(E2eeError::NotHost);
        }
        let target = self
            .group
            .members()
            .find(|m| m.index.u32() == leaf)
            .ok_or(E2eeError::NoSuchLeaf(leaf))?;
        let entry = HostEntry::new(&meeting_key, self.group_id(), &target.signature_key)?;
        let mut next = self.present_host_entries()?;
        next.push(entry);
        self.commit_hosts(next)
    }

    /// Host-link holder only: commit taking co-host status back from `leaf`. Its later
    /// Admissions are refused by every member.
    pub fn revoke_host(&mut self, leaf: u32) -> Result<Vec<u8>, E2eeError> {
        let target = self
            .group
            .members()
            .find(|m| m.index.u32() == leaf)
            .ok_or(E2eeError::NoSuchLeaf(leaf))?;
        let next: Vec<HostEntry> = self
            .present_host_entries()?
            .into_iter()
            .filter(|e| e.key[..] != target.signature_key[..])
            .collect();
        self.commit_hosts(next)
    }

    /// The host set's entries of current members.
    fn present_host_entries(&self) -> Result<Vec<HostEntry>, E2eeError> {
        let member_keys: BTreeSet<Vec<u8>> =
            self.group.members().map(|m| m.signature_key).collect();
        Ok(hosts_of(&self.group)?
            .into_iter()
            .filter(|e| member_keys.contains(&e.key[..]))
            .collect())
    }

    fn commit_hosts(&mut self, hosts: Vec<HostEntry>) -> Result<Vec<u8>, E2eeError> {
        self.ensure_can_commit()?;
        if !self.link_hosts().contains(&self.leaf_index()) {
            return Err(E2eeError::NotHost);
        }
        let record = record_of(&self.group)?;
        let bundle = self
            .group
            .commit_builder()
            .consume_proposal_store(false)
            .propose_group_context_extensions(group_extensions(&record, &hosts)?)
            .map_err(mls)?
            .load_psks(self.provider.storage())
            .map_err(mls)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.identity.signer,
                |_| true,
            )
            .map_err(mls)?
            .stage_commit(&self.provider)
            .map_err(mls)?;
        Ok(self.finish_commit(bundle)?.0)
    }

    /// The delivery service accepted our pending commit: apply it. `now_ms` starts the grace
    /// period of the previous epoch's media keys.
    pub fn merge_pending_commit(&mut self, now_ms: u64) -> Result<Processed, E2eeError> {
        let staged = self
            .group
            .pending_commit()
            .ok_or(E2eeError::PendingCommit("no pending commit"))?;
        let summary = CommitSummary::of(&self.provider, &self.group, staged)?;
        self.group
            .merge_pending_commit(&self.provider)
            .map_err(mls)?;
        self.after_merge(summary, self.leaf_index(), now_ms)
    }

    /// The delivery service refused our pending commit (another commit won the epoch): drop
    /// it. The caller then processes the winning commit and retries.
    pub fn discard_pending_commit(&mut self) -> Result<(), E2eeError> {
        if self.group.pending_commit().is_none() {
            return Err(E2eeError::PendingCommit("no pending commit"));
        }
        self.group
            .clear_pending_commit(self.provider.storage())
            .map_err(mls)
    }

    // ----- incoming --------------------------------------------------------------------------

    /// Process an MLS message from the delivery service. Commits are vetted (admission, host
    /// rules, proposal types) and merged only if they pass; a refused commit leaves the group
    /// exactly as it was.
    pub fn process(&mut self, bytes: &[u8], now_ms: u64) -> Result<Processed, E2eeError> {
        if !self.group.is_active() {
            return Err(E2eeError::NotMember);
        }
        let msg = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|_| E2eeError::Malformed("not an MLS message"))?;
        let msg: ProtocolMessage = match msg.extract() {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(E2eeError::Malformed("not a group message")),
        };
        if msg.group_id() != self.group.group_id() {
            return Err(E2eeError::WrongGroup);
        }
        let (got, current) = (msg.epoch().as_u64(), self.epoch());
        if got > current {
            return Err(E2eeError::WrongEpoch { got, current });
        }
        if msg.is_handshake_message() && got < current {
            return Err(E2eeError::StaleEpoch { got, current });
        }

        let processed = self
            .group
            .process_message(&self.provider, msg)
            .map_err(mls)?;
        let sender = processed.sender().clone();
        let msg_epoch = processed.epoch().as_u64();
        let sender_name = decode_credential(processed.credential())
            .map(|(name, _)| name)
            .unwrap_or_default();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let Sender::Member(from) = sender else {
                    return Err(E2eeError::NotMember);
                };
                let from_leaf = from.u32();
                match AppPayload::decode(&app.into_bytes())? {
                    AppPayload::Admission(kp_hash) => {
                        // Host status is judged on the current tree; an admission from an older
                        // epoch could come from a leaf index since reused by someone else.
                        if msg_epoch != self.epoch() || !self.is_host(from_leaf) {
                            return Err(E2eeError::NotHost);
                        }
                        self.admitted.insert(kp_hash, from_leaf);
                        Ok(Processed::Admission {
                            kp_hash,
                            by_leaf: from_leaf,
                        })
                    }
                    AppPayload::Lock(locked) => {
                        if msg_epoch != self.epoch() || !self.is_host(from_leaf) {
                            return Err(E2eeError::NotHost);
                        }
                        self.locked = locked;
                        Ok(Processed::LockChanged {
                            locked,
                            by_leaf: from_leaf,
                        })
                    }
                    AppPayload::Bar(device) => {
                        if msg_epoch != self.epoch() || !self.is_host(from_leaf) {
                            return Err(E2eeError::NotHost);
                        }
                        self.barred.insert(device);
                        self.departed.retain(|d| d.device != device);
                        Ok(Processed::Barred { by_leaf: from_leaf })
                    }
                    AppPayload::Chat(text) => Ok(Processed::Chat {
                        from_leaf,
                        sender_name,
                        text,
                    }),
                    AppPayload::Reaction(emoji) => Ok(Processed::Reaction {
                        from_leaf,
                        sender_name,
                        emoji,
                    }),
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let committer = match sender {
                    Sender::Member(l) => l.u32(),
                    // An external commit adds its own sender with no KeyPackage a host saw.
                    Sender::NewMemberCommit => {
                        return Err(E2eeError::UnadmittedAdd { name: sender_name })
                    }
                    _ => return Err(E2eeError::NotMember),
                };
                let summary = self.vet_commit(committer, &staged, now_ms)?;
                self.group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(mls)?;
                self.after_merge(summary, committer, now_ms)
            }
            // Never stored: a commit must carry everything inline so it can be vetted as a
            // whole, and an unvetted queued Add must not ride along in our next commit.
            ProcessedMessageContent::ProposalMessage(_)
            | ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                Err(E2eeError::UnsupportedProposal)
            }
            _ => Ok(Processed::Own),
        }
    }

    /// The lobby lock and host rules. Returns what the commit does if it may be merged.
    fn vet_commit(
        &self,
        committer: u32,
        staged: &StagedCommit,
        now_ms: u64,
    ) -> Result<CommitSummary, E2eeError> {
        let summary = CommitSummary::of(&self.provider, &self.group, staged)?;
        if self.locked && !summary.added.is_empty() {
            return Err(E2eeError::Locked);
        }
        for kp in &summary.added {
            self.admissible(kp, now_ms)?;
        }
        if let Some(new_hosts) = &summary.new_hosts {
            // Only a host-link holder changes the host set, and only with entries the meeting
            // key signed for this group (a co-host cannot promote or demote anyone).
            if !self.link_hosts().contains(&committer) {
                return Err(E2eeError::NotHost);
            }
            if new_hosts
                .iter()
                .any(|e| !e.verifies(&self.meeting, self.group_id()))
            {
                return Err(E2eeError::ForgedProof(
                    "a promotion the meeting key did not sign",
                ));
            }
        }
        Ok(summary)
    }

    fn after_merge(
        &mut self,
        summary: CommitSummary,
        committer: u32,
        now_ms: u64,
    ) -> Result<Processed, E2eeError> {
        for kp in &summary.added {
            self.admitted.remove(&kp_ref(&self.provider, kp)?);
        }
        self.departed
            .retain(|d| now_ms.saturating_sub(d.at_ms) < REJOIN_WINDOW_MS);
        for (device, participant_id) in &summary.removed_devices {
            self.departed.push(Departed {
                device: *device,
                participant_id: participant_id.clone(),
                at_ms: now_ms,
            });
        }
        let epoch = self.epoch();
        if !self.group.is_active() {
            // Removed: keep the old media keys (they are useless for later epochs anyway).
            return Ok(Processed::CommitMerged {
                epoch,
                added: Vec::new(),
                removed: summary.removed,
                self_removed: true,
            });
        }
        let (epoch, base_key, members) = media_inputs(&self.provider, &self.group)?;
        self.media
            .advance(self.leaf_index(), epoch, base_key, members, now_ms)?;

        let added_keys: Vec<&[u8]> = summary
            .added
            .iter()
            .map(|kp| kp.leaf_node().signature_key().as_slice())
            .collect();
        let added: Vec<(u32, String)> = self
            .group
            .members()
            .filter(|m| added_keys.contains(&m.signature_key.as_slice()))
            .map(|m| {
                let name = decode_credential(&m.credential)
                    .map(|(n, _)| n)
                    .unwrap_or_default();
                (m.index.u32(), name)
            })
            .collect();
        if let (Some(new_hosts), true, true) = (
            &summary.new_hosts,
            added.is_empty(),
            summary.removed.is_empty(),
        ) {
            let keys =
                |set: &[HostEntry]| -> HashSet<[u8; 32]> { set.iter().map(|e| e.key).collect() };
            let (old, new) = (keys(&summary.old_hosts), keys(new_hosts));
            let leaves_of = |set: &HashSet<[u8; 32]>, not_in: &HashSet<[u8; 32]>| -> Vec<u32> {
                self.group
                    .members()
                    .filter(|m| {
                        <[u8; 32]>::try_from(m.signature_key.as_slice())
                            .is_ok_and(|k| set.contains(&k) && !not_in.contains(&k))
                    })
                    .map(|m| m.index.u32())
                    .collect()
            };
            return Ok(Processed::HostsChanged {
                granted: leaves_of(&new, &old),
                revoked: leaves_of(&old, &new),
                by_leaf: committer,
                epoch,
            });
        }
        Ok(Processed::CommitMerged {
            epoch,
            added,
            removed: summary.removed,
            self_removed: false,
        })
    }

    // ----- media -----------------------------------------------------------------------------

    /// SFrame-protect a media frame with this member's key for the current epoch.
    pub fn encrypt_frame(&mut self, kind: MediaKind, frame: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let mut out = Vec::with_capacity(frame.len() + 32);
        self.encrypt_frame_into(kind, frame, &mut out)?;
        Ok(out)
    }

    /// As [`Member::encrypt_frame`], writing into `out` (cleared first) so a media pipeline can
    /// reuse one buffer.
    pub fn encrypt_frame_into(
        &mut self,
        kind: MediaKind,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), E2eeError> {
        if !self.group.is_active() {
            return Err(E2eeError::NotMember);
        }
        out.clear();
        self.media.encrypt_into(kind, frame, out)
    }

    /// Decrypt a media frame from any member of the current epoch, or of a replaced epoch
    /// still inside its grace period at `now_ms`.
    pub fn decrypt_frame(
        &mut self,
        kind: MediaKind,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<DecryptedFrame, E2eeError> {
        self.media.decrypt(kind, bytes, now_ms)
    }

    /// Epoch whose key this member currently sends media with.
    pub fn media_epoch(&self) -> u64 {
        self.media.epoch()
    }
}

/// What a commit changes, gathered before merging (afterwards the proposals are gone).
struct CommitSummary {
    added: Vec<KeyPackage>,
    removed: Vec<u32>,
    /// Devices (and participant ids) of the removed leaves that proved one.
    removed_devices: Vec<([u8; 32], String)>,
    old_hosts: Vec<HostEntry>,
    /// Host set after the commit, when it carries a GroupContextExtensions proposal.
    new_hosts: Option<Vec<HostEntry>>,
}

impl CommitSummary {
    fn of(
        _provider: &OpenMlsRustCrypto,
        group: &MlsGroup,
        staged: &StagedCommit,
    ) -> Result<Self, E2eeError> {
        let mut s = CommitSummary {
            added: Vec::new(),
            removed: Vec::new(),
            removed_devices: Vec::new(),
            old_hosts: hosts_of(group)?,
            new_hosts: None,
        };
        for queued in staged.queued_proposals() {
            match queued.proposal() {
                Proposal::Add(add) => s.added.push(add.key_package().clone()),
                Proposal::Remove(r) => {
                    s.removed.push(r.removed().u32());
                    if let Some(leaf) = group.public_group().leaf(r.removed()) {
                        if let Some(device) = leaf_device(leaf) {
                            let (_, pid) = decode_credential(leaf.credential()).unwrap_or_default();
                            s.removed_devices.push((device, pid));
                        }
                    }
                }
                Proposal::Update(_) => {}
                Proposal::GroupContextExtensions(_) => {
                    let new = staged.group_context().extensions();
                    // The proposal replaces the whole list: anything but the host set changing
                    // (the group record above all) would be an unvetted change to the group.
                    if non_host_extensions(new) != non_host_extensions(group.extensions()) {
                        return Err(E2eeError::UnsupportedProposal);
                    }
                    s.new_hosts = Some(hosts_in(new)?);
                }
                _ => return Err(E2eeError::UnsupportedProposal),
            }
        }
        Ok(s)
    }
}

fn non_host_extensions(ext: &Extensions<GroupContext>) -> Vec<&Extension> {
    ext.iter()
        .filter(|e| !matches!(e, Extension::Unknown(t, _) if *t == HOSTS_EXTENSION_TYPE))
        .collect()
}

fn hosts_in(ext: &Extensions<GroupContext>) -> Result<Vec<HostEntry>, E2eeError> {
    let hosts = ext
        .unknown(HOSTS_EXTENSION_TYPE)
        .ok_or(E2eeError::Malformed("missing host set"))?;
    decode_hosts(&hosts.0)
}

fn hosts_of(group: &MlsGroup) -> Result<Vec<HostEntry>, E2eeError> {
    hosts_in(group.extensions())
}

fn record_of(group: &MlsGroup) -> Result<GroupRecord, E2eeError> {
    let record = group
        .extensions()
        .unknown(GROUP_RECORD_EXTENSION_TYPE)
        .ok_or(E2eeError::ForgedGroup("it carries no group record"))?;
    GroupRecord::decode(&record.0)
}

fn media_inputs(
    provider: &OpenMlsRustCrypto,
    group: &MlsGroup,
) -> Result<(u64, Vec<u8>, BTreeSet<u32>), E2eeError> {
    let base_key = group
        .export_secret(provider.crypto(), SFRAME_EXPORTER_LABEL, &[], KEY_LEN)
        .map_err(mls)?;
    let members = group.members().map(|m| m.index.u32()).collect();
    Ok((group.epoch().as_u64(), base_key, members))
}
