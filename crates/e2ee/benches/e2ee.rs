//! SFrame frame protection against raw AES-128-GCM over the same bytes, and MLS add-member
//! commit cost by group size. Run: `cargo bench -p e2ee -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Key, Nonce};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use e2ee::{key_package_hash, Identity, MediaKind, Member};

const SIZES: [usize; 3] = [160, 1200, 30 * 1024];
const GROUP_SIZES: [usize; 4] = [10, 50, 100, 500];

fn ident(name: &str) -> Identity {
    Identity::generate(name, name).unwrap()
}

/// Host plus one observing member in a group of `n`.
fn group_of(n: usize) -> (Member, Member) {
    let mut host = Member::create_group(
        ident("host"),
        b"bench",
        &e2ee::HostLinkSecret::generate().unwrap(),
    )
    .unwrap();
    let (observer_pending, observer_kp) = Member::new_pending(ident("observer")).unwrap();
    let mut kps = vec![observer_kp];
    for i in 2..n {
        kps.push(Member::new_pending(ident(&format!("m{i}"))).unwrap().1);
    }
    for kp in &kps {
        host.admit(key_package_hash(kp).unwrap()).unwrap();
    }
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let (_commit, welcome) = host.commit_add(&refs, 0).unwrap();
    host.merge_pending_commit(0).unwrap();
    let observer = observer_pending.join(&welcome, None).unwrap();
    (host, observer)
}

fn two() -> (Member, Member) {
    group_of(2)
}

fn sframe(c: &mut Criterion) {
    let (mut alice, mut bob) = two();
    let cipher = Aes128Gcm::new(&Key::<Aes128Gcm>::from([7u8; 16]));
    let mut g = c.benchmark_group("frame");
    for size in SIZES {
        let frame = vec![0x55u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        let mut out = Vec::with_capacity(size + 64);
        g.bench_with_input(BenchmarkId::new("sframe_encrypt", size), &frame, |b, f| {
            b.iter(|| {
                alice
                    .encrypt_frame_into(MediaKind::Raw, black_box(f), &mut out)
                    .unwrap()
            })
        });
        // Every frame must be fresh: the receiver rejects replays.
        g.bench_with_input(BenchmarkId::new("sframe_decrypt", size), &frame, |b, f| {
            b.iter_batched(
                || alice.encrypt_frame(MediaKind::Raw, f).unwrap(),
                |enc| {
                    bob.decrypt_frame(MediaKind::Raw, black_box(&enc), 0)
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        let mut buf = Vec::with_capacity(size + 16);
        let mut ctr = 0u64;
        g.bench_with_input(
            BenchmarkId::new("raw_aes128gcm_encrypt", size),
            &frame,
            |b, f| {
                b.iter(|| {
                    ctr += 1;
                    let mut n = [0u8; 12];
                    n[4..].copy_from_slice(&ctr.to_be_bytes());
                    buf.clear();
                    buf.extend_from_slice(black_box(f));
                    cipher
                        .encrypt_in_place(&Nonce::from(n), b"", &mut buf)
                        .unwrap();
                })
            },
        );
        let nonce = Nonce::from([1u8; 12]);
        let mut sealed = frame.clone();
        cipher.encrypt_in_place(&nonce, b"", &mut sealed).unwrap();
        g.bench_with_input(
            BenchmarkId::new("raw_aes128gcm_decrypt", size),
            &sealed,
            |b, s| {
                b.iter(|| {
                    buf.clear();
                    buf.extend_from_slice(black_box(s));
                    cipher.decrypt_in_place(&nonce, b"", &mut buf).unwrap();
                })
            },
        );
    }
    g.finish();
}

fn mls(c: &mut Criterion) {
    let mut g = c.benchmark_group("mls_add_one");
    g.sample_size(10);
    for n in GROUP_SIZES {
        let (mut host, mut observer) = group_of(n);
        let (_p, kp) = Member::new_pending(ident("joiner")).unwrap();
        let adm = host.admit(key_package_hash(&kp).unwrap()).unwrap();
        observer.process(&adm, 0).unwrap();
        g.bench_function(BenchmarkId::new("create_commit_welcome", n), |b| {
            b.iter(|| {
                let out = host.commit_add(&[&kp], 0).unwrap();
                host.discard_pending_commit().unwrap();
                out
            })
        });
        // Fresh group: thousands of discarded commits above used up the host's handshake
        // ratchet generations of that epoch beyond the receivers' forward-distance limit.
        let (mut host, mut observer) = group_of(n);
        // Processing merges, so each timed process is followed by an untimed removal of the
        // joiner to keep the group at n members.
        g.bench_function(BenchmarkId::new("process_commit", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let (_p, kp) = Member::new_pending(ident(&format!("j{i}"))).unwrap();
                    let adm = host.admit(key_package_hash(&kp).unwrap()).unwrap();
                    observer.process(&adm, 0).unwrap();
                    let (commit, _w) = host.commit_add(&[&kp], 0).unwrap();
                    host.merge_pending_commit(0).unwrap();
                    let t = Instant::now();
                    let p = observer.process(black_box(&commit), 0).unwrap();
                    total += t.elapsed();
                    let e2ee::Processed::CommitMerged { added, .. } = p else {
                        panic!()
                    };
                    let rm = host.commit_remove(&[added[0].0]).unwrap();
                    host.merge_pending_commit(0).unwrap();
                    observer.process(&rm, 0).unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sframe, mls);
criterion_main!(benches);
