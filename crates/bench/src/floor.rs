//! Target (c): the physical floor. A raw UDP relay with no WebRTC: recvmmsg / sendmmsg, one
//! AES-128-GCM open per packet received and one seal per packet sent (so each hop costs one
//! seal and one open, like SRTP), rooms as plain lists of addresses. It runs as a child
//! process (`bench floor-relay`) so that its CPU and RSS are measured like the SFUs'.
//!
//! Wire format: `JOIN` + room u32 + member u32 (plain) is answered with `OKAY`. A media
//! packet is a 12-byte RTP header (in the clear, authenticated), a 12-byte nonce, the
//! ciphertext and the 16-byte tag. The plaintext is a 11-byte chunk header (publisher u32,
//! kind u8, frame seq u32, chunk index u8, chunk count u8) and a piece of a frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::process::Child;

use crate::payload::{self, Kind};
use crate::shared::Shared;
use crate::sys::{self, RecvBatch, SendBatch};

/// Fixed keys: the floor measures work, not key management.
const KEY_UP: [u8; 16] = *b"conclave-bench-u";
const KEY_DOWN: [u8; 16] = *b"conclave-bench-d";
const RTP_HEADER: usize = 12;
const CHUNK_HEADER: usize = 11;
const TAG_LEN: usize = 16;

fn key(k: &[u8; 16]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_128_GCM, k).expect("AES-128 key"))
}

fn nonce(prefix: u32, counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&prefix.to_be_bytes());
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// The relay's main loop (`bench floor-relay --port P`). Never returns.
pub fn relay_main(port: u16) -> Result<()> {
    // Die with the benchmark.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let socket = sys::bind_udp(SocketAddr::from(([127, 0, 0, 1], port)), 8 << 20)?;
    let up = key(&KEY_UP);
    let down = key(&KEY_DOWN);
    let mut rooms: HashMap<u32, Vec<(SocketAddr, libc::sockaddr_in)>> = HashMap::new();
    let mut members: HashMap<SocketAddr, u32> = HashMap::new();
    let mut batch = RecvBatch::new();
    let mut out = SendBatch::new();
    let mut counter: u64 = 0;
    let mut plain = Vec::with_capacity(2048);
    let mut pollfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&socket),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let n = match batch.recv(&socket) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                unsafe { libc::poll(&mut pollfd, 1, 1000) };
                continue;
            }
            Err(_) => continue,
        };
        for i in 0..n {
            let (data, from) = batch.get(i);
            if data.len() == 12 && &data[..4] == b"JOIN" {
                let room = u32::from_be_bytes(data[4..8].try_into()?);
                let list = rooms.entry(room).or_default();
                if !list.iter().any(|(a, _)| *a == from) {
                    list.push((from, sys::sockaddr(from)));
                }
                members.insert(from, room);
                out.push_with(&sys::sockaddr(from), |b| b.extend_from_slice(b"OKAY"));
                continue;
            }
            let Some(room) = members.get(&from) else {
                continue;
            };
            if data.len() < RTP_HEADER + NONCE_LEN + TAG_LEN {
                continue;
            }
            let header: [u8; RTP_HEADER] = data[..RTP_HEADER].try_into()?;
            let n_in: [u8; NONCE_LEN] = data[RTP_HEADER..RTP_HEADER + NONCE_LEN].try_into()?;
            plain.clear();
            plain.extend_from_slice(&data[RTP_HEADER + NONCE_LEN..]);
            let Ok(opened) = up.open_in_place(
                Nonce::assume_unique_for_key(n_in),
                Aad::from(&header),
                &mut plain,
            ) else {
                continue;
            };
            let len = opened.len();
            for (addr, sa) in rooms.get(room).into_iter().flatten() {
                if *addr == from {
                    continue;
                }
                counter += 1;
                let n_out = nonce(0xffff_ffff, counter);
                out.push_with(sa, |b| {
                    b.extend_from_slice(&header);
                    b.extend_from_slice(&n_out);
                    let start = b.len();
                    b.extend_from_slice(&plain[..len]);
                    let tag = down
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(n_out),
                            Aad::from(&header),
                            &mut b[start..],
                        )
                        .expect("seal");
                    b.extend_from_slice(tag.as_ref());
                });
            }
            if out.len() >= 256 {
                out.flush(&socket);
            }
        }
        out.flush(&socket);
    }
}

pub struct Floor {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Floor {
    pub async fn start(placement: sys::Placement) -> Result<Self> {
        let port = sys::free_udp_port()?;
        let exe = std::env::current_exe()?;
        let mut cmd = placement.command(exe);
        cmd.args(crate::relay_prefix())
            .args(["floor-relay", "--port", &port.to_string()])
            .kill_on_drop(true);
        let child = cmd.spawn().context("start floor relay")?;
        let pid = child.id().context("relay has no pid")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Wait until it answers a join (room 0 is never used by bots).
        let probe = UdpSocket::bind("127.0.0.1:0").await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 16];
        loop {
            let mut join = b"JOIN".to_vec();
            join.extend_from_slice(&u32::MAX.to_be_bytes());
            join.extend_from_slice(&0u32.to_be_bytes());
            probe.send_to(&join, addr).await?;
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("floor relay did not answer");
            }
        }
        Ok(Floor { child, pid, addr })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reassembly of one publisher's stream of one kind at a receiver.
#[derive(Default)]
struct Assembly {
    seq: u32,
    next_chunk: u8,
    data: Vec<u8>,
}

/// A floor participant: joins the relay room, publishes if asked, receives everything.
pub async fn bot(
    relay: SocketAddr,
    room: u32,
    shared: Rc<Shared>,
    idx: usize,
    publish: bool,
) -> Result<()> {
    let mut stop = shared.stop.subscribe();
    shared.started(idx);
    let socket = UdpSocket::from_std(sys::bind_udp(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        2 << 20,
    )?)?;
    let mut join = b"JOIN".to_vec();
    join.extend_from_slice(&room.to_be_bytes());
    join.extend_from_slice(&(idx as u32).to_be_bytes());
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(&join, relay).await?;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
        {
            if &buf[..n] == b"OKAY" {
                break;
            }
        }
    }
    let up = key(&KEY_UP);
    let down = key(&KEY_DOWN);
    let start = Instant::now();
    let (mut audio_sent, mut video_sent) = (0u64, 0u64);
    let mut counter = 0u64;
    let mut rtp_seq = [0u16; 2];
    let mut assembly: HashMap<(u32, u8), Assembly> = HashMap::new();
    let mut batch = RecvBatch::new();
    let mut out = SendBatch::new();
    let relay_sa = sys::sockaddr(relay);
    loop {
        let mut wake = Instant::now() + Duration::from_millis(200);
        if publish {
            wake = wake
                .min(start + payload::AUDIO_INTERVAL * audio_sent as u32)
                .min(start + payload::VIDEO_INTERVAL * video_sent as u32);
        }
        tokio::select! {
            r = socket.readable() => {
                r?;
                while let Ok(n) = socket.try_io(Interest::READABLE, || batch.recv(&socket)) {
                    for i in 0..n {
                        let (data, _) = batch.get(i);
                        shared.on_datagram(data);
                        if shared.only_counts(idx, data) {
                            continue;
                        }
                        if data.len() < RTP_HEADER + NONCE_LEN + TAG_LEN {
                            continue;
                        }
                        let header: [u8; RTP_HEADER] = data[..RTP_HEADER].try_into()?;
                        let n_in: [u8; NONCE_LEN] = data[RTP_HEADER..RTP_HEADER + NONCE_LEN].try_into()?;
                        let mut plain = data[RTP_HEADER + NONCE_LEN..].to_vec();
                        let Ok(p) = down.open_in_place(Nonce::assume_unique_for_key(n_in), Aad::from(&header), &mut plain) else {
                            shared.bad_frames.set(shared.bad_frames.get() + 1);
                            continue;
                        };
                        if p.len() < CHUNK_HEADER { continue; }
                        let publisher = u32::from_be_bytes(p[0..4].try_into()?);
                        let kind = p[4];
                        let seq = u32::from_be_bytes(p[5..9].try_into()?);
                        let (index, count) = (p[9], p[10]);
                        let a = assembly.entry((publisher, kind)).or_default();
                        if index == 0 {
                            a.seq = seq;
                            a.next_chunk = 0;
                            a.data.clear();
                        }
                        if a.seq != seq || a.next_chunk != index { continue; }
                        a.data.extend_from_slice(&p[CHUNK_HEADER..]);
                        a.next_chunk += 1;
                        if a.next_chunk == count {
                            shared.on_frame(idx, &a.data);
                        }
                    }
                    if n < sys::BATCH { break; }
                }
            }
            _ = tokio::time::sleep_until(wake.into()), if publish => {
                let now = Instant::now();
                let mut frames = Vec::new();
                while start + payload::AUDIO_INTERVAL * audio_sent as u32 <= now {
                    frames.push((Kind::Audio, audio_sent as u32));
                    audio_sent += 1;
                }
                while start + payload::VIDEO_INTERVAL * video_sent as u32 <= now {
                    frames.push((Kind::Video, video_sent as u32));
                    video_sent += 1;
                }
                for (kind, seq) in frames {
                    let sent_ns = payload::now_ns();
                    let frame = payload::make(idx as u32, kind, seq, sent_ns);
                    let chunks: Vec<&[u8]> = frame.chunks(payload::FLOOR_CHUNK_BYTES).collect();
                    let k = kind as usize;
                    for (i, chunk) in chunks.iter().enumerate() {
                        rtp_seq[k] = rtp_seq[k].wrapping_add(1);
                        let marker = if i + 1 == chunks.len() { 0x80 } else { 0 };
                        let pt = if kind == Kind::Audio { 111 } else { 96 };
                        let mut header = [0u8; RTP_HEADER];
                        header[0] = 0x80;
                        header[1] = marker | pt;
                        header[2..4].copy_from_slice(&rtp_seq[k].to_be_bytes());
                        header[4..8].copy_from_slice(&seq.to_be_bytes());
                        header[8..12].copy_from_slice(&((idx as u32) << 1 | k as u32).to_be_bytes());
                        counter += 1;
                        let n_out = nonce(idx as u32, counter);
                        out.push_with(&relay_sa, |b| {
                            b.extend_from_slice(&header);
                            b.extend_from_slice(&n_out);
                            let s = b.len();
                            b.extend_from_slice(&(idx as u32).to_be_bytes());
                            b.push(k as u8);
                            b.extend_from_slice(&seq.to_be_bytes());
                            b.push(i as u8);
                            b.push(chunks.len() as u8);
                            b.extend_from_slice(chunk);
                            let tag = up
                                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n_out), Aad::from(&header), &mut b[s..])
                                .expect("seal");
                            b.extend_from_slice(tag.as_ref());
                        });
                    }
                    shared.on_sent(kind, idx, sent_ns);
                }
                out.flush(&socket);
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
