//! Whole-protocol tests: several members talking through a "delivery service" that is just
//! the test body handing bytes around (and, where noted, misbehaving).

use proptest::prelude::*;

use crate::admission::AppPayload;
use crate::inspect::{inspect, MessageKind};
use crate::sframe_keys::GRACE_PERIOD_MS;
use crate::*;

const GID: &[u8] = b"meeting-1";

fn ident(name: &str) -> Identity {
    Identity::generate(name, &format!("pid-{name}")).unwrap()
}

/// The host link of the meeting these tests run.
fn link() -> &'static HostLinkSecret {
    static LINK: std::sync::OnceLock<HostLinkSecret> = std::sync::OnceLock::new();
    LINK.get_or_init(|| HostLinkSecret::generate().unwrap())
}

fn host() -> Member {
    Member::create_group(ident("alice"), GID, link()).unwrap()
}

/// Host admits `name`, `committer` commits the add, everyone in `others` processes the
/// admission and the commit, the joiner joins. Returns the joiner.
fn admit_and_add(
    host_idx: usize,
    committer_idx: usize,
    members: &mut [Member],
    name: &str,
    now: u64,
) -> Member {
    admit_and_add_identity(host_idx, committer_idx, members, ident(name), now)
}

fn admit_and_add_identity(
    host_idx: usize,
    committer_idx: usize,
    members: &mut [Member],
    identity: Identity,
    now: u64,
) -> Member {
    let name = identity.name().to_owned();
    let (pending, kp) = Member::new_pending(identity).unwrap();
    let hash = key_package_hash(&kp).unwrap();
    let admission = members[host_idx].admit(hash).unwrap();
    for (i, m) in members.iter_mut().enumerate() {
        if i != host_idx {
            let p = m.process(&admission, now).unwrap();
            assert!(matches!(p, Processed::Admission { kp_hash, .. } if kp_hash == hash));
        }
    }
    let (commit, welcome) = members[committer_idx].commit_add(&[&kp], 0).unwrap();
    assert!(matches!(
        members[committer_idx].merge_pending_commit(now).unwrap(),
        Processed::CommitMerged { .. }
    ));
    for (i, m) in members.iter_mut().enumerate() {
        if i != committer_idx {
            match m.process(&commit, now).unwrap() {
                Processed::CommitMerged { added, .. } => {
                    assert_eq!(added.len(), 1);
                    assert_eq!(added[0].1, name.as_str());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let info = inspect(&welcome).unwrap();
    assert_eq!(info.kind, MessageKind::Welcome);
    assert_eq!(info.welcome_key_package_refs, vec![hash]);
    pending.join(&welcome, None).unwrap()
}

/// Alice (host), Bob, Carol in one group; Carol added by Bob (non-host committer, host
/// admission).
fn three() -> Vec<Member> {
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", 0);
    ms.push(bob);
    let carol = admit_and_add(0, 1, &mut ms, "carol", 0);
    ms.push(carol);
    ms
}

fn assert_frames_flow(ms: &mut [Member], now: u64) {
    for s in 0..ms.len() {
        let frame = format!("frame from {s}").into_bytes();
        let enc = ms[s].encrypt_frame(MediaKind::Raw, &frame).unwrap();
        for r in 0..ms.len() {
            if r != s {
                let d = ms[r].decrypt_frame(MediaKind::Raw, &enc, now).unwrap();
                assert_eq!(d.plaintext, frame);
                assert_eq!(d.sender_leaf, ms[s].leaf_index());
                assert_eq!(d.epoch, ms[s].epoch());
            }
        }
    }
}

#[test]
fn three_members_agree_on_epoch_code_members_and_frames() {
    let mut ms = three();
    let e = ms[0].epoch();
    assert_eq!(e, 2);
    assert!(ms.iter().all(|m| m.epoch() == e));
    let code = ms[0].security_code();
    assert!(ms.iter().all(|m| m.security_code() == code));
    assert!(ms
        .iter()
        .all(|m| m.security_emoji() == ms[0].security_emoji()));
    assert_eq!(code.split(' ').count(), 6);
    let names: Vec<_> = ms[0]
        .members()
        .into_iter()
        .map(|(_, n, id)| (n, id))
        .collect();
    assert_eq!(
        names,
        vec![
            ("alice".into(), "pid-alice".into()),
            ("bob".into(), "pid-bob".into()),
            ("carol".into(), "pid-carol".into())
        ]
    );
    assert!(ms.iter().all(|m| m.members() == ms[0].members()));
    assert!(ms.iter().all(|m| m.hosts() == vec![0]));
    assert_frames_flow(&mut ms, 0);

    // Chat and reactions carry sender identity.
    let chat = ms[2].encrypt_chat("hi all").unwrap();
    assert_eq!(inspect(&chat).unwrap().kind, MessageKind::Application);
    for m in ms.iter_mut().take(2) {
        assert_eq!(
            m.process(&chat, 0).unwrap(),
            Processed::Chat {
                from_leaf: 2,
                sender_name: "carol".into(),
                text: "hi all".into()
            }
        );
    }
    let r = ms[1].encrypt_reaction("\u{1F44D}").unwrap();
    assert!(matches!(
        ms[0].process(&r, 0).unwrap(),
        Processed::Reaction { from_leaf: 1, .. }
    ));
}

#[test]
fn remove_rekeys_and_removed_member_cannot_decrypt_later_frames() {
    let mut ms = three();
    let old_code = ms[0].security_code();
    let commit = ms[0].commit_remove(&[2]).unwrap();
    let info = inspect(&commit).unwrap();
    assert_eq!((info.kind, info.epoch), (MessageKind::Commit, Some(2)));
    assert_eq!(info.group_id.as_deref(), Some(GID));
    ms[0].merge_pending_commit(0).unwrap();
    assert!(matches!(
        ms[1].process(&commit, 0).unwrap(),
        Processed::CommitMerged { epoch: 3, ref removed, self_removed: false, .. } if removed == &vec![2]
    ));
    assert!(matches!(
        ms[2].process(&commit, 0).unwrap(),
        Processed::CommitMerged {
            self_removed: true,
            ..
        }
    ));
    assert!(!ms[2].is_active());
    assert_ne!(ms[0].security_code(), old_code);
    assert_eq!(ms[0].security_code(), ms[1].security_code());

    let enc = ms[0]
        .encrypt_frame(MediaKind::Opus, b"\x78after removal")
        .unwrap();
    assert_eq!(
        ms[1]
            .decrypt_frame(MediaKind::Opus, &enc, 0)
            .unwrap()
            .plaintext,
        b"\x78after removal"
    );
    assert!(ms[2].decrypt_frame(MediaKind::Opus, &enc, 0).is_err());
    // The removed member cannot send chat or commits any more either.
    assert_eq!(ms[2].encrypt_chat("x"), Err(E2eeError::NotMember));
    assert_eq!(
        ms[2].encrypt_frame(MediaKind::Raw, b"x"),
        Err(E2eeError::NotMember)
    );
}

#[test]
fn late_joiner_cannot_decrypt_earlier_frames() {
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", 0);
    ms.push(bob);
    let before = ms[0]
        .encrypt_frame(MediaKind::Raw, b"secret before carol")
        .unwrap();
    assert!(ms[1].decrypt_frame(MediaKind::Raw, &before, 0).is_ok());
    let mut carol = admit_and_add(0, 0, &mut ms, "carol", 0);
    assert!(carol.decrypt_frame(MediaKind::Raw, &before, 0).is_err());
    let after = ms[0].encrypt_frame(MediaKind::Raw, b"after").unwrap();
    assert_eq!(
        carol
            .decrypt_frame(MediaKind::Raw, &after, 0)
            .unwrap()
            .plaintext,
        b"after"
    );
}

#[test]
fn commit_with_unadmitted_add_is_refused_and_group_keeps_working() {
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", 0);
    ms.push(bob);
    let carol = admit_and_add(0, 0, &mut ms, "carol", 0);
    ms.push(carol);
    let epoch = ms[0].epoch();
    let code = ms[0].security_code();

    // The honest API refuses outright.
    let (mallory_pending, mallory_kp) = Member::new_pending(ident("mallory")).unwrap();
    assert_eq!(
        ms[1].commit_add(&[&mallory_kp], 0),
        Err(E2eeError::UnadmittedAdd {
            name: "mallory".into()
        })
    );

    // A compromised Bob builds it anyway; the server fans it out.
    let (evil_commit, evil_welcome) = ms[1].commit_add_unchecked(&[&mallory_kp]).unwrap();
    let refused = Err(E2eeError::UnadmittedAdd {
        name: "mallory".into(),
    });
    assert_eq!(ms[0].process(&evil_commit, 0), refused);
    assert_eq!(ms[2].process(&evil_commit, 0), refused);
    assert_eq!(ms[0].epoch(), epoch);
    assert_eq!(ms[0].security_code(), code);

    // Mallory can join Bob's fork but learns nothing the honest members send.
    let mut mallory = mallory_pending.join(&evil_welcome, None).unwrap();
    let a_frame = ms[0].encrypt_frame(MediaKind::Raw, b"private").unwrap();
    assert!(mallory.decrypt_frame(MediaKind::Raw, &a_frame, 0).is_err());
    let a_chat = ms[0].encrypt_chat("private chat").unwrap();
    assert!(mallory.process(&a_chat, 0).is_err());

    // Honest members (Bob drops his commit) keep working in the same epoch...
    ms[1].discard_pending_commit().unwrap();
    assert_eq!(
        ms[2].process(&a_chat, 0).unwrap(),
        Processed::Chat {
            from_leaf: 0,
            sender_name: "alice".into(),
            text: "private chat".into()
        }
    );
    assert!(matches!(
        ms[1].process(&a_chat, 0).unwrap(),
        Processed::Chat { .. }
    ));
    assert_frames_flow(&mut ms, 0);
    // ...and can still move on with a legitimate commit.
    let dave = admit_and_add(0, 2, &mut ms, "dave", 0);
    assert_eq!(dave.epoch(), epoch + 1);
    assert!(ms.iter().all(|m| m.security_code() == dave.security_code()));
}

#[test]
fn a_locked_meeting_refuses_every_add_even_an_admitted_one() {
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", 0);
    ms.push(bob);
    // Erin is admitted before the lock: the lock still keeps her out.
    let (_erin, erin_kp) = Member::new_pending(ident("erin")).unwrap();
    let admission = ms[0].admit(key_package_hash(&erin_kp).unwrap()).unwrap();
    ms[1].process(&admission, 0).unwrap();

    // Only a host locks.
    assert_eq!(ms[1].set_locked(true), Err(E2eeError::NotHost));
    let lock = ms[0].set_locked(true).unwrap();
    assert_eq!(
        ms[1].process(&lock, 0).unwrap(),
        Processed::LockChanged {
            locked: true,
            by_leaf: 0
        }
    );
    let epoch = ms[1].epoch();
    assert_eq!(ms[1].commit_add(&[&erin_kp], 0), Err(E2eeError::Locked));
    assert_eq!(
        ms[0].admit(key_package_hash(&erin_kp).unwrap()),
        Err(E2eeError::Locked)
    );
    // A member (or a server) that ignores the lock gets its Commit refused by the others.
    let (forced, _) = ms[0].commit_add_unchecked(&[&erin_kp]).unwrap();
    assert_eq!(ms[1].process(&forced, 0), Err(E2eeError::Locked));
    assert_eq!(ms[1].epoch(), epoch);
    ms[0].discard_pending_commit().unwrap();

    // Unlocked, admissions and adds work again.
    let unlock = ms[0].set_locked(false).unwrap();
    ms[1].process(&unlock, 0).unwrap();
    assert!(!ms[1].is_locked());
    let frank = admit_and_add(0, 1, &mut ms, "frank", 0);
    assert_eq!(frank.epoch(), epoch + 1);
}

#[test]
fn only_hosts_admit_and_only_host_link_holders_promote_and_demote() {
    let mut ms = three();
    let (_p, kp) = Member::new_pending(ident("eve")).unwrap();
    let hash = key_package_hash(&kp).unwrap();
    assert_eq!(ms[1].admit(hash), Err(E2eeError::NotHost));
    // Bob holds no host link: neither this meeting's key nor his own position lets him promote.
    assert_eq!(ms[1].grant_host(2, link()), Err(E2eeError::NotHost));
    let stranger = HostLinkSecret::generate().unwrap();
    assert_eq!(ms[0].grant_host(1, &stranger), Err(E2eeError::NotHost));

    // A forged Admission from non-host Bob is refused and does not unlock the add.
    let forged = ms[1]
        .send_payload_unchecked(&AppPayload::Admission(hash))
        .unwrap();
    assert_eq!(ms[0].process(&forged, 0), Err(E2eeError::NotHost));
    assert_eq!(ms[2].process(&forged, 0), Err(E2eeError::NotHost));
    assert!(matches!(
        ms[2].commit_add(&[&kp], 0),
        Err(E2eeError::UnadmittedAdd { .. })
    ));

    // Alice promotes Bob; everyone agrees; Bob's admissions now count.
    let grant = ms[0].grant_host(1, link()).unwrap();
    let promoted = Processed::HostsChanged {
        granted: vec![1],
        revoked: vec![],
        by_leaf: 0,
        epoch: 3,
    };
    assert_eq!(ms[0].merge_pending_commit(0).unwrap(), promoted);
    for m in ms.iter_mut().skip(1) {
        assert_eq!(m.process(&grant, 0).unwrap(), promoted);
    }
    assert!(ms.iter().all(|m| m.hosts() == vec![0, 1]));
    assert!(ms.iter().all(|m| m.link_hosts() == vec![0]));
    let eve = admit_and_add(1, 2, &mut ms, "eve", 0);
    assert_eq!(eve.hosts(), vec![0, 1]);
    ms.push(eve);

    // A co-host cannot demote anyone (it holds no host link), even by building the commit.
    assert_eq!(ms[1].revoke_host(1), Err(E2eeError::NotHost));

    // Alice takes it back: Bob's later admissions are refused by every member.
    let revoke = ms[0].revoke_host(1).unwrap();
    let demoted = Processed::HostsChanged {
        granted: vec![],
        revoked: vec![1],
        by_leaf: 0,
        epoch: 5,
    };
    assert_eq!(ms[0].merge_pending_commit(0).unwrap(), demoted);
    for m in ms.iter_mut().skip(1) {
        assert_eq!(m.process(&revoke, 0).unwrap(), demoted);
    }
    assert!(ms.iter().all(|m| m.hosts() == vec![0]));
    let (_p, late_kp) = Member::new_pending(ident("late")).unwrap();
    let late_hash = key_package_hash(&late_kp).unwrap();
    assert_eq!(ms[1].admit(late_hash), Err(E2eeError::NotHost));
    let stale_power = ms[1]
        .send_payload_unchecked(&AppPayload::Admission(late_hash))
        .unwrap();
    for i in [0, 2, 3] {
        assert_eq!(ms[i].process(&stale_power, 0), Err(E2eeError::NotHost));
        assert!(ms[i].admissibility(&late_kp, 0).is_err());
    }
}

#[test]
fn non_member_and_wrong_epoch_commits_are_rejected() {
    // An outsider's group with the same id: its commit is at epoch 0.
    let outsider_link = HostLinkSecret::generate().unwrap();
    let mut outsider = Member::create_group(ident("outsider"), GID, &outsider_link).unwrap();
    let (_p, kp) = Member::new_pending(ident("listener")).unwrap();
    outsider.admit(key_package_hash(&kp).unwrap()).unwrap();
    let (foreign_commit, _) = outsider.commit_add(&[&kp], 0).unwrap();

    // Same epoch: cannot be decrypted/verified by a real member.
    let mut lone = host();
    assert!(lone.process(&foreign_commit, 0).is_err());
    assert_eq!(lone.epoch(), 0);

    // Later epoch: refused as stale before any crypto.
    let mut ms = three();
    assert_eq!(
        ms[0].process(&foreign_commit, 0),
        Err(E2eeError::StaleEpoch { got: 0, current: 2 })
    );

    // A commit that lost the race at the DS and is delivered anyway is stale.
    let losing = ms[1].commit_remove(&[2]).unwrap();
    let winning = ms[0].commit_remove(&[2]).unwrap();
    ms[0].merge_pending_commit(0).unwrap();
    ms[1].discard_pending_commit().unwrap();
    ms[1].process(&winning, 0).unwrap();
    assert!(matches!(
        ms[0].process(&losing, 0),
        Err(E2eeError::StaleEpoch { got: 2, current: 3 })
    ));
    assert_eq!(ms[0].epoch(), ms[1].epoch());

    // A message for another group, or from the future, is refused too.
    let other = Member::create_group(ident("x"), b"other-group", link()).unwrap();
    let _ = other;
    let mut future = ms[1].encrypt_chat("x").unwrap();
    assert!(ms[0].process(&future, 0).is_ok());
    future.truncate(future.len() - 1);
    assert!(ms[0].process(&future, 0).is_err());
    assert!(ms[0].process(b"garbage", 0).is_err());
}

#[test]
fn frame_attacks_are_rejected() {
    let mut ms = three();
    let key = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let enc = ms[0].encrypt_frame(MediaKind::Vp8, &key).unwrap();
    // Clear prefix is in the clear, the rest is not.
    assert_eq!(&enc[..10], &key[..10]);
    assert!(!enc[10..].windows(3).any(|w| w == [10, 11, 12]));

    assert_eq!(
        ms[1]
            .decrypt_frame(MediaKind::Vp8, &enc, 0)
            .unwrap()
            .plaintext,
        key
    );
    // Replay.
    assert!(matches!(
        ms[1].decrypt_frame(MediaKind::Vp8, &enc, 0),
        Err(E2eeError::Replay(0))
    ));
    // Truncation at every length.
    for n in 0..enc.len() {
        assert!(
            ms[2].decrypt_frame(MediaKind::Vp8, &enc[..n], 0).is_err(),
            "len {n}"
        );
    }
    // Every single bit flip (clear prefix, header, ciphertext, tag).
    for i in 0..enc.len() {
        for b in 0..8 {
            let mut t = enc.clone();
            t[i] ^= 1 << b;
            assert!(
                ms[2].decrypt_frame(MediaKind::Vp8, &t, 0).is_err(),
                "byte {i} bit {b}"
            );
        }
    }
    // The untampered frame still decrypts for Carol afterwards: failures did not poison her
    // replay window.
    assert!(ms[2].decrypt_frame(MediaKind::Vp8, &enc, 0).is_ok());

    // Unknown KID: a leaf that is not a member, and an epoch we never had.
    let mut raw = ms[0].encrypt_frame(MediaKind::Raw, b"abc").unwrap();
    let forged_kid = sframe::header::SframeHeader::new(crate::sframe_keys::kid_for(9, 2), 0);
    let hlen = sframe::header::SframeHeader::deserialize(&raw)
        .unwrap()
        .len();
    let mut forged = Vec::from(&forged_kid);
    forged.extend_from_slice(&raw[hlen..]);
    assert_eq!(
        ms[1].decrypt_frame(MediaKind::Raw, &forged, 0),
        Err(E2eeError::UnknownKid(crate::sframe_keys::kid_for(9, 2)))
    );
    let wrong_epoch = Vec::from(&sframe::header::SframeHeader::new(
        crate::sframe_keys::kid_for(0, 7),
        0,
    ));
    raw.splice(..hlen, wrong_epoch);
    assert!(matches!(
        ms[1].decrypt_frame(MediaKind::Raw, &raw, 0),
        Err(E2eeError::UnknownKid(_))
    ));

    // Reordered frames inside the window are fine; a counter from far back is not.
    let frames: Vec<_> = (0..200)
        .map(|i| ms[0].encrypt_frame(MediaKind::Raw, &[i as u8]).unwrap())
        .collect();
    ms[1]
        .decrypt_frame(MediaKind::Raw, &frames[150], 0)
        .unwrap();
    ms[1]
        .decrypt_frame(MediaKind::Raw, &frames[149], 0)
        .unwrap();
    assert!(matches!(
        ms[1].decrypt_frame(MediaKind::Raw, &frames[2], 0),
        Err(E2eeError::Replay(_))
    ));
}

#[test]
fn grace_period_is_honoured_then_expires() {
    let mut ms = three();
    let in_flight_1 = ms[0].encrypt_frame(MediaKind::Raw, b"one").unwrap();
    let in_flight_2 = ms[0].encrypt_frame(MediaKind::Raw, b"two").unwrap();
    let commit = ms[1].commit_remove(&[2]).unwrap();
    ms[1].merge_pending_commit(10_000).unwrap();
    ms[0].process(&commit, 10_000).unwrap();
    assert_eq!(ms[1].media_epoch(), 3);
    let d = ms[1]
        .decrypt_frame(MediaKind::Raw, &in_flight_1, 10_000 + GRACE_PERIOD_MS - 1)
        .unwrap();
    assert_eq!((d.epoch, &d.plaintext[..]), (2, &b"one"[..]));
    assert_eq!(
        ms[1].decrypt_frame(MediaKind::Raw, &in_flight_2, 10_000 + GRACE_PERIOD_MS),
        Err(E2eeError::WrongEpoch { got: 2, current: 3 })
    );
    // New-epoch frames are unaffected.
    let new = ms[0].encrypt_frame(MediaKind::Raw, b"new").unwrap();
    assert_eq!(
        ms[1]
            .decrypt_frame(MediaKind::Raw, &new, 99_999)
            .unwrap()
            .epoch,
        3
    );
}

#[test]
fn inspect_classifies_without_keys() {
    let (_p, kp) = Member::new_pending(ident("k")).unwrap();
    assert_eq!(inspect(&kp).unwrap().kind, MessageKind::KeyPackage);
    assert!(matches!(inspect(b""), Err(E2eeError::Malformed(_))));
    assert!(matches!(
        inspect(&kp[..kp.len() - 1]),
        Err(E2eeError::Malformed(_))
    ));
    assert!(key_package_hash(b"nope").is_err());
    let mut bad = kp.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1; // signature byte
    assert!(key_package_hash(&bad).is_err());
}

thread_local! {
    static PAIR: std::cell::RefCell<Vec<Member>> = std::cell::RefCell::new({
        let mut ms = vec![host()];
        let bob = admit_and_add(0, 0, &mut ms, "bob", 0);
        ms.push(bob);
        ms
    });
}

fn kind_strategy() -> impl Strategy<Value = MediaKind> {
    prop_oneof![
        Just(MediaKind::Vp8),
        Just(MediaKind::Opus),
        Just(MediaKind::Raw)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decrypt_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in kind_strategy()) {
        PAIR.with(|p| {
            let mut p = p.borrow_mut();
            let _ = p[1].decrypt_frame(kind, &bytes, 0);
        });
    }

    #[test]
    fn mutated_frames_never_panic_nor_authenticate(
        frame in proptest::collection::vec(any::<u8>(), 10..300),
        kind in kind_strategy(),
        pos in any::<usize>(),
        xor in 1u8..,
    ) {
        PAIR.with(|p| {
            let mut p = p.borrow_mut();
            let enc = p[0].encrypt_frame(kind, &frame).unwrap();
            let mut t = enc.clone();
            let i = pos % t.len();
            t[i] ^= xor;
            prop_assert!(p[1].decrypt_frame(kind, &t, 0).is_err());
            Ok(())
        })?;
    }

    #[test]
    fn encrypt_decrypt_round_trips(frame in proptest::collection::vec(any::<u8>(), 0..2000), kind in kind_strategy()) {
        PAIR.with(|p| {
            let mut p = p.borrow_mut();
            match kind.clear_prefix_len(&frame) {
                Ok(n) => {
                    let enc = p[0].encrypt_frame(kind, &frame).unwrap();
                    prop_assert_eq!(&enc[..n], &frame[..n]);
                    let d = p[1].decrypt_frame(kind, &enc, 0).unwrap();
                    prop_assert_eq!(d.plaintext, frame);
                    prop_assert_eq!(d.sender_leaf, 0);
                }
                Err(e) => {
                    prop_assert_eq!(e.clone(), E2eeError::FrameTooShort);
                    prop_assert_eq!(p[0].encrypt_frame(kind, &frame), Err(e));
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn process_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        PAIR.with(|p| {
            let mut p = p.borrow_mut();
            let _ = p[1].process(&bytes, 0);
            let _ = inspect(&bytes);
            let _ = key_package_hash(&bytes);
        });
    }
}

/// Everyone processes `commit` but its author, which merges it.
fn commit_everywhere(ms: &mut [Member], author: usize, commit: &[u8], now: u64) {
    ms[author].merge_pending_commit(now).unwrap();
    for (i, m) in ms.iter_mut().enumerate() {
        if i != author {
            assert!(matches!(
                m.process(commit, now).unwrap(),
                Processed::CommitMerged { .. }
            ));
        }
    }
}

const NOW_MS: u64 = 1_800_000_000_000;

#[test]
fn proofs_in_key_packages_admit_without_a_host_and_bind_to_their_holder() {
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", NOW_MS);
    ms.push(bob);
    let meeting = link().meeting_key().public();
    assert_eq!(ms[1].meeting_key(), meeting);

    // A second host-link holder: any member (Bob, no host) adds it, and it is a host.
    let (pending, kp) = Member::new_pending_with(
        ident("cohost"),
        Some(EntryProof::HostLink(link())),
        Some(meeting),
    )
    .unwrap();
    let (commit, welcome) = ms[1].commit_add(&[&kp], NOW_MS).unwrap();
    commit_everywhere(&mut ms, 1, &commit, NOW_MS);
    let second = pending.join(&welcome, None).unwrap();
    ms.push(second);
    assert!(ms.iter().all(|m| m.link_hosts() == vec![0, 2]));

    // A skip-lobby invitation a host's client issued.
    let issue = |skip: bool, expires_at: u64, key: &MeetingKey| {
        Invitation::issue(
            key,
            "inv",
            InvitationSecret::generate().unwrap(),
            expires_at,
            skip,
        )
        .unwrap()
    };
    let expires = NOW_MS / 1000 + 3600;
    let invitation = issue(true, expires, &link().meeting_key());
    let (pending, kp) = Member::new_pending_with(
        ident("guest"),
        Some(EntryProof::Invitation(&invitation)),
        None,
    )
    .unwrap();
    let (commit, welcome) = ms[2].commit_add(&[&kp], NOW_MS).unwrap();
    commit_everywhere(&mut ms, 2, &commit, NOW_MS);
    let guest = pending.join(&welcome, None).unwrap();
    assert!(!guest.is_host(guest.leaf_index()));
    ms.push(guest);

    // What the server can do with what it sees, each refused by every member:
    let refused = |ms: &mut [Member], kp: &[u8], now: u64| {
        for m in ms.iter_mut() {
            assert!(
                matches!(
                    m.admissibility(kp, now),
                    Err(E2eeError::UnadmittedAdd { .. })
                ),
                "refused"
            );
        }
        let (commit, _) = ms[1].commit_add_unchecked(&[kp]).unwrap();
        for i in [0, 2, 3] {
            assert!(matches!(
                ms[i].process(&commit, now),
                Err(E2eeError::UnadmittedAdd { .. })
            ));
        }
        ms[1].discard_pending_commit().unwrap();
    };
    // an invitation it minted itself (its own key, not the meeting's);
    let minted = issue(
        true,
        expires,
        &HostLinkSecret::generate().unwrap().meeting_key(),
    );
    let (_p, kp) = Member::new_pending_with(
        ident("listener"),
        Some(EntryProof::Invitation(&minted)),
        None,
    )
    .unwrap();
    refused(&mut ms, &kp, NOW_MS);
    // a host-link proof under another meeting key;
    let other_link = HostLinkSecret::generate().unwrap();
    let (_p, kp) = Member::new_pending_with(
        ident("listener"),
        Some(EntryProof::HostLink(&other_link)),
        None,
    )
    .unwrap();
    refused(&mut ms, &kp, NOW_MS);
    // an invitation that does not skip the lobby (a host must still admit its holder), or
    // one past its expiry.
    let lobby_only = issue(false, expires, &link().meeting_key());
    let (_p, kp) = Member::new_pending_with(
        ident("waiter"),
        Some(EntryProof::Invitation(&lobby_only)),
        None,
    )
    .unwrap();
    refused(&mut ms, &kp, NOW_MS);
    let (_p, kp) = Member::new_pending_with(
        ident("late"),
        Some(EntryProof::Invitation(&invitation)),
        None,
    )
    .unwrap();
    refused(&mut ms, &kp, (expires + 1) * 1000);
}

#[test]
fn a_proof_copied_into_another_key_package_is_refused() {
    // The server sees every KeyPackage in the clear. It takes the proof extension of a genuine
    // host-link holder's KeyPackage and puts it into its listener's (same extension bytes,
    // another signature key).
    let mut ms = vec![host()];
    let bob = admit_and_add(0, 0, &mut ms, "bob", NOW_MS);
    ms.push(bob);
    let genuine_identity = ident("genuine");
    let proof_bytes =
        EntryProof::HostLink(link()).encode_for(genuine_identity.signature_public_key());
    let listener = ident("listener");
    assert!(crate::proofs::verify_proof(
        &proof_bytes,
        &link().meeting_key().public(),
        listener.signature_public_key()
    )
    .is_err());
}

#[test]
fn a_joiner_refuses_a_group_not_opened_under_its_link_key() {
    let meeting = link().meeting_key().public();
    // The server opens a group of its own (it has no meeting key, so it uses one of its own)
    // and invites a guest whose link carries the real meeting key.
    let server_link = HostLinkSecret::generate().unwrap();
    let mut fake = Member::create_group(ident("listener"), GID, &server_link).unwrap();
    let (pending, kp) = Member::new_pending_with(ident("guest"), None, Some(meeting)).unwrap();
    fake.admit(key_package_hash(&kp).unwrap()).unwrap();
    let (_commit, welcome) = fake.commit_add(&[&kp], NOW_MS).unwrap();
    assert!(matches!(
        pending.join(&welcome, None),
        Err(E2eeError::ForgedGroup(_))
    ));
    // The same guest enters the real meeting's group.
    let mut real = host();
    let (pending, kp) = Member::new_pending_with(ident("guest"), None, Some(meeting)).unwrap();
    real.admit(key_package_hash(&kp).unwrap()).unwrap();
    let (_commit, welcome) = real.commit_add(&[&kp], NOW_MS).unwrap();
    real.merge_pending_commit(NOW_MS).unwrap();
    let guest = pending.join(&welcome, None).unwrap();
    assert_eq!(guest.security_code(), real.security_code());
    assert_eq!(guest.hosts(), vec![0]);
}

/// Removes the member with participant id `pid` by a commit of `members[0]`, which everyone
/// else processes at `now`.
fn remove_by_pid(members: &mut Vec<Member>, pid: &str, now: u64) {
    let (leaf, _, _) = members[0]
        .members()
        .into_iter()
        .find(|(_, _, p)| p == pid)
        .unwrap();
    let commit = members[0].commit_remove(&[leaf]).unwrap();
    members[0].merge_pending_commit(now).unwrap();
    members.retain_mut(|m| m.identity().participant_id() != pid);
    for m in members.iter_mut().skip(1) {
        m.process(&commit, now).unwrap();
    }
}

#[test]
fn a_dropped_device_comes_back_once_within_the_window_and_no_one_else_does() {
    let mut ms = vec![host()];
    let device = DeviceKey::generate().unwrap();
    let bob = admit_and_add_identity(0, 0, &mut ms, ident("bob").with_device(device.clone()), 0);
    ms.push(bob);
    let carol = admit_and_add(0, 0, &mut ms, "carol", 0);
    ms.push(carol);
    // Bob's old leaf is still in the group when his new KeyPackage arrives: it replaces it.
    let (_, early) = Member::new_pending(
        Identity::generate("bob", "pid-bob-2")
            .unwrap()
            .with_device(device.clone()),
    )
    .unwrap();
    assert_eq!(ms[0].returning(&early, 1_000).unwrap(), "pid-bob");
    remove_by_pid(&mut ms, "pid-bob", 1_000);

    // From the same device, after he left: every member recognises him, once.
    let back = || {
        Member::new_pending(
            Identity::generate("bob", "pid-bob-3")
                .unwrap()
                .with_device(device.clone()),
        )
        .unwrap()
        .1
    };
    assert_eq!(ms[1].returning(&back(), 5_000).unwrap(), "pid-bob");
    assert!(matches!(
        ms[1].returning(&back(), 5_000),
        Err(E2eeError::NotReturning(_))
    ));
    // Too late, after the window.
    assert!(matches!(
        ms[0].returning(&back(), 1_000 + continuity::REJOIN_WINDOW_MS),
        Err(E2eeError::NotReturning(_))
    ));
    // Another device, and no device at all, are strangers.
    let (_, stranger) = Member::new_pending(
        Identity::generate("bob", "pid-x")
            .unwrap()
            .with_device(DeviceKey::generate().unwrap()),
    )
    .unwrap();
    assert!(ms[0].returning(&stranger, 2_000).is_err());
    let (_, plain) = Member::new_pending(ident("bob")).unwrap();
    assert!(ms[0].returning(&plain, 2_000).is_err());
    assert!(ms[0].returning(b"not a key package", 2_000).is_err());
}

#[test]
fn a_device_a_host_barred_does_not_come_back_for_any_member() {
    let mut ms = three();
    let device = DeviceKey::generate().unwrap();
    let dave = admit_and_add_identity(0, 0, &mut ms, ident("dave").with_device(device.clone()), 0);
    ms.push(dave);
    // Only a host bars.
    assert!(matches!(ms[1].bar("pid-dave"), Err(E2eeError::NotHost)));
    // A participant who proved no device has nothing to bar.
    assert_eq!(ms[0].bar("pid-bob").unwrap(), None);
    let bar = ms[0].bar("pid-dave").unwrap().unwrap();
    for m in ms.iter_mut().skip(1) {
        if m.identity().participant_id() != "pid-dave" {
            assert!(matches!(
                m.process(&bar, 0).unwrap(),
                Processed::Barred { by_leaf: 0 }
            ));
        }
    }
    remove_by_pid(&mut ms, "pid-dave", 1_000);
    let (_, back) = Member::new_pending(
        Identity::generate("dave", "pid-dave-2")
            .unwrap()
            .with_device(device),
    )
    .unwrap();
    for m in ms.iter_mut() {
        assert!(matches!(
            m.returning(&back, 2_000),
            Err(E2eeError::NotReturning("a host removed this device"))
        ));
    }
}
