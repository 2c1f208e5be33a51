//! Arbitrary bytes into `Member::decrypt_frame` for every `MediaKind`, plus properties on
//! real frames: a sealed frame opens to exactly what was sealed, only once, and any single
//! flipped bit makes it fail.
//!
//! Input: byte 0 picks the media kind (`% 3`) and the mode (`/ 3 % 4`); bytes 1..3 are a
//! little-endian `now_ms` (so epoch grace expiry is explored); the rest is the payload.
#![no_main]

use std::sync::{Mutex, OnceLock};

use e2ee::{E2eeError, Identity, MediaKind, Member};
use libfuzzer_sys::fuzz_target;

/// A host and a participant at epoch 2, with epoch 1's keys still in their grace period.
struct Fixture {
    receiver: Member,
    sender: Member,
}

fn add(host: &mut Member, name: &str, id: &str) -> Member {
    let (pending, kp) = Member::new_pending(Identity::generate(name, id).unwrap()).unwrap();
    host.admit(e2ee::key_package_hash(&kp).unwrap()).unwrap();
    let (commit, welcome) = host.commit_add(&[&kp], 0).unwrap();
    host.merge_pending_commit(0).unwrap();
    let _ = commit;
    pending.join(&welcome, None).unwrap()
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut host =
            Member::create_group(Identity::generate("host", "1").unwrap(), b"fuzz", &e2ee::HostLinkSecret::generate().unwrap()).expect("group");
        let alice = add(&mut host, "alice", "2");
        // A second commit so that the receiver also holds a previous epoch in grace.
        let (pending, kp) = Member::new_pending(Identity::generate("bob", "3").unwrap()).unwrap();
        let admission = host.admit(e2ee::key_package_hash(&kp).unwrap()).unwrap();
        let mut alice = alice;
        alice.process(&admission, 0).unwrap();
        let (commit, _welcome) = host.commit_add(&[&kp], 0).unwrap();
        host.merge_pending_commit(0).unwrap();
        alice.process(&commit, 0).unwrap();
        drop(pending);
        Mutex::new(Fixture {
            receiver: host,
            sender: alice,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let [selector, t0, t1, rest @ ..] = data else {
        return;
    };
    let kind = [MediaKind::Vp8, MediaKind::Opus, MediaKind::Raw][usize::from(*selector % 3)];
    let mode = (*selector / 3) % 4;
    let now_ms = u64::from(u16::from_le_bytes([*t0, *t1]));
    let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    match mode {
        // Raw bytes: anything but a panic is fine.
        0 | 1 => {
            let _ = f.receiver.decrypt_frame(kind, rest, now_ms);
        }
        // Round trip, then replay.
        2 => {
            let Ok(sealed) = f.sender.encrypt_frame(kind, rest) else {
                return;
            };
            let opened = f
                .receiver
                .decrypt_frame(kind, &sealed, 0)
                .expect("a fresh frame from a member opens");
            assert_eq!(opened.plaintext, rest);
            assert_eq!(opened.sender_leaf, f.sender.leaf_index());
            assert_eq!(opened.epoch, f.sender.epoch());
            assert!(matches!(
                f.receiver.decrypt_frame(kind, &sealed, 0),
                Err(E2eeError::Replay(_))
            ));
        }
        // One flipped bit anywhere: never opens.
        _ => {
            let [p0, p1, frame @ ..] = rest else {
                return;
            };
            let Ok(mut sealed) = f.sender.encrypt_frame(kind, frame) else {
                return;
            };
            let bit = usize::from(u16::from_le_bytes([*p0, *p1])) % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            assert!(
                f.receiver.decrypt_frame(kind, &sealed, 0).is_err(),
                "a frame with bit {bit} flipped opened"
            );
        }
    }
});
