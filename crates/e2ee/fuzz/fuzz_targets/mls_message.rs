//! Arbitrary bytes into everything that parses MLS bytes from the network: the delivery
//! service's `e2ee::inspect`, `e2ee::key_package_hash`, `Member::process` and
//! `PendingJoin::join`.
//!
//! Input: byte 0 picks the mode. Even: the rest is used as is. Odd: the rest mutates one of a
//! set of real messages of the fixture's group (KeyPackages, Commits, Welcomes, application
//! messages), so that mutants get past deserialization into signature, epoch and admission
//! checks. Byte 1 picks the message, the rest is XORed over it from an offset in bytes 2..4,
//! and byte 4 optionally truncates it.
#![no_main]

use std::sync::{Mutex, OnceLock};

use e2ee::{Identity, Member, MessageKind};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    /// The member under test: alice, at epoch 1, who has not seen the admission of carol.
    member: Member,
    /// Real messages of the group, as a member or the delivery service would see them.
    messages: Vec<Vec<u8>>,
}

fn build() -> Fixture {
    let mut host = Member::create_group(Identity::generate("host", "1").unwrap(), b"fuzz", &e2ee::HostLinkSecret::generate().unwrap()).unwrap();
    let (alice_pending, alice_kp) =
        Member::new_pending(Identity::generate("alice", "2").unwrap()).unwrap();
    host.admit(e2ee::key_package_hash(&alice_kp).unwrap())
        .unwrap();
    let (commit_1, welcome_1) = host.commit_add(&[&alice_kp], 0).unwrap();
    host.merge_pending_commit(0).unwrap();
    let member = alice_pending.join(&welcome_1, None).unwrap();

    let chat = host.encrypt_chat("hello").unwrap();
    let reaction = host.encrypt_reaction("+1").unwrap();
    let (_carol_pending, carol_kp) =
        Member::new_pending(Identity::generate("carol", "3").unwrap()).unwrap();
    let admission = host
        .admit(e2ee::key_package_hash(&carol_kp).unwrap())
        .unwrap();
    // Carol's Add, built by the host: alice refuses it unless she processed the admission.
    let (commit_2, welcome_2) = host.commit_add(&[&carol_kp], 0).unwrap();
    Fixture {
        member,
        messages: vec![
            alice_kp, carol_kp, commit_1, welcome_1, chat, reaction, admission, commit_2, welcome_2,
        ],
    }
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| Mutex::new(build()))
}

fn run(f: &mut Fixture, bytes: &[u8]) {
    let info = e2ee::inspect(bytes);
    let _ = e2ee::key_package_hash(bytes);
    if let Ok(info) = &info {
        if info.kind == MessageKind::Welcome {
            let (pending, _) =
                Member::new_pending(Identity::generate("joiner", "9").unwrap()).unwrap();
            let _ = pending.join(bytes, None);
        }
    }
    let _ = f.member.process(bytes, 0);
    // A mutant that was accepted moved the member on: start again from a known state so the
    // real messages keep matching its epoch.
    if !f.member.is_active() || f.member.epoch() != 1 {
        *f = build();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    if mode % 2 == 0 {
        run(&mut f, rest);
        return;
    }
    let [pick, o0, o1, cut, xor @ ..] = rest else {
        return;
    };
    let mut msg = f.messages[usize::from(*pick) % f.messages.len()].clone();
    let offset = usize::from(u16::from_le_bytes([*o0, *o1])) % msg.len();
    for (b, x) in msg[offset..].iter_mut().zip(xor) {
        *b ^= x;
    }
    if *cut != 0 {
        msg.truncate(usize::from(*cut) * msg.len() / 256);
    }
    run(&mut f, &msg);
});
