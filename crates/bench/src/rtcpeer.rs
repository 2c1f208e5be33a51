//! One WebRTC PeerConnection of a bot: a str0m `Rtc`, its UDP socket, and the media it sends.
//! Signaling adapters (Conclave, Janus) drive it through [`PeerHandle`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::payload::{self, Kind};
use crate::shared::Shared;
use crate::sys::{self, RecvBatch};

enum Cmd {
    MakeOffer(oneshot::Sender<Result<String>>),
    AcceptAnswer(String, oneshot::Sender<Result<()>>),
    AcceptOffer(String, oneshot::Sender<Result<String>>),
}

/// Talks to a running peer task.
#[derive(Clone)]
pub struct PeerHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl PeerHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| anyhow!("peer stopped"))?;
        rx.await.map_err(|_| anyhow!("peer stopped"))?
    }

    /// The peer's own offer: send-only audio and video if it publishes, else a data channel.
    pub async fn make_offer(&self) -> Result<String> {
        self.ask(Cmd::MakeOffer).await
    }

    pub async fn accept_answer(&self, sdp: String) -> Result<()> {
        self.ask(|r| Cmd::AcceptAnswer(sdp, r)).await
    }

    pub async fn accept_offer(&self, sdp: String) -> Result<String> {
        self.ask(|r| Cmd::AcceptOffer(sdp, r)).await
    }
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    bot: usize,
    /// Publisher number, if it sends media.
    publisher: Option<u32>,
    shared: Rc<Shared>,
    pending: Option<SdpPendingOffer>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    connected_at: Option<Instant>,
    audio_sent: u64,
    video_sent: u64,
}

/// Starts a peer task for bot `bot`; it publishes as `publisher` if given.
pub fn spawn(shared: Rc<Shared>, bot: usize, publisher: Option<u32>) -> Result<PeerHandle> {
    let std_socket = sys::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)), 2 << 20)?;
    let socket = UdpSocket::from_std(std_socket).context("register UDP socket")?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("{e}"))?);
    let (tx, rx) = mpsc::unbounded_channel();
    let peer = Peer {
        rtc,
        socket,
        local,
        bot,
        publisher,
        shared,
        pending: None,
        audio_mid: None,
        video_mid: None,
        connected_at: None,
        audio_sent: 0,
        video_sent: 0,
    };
    tokio::task::spawn_local(peer.run(rx));
    Ok(PeerHandle { tx })
}

impl Peer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut stop = self.shared.stop.subscribe();
        let mut batch = RecvBatch::new();
        let debug = std::env::var_os("BENCH_DEBUG").is_some();
        let (mut dbg_reads, mut dbg_dgrams, mut dbg_timeouts, mut dbg_at) =
            (0u64, 0u64, 0u64, Instant::now());
        loop {
            if debug && dbg_at.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "peer {} {}: reads {dbg_reads} datagrams {dbg_dgrams} timeouts {dbg_timeouts}",
                    self.bot, self.local
                );
                (dbg_reads, dbg_dgrams, dbg_timeouts, dbg_at) = (0, 0, 0, Instant::now());
            }
            let rtc_wake = match self.drain() {
                Ok(t) => t,
                Err(e) => {
                    self.shared.error(format!("bot {}: rtc: {e}", self.bot));
                    return;
                }
            };
            let mut wake = rtc_wake.min(Instant::now() + Duration::from_millis(200));
            if let (Some(start), Some(_)) = (self.connected_at, self.publisher) {
                wake = wake
                    .min(start + payload::AUDIO_INTERVAL * self.audio_sent as u32)
                    .min(start + payload::VIDEO_INTERVAL * self.video_sent as u32);
            }
            tokio::select! {
                r = self.socket.readable() => {
                    if r.is_err() { return; }
                    loop {
                        let got = self.socket.try_io(Interest::READABLE, || batch.recv(&self.socket));
                        let n = match got { Ok(n) => n, Err(_) => break };
                        dbg_reads += 1;
                        dbg_dgrams += n as u64;
                        // Arrival time is when the batch was read, not when each datagram's
                        // turn came: the TWCC feedback these times go into would otherwise
                        // report the generator's own processing as network queueing.
                        let arrived = Instant::now();
                        for i in 0..n {
                            let (data, source) = batch.get(i);
                            self.shared.on_datagram(data);
                            if self.shared.only_counts(self.bot, data) {
                                continue;
                            }
                            let Ok(contents) = data.try_into() else { continue };
                            let input = Input::Receive(arrived, Receive {
                                proto: Protocol::Udp, source, destination: self.local, contents,
                            });
                            if self.rtc.handle_input(input).is_err() { continue; }
                            if let Err(e) = self.drain() {
                                self.shared.error(format!("bot {}: rtc: {e}", self.bot));
                                return;
                            }
                        }
                        if n < sys::BATCH { break; }
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    dbg_timeouts += 1;
                    self.send_due(now);
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        self.shared.error(format!("bot {}: rtc timeout: {e}", self.bot));
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::MakeOffer(reply) => {
                let mut change = self.rtc.sdp_api();
                if self.publisher.is_some() {
                    self.audio_mid = Some(change.add_media(
                        MediaKind::Audio,
                        Direction::SendOnly,
                        None,
                        None,
                        None,
                    ));
                    self.video_mid = Some(change.add_media(
                        MediaKind::Video,
                        Direction::SendOnly,
                        None,
                        None,
                        None,
                    ));
                } else {
                    change.add_channel("bench".into());
                }
                let result = match change.apply() {
                    Some((offer, pending)) => {
                        self.pending = Some(pending);
                        Ok(offer.to_sdp_string())
                    }
                    None => Err(anyhow!("nothing to offer")),
                };
                let _ = reply.send(result);
            }
            Cmd::AcceptAnswer(sdp, reply) => {
                let result = (|| {
                    let answer = SdpAnswer::from_sdp_string(&sdp)?;
                    let pending = self.pending.take().ok_or_else(|| anyhow!("no offer"))?;
                    self.rtc.sdp_api().accept_answer(pending, answer)?;
                    Ok(())
                })();
                let _ = reply.send(result);
            }
            Cmd::AcceptOffer(sdp, reply) => {
                let result = (|| {
                    let offer = SdpOffer::from_sdp_string(&sdp)?;
                    let answer = self.rtc.sdp_api().accept_offer(offer)?;
                    Ok(answer.to_sdp_string())
                })();
                let _ = reply.send(result);
            }
        }
    }

    /// Sends what str0m wants sent, handles its events; returns when it next wants time.
    fn drain(&mut self) -> Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    sys::send_to(&self.socket, &t.contents, t.destination);
                }
                Output::Event(event) => match event {
                    Event::Connected if self.connected_at.is_none() => {
                        self.connected_at = Some(Instant::now());
                    }
                    Event::MediaData(data) => self.shared.on_frame(self.bot, &data.data),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.shared
                            .error(format!("bot {}: ICE disconnected", self.bot));
                    }
                    _ => {}
                },
            }
        }
    }

    fn send_due(&mut self, now: Instant) {
        let (Some(start), Some(publisher)) = (self.connected_at, self.publisher) else {
            return;
        };
        while start + payload::AUDIO_INTERVAL * self.audio_sent as u32 <= now {
            let seq = self.audio_sent as u32;
            let time = MediaTime::new(self.audio_sent * 960, Frequency::FORTY_EIGHT_KHZ);
            self.write(Kind::Audio, publisher, seq, time);
            self.audio_sent += 1;
        }
        while start + payload::VIDEO_INTERVAL * self.video_sent as u32 <= now {
            let seq = self.video_sent as u32;
            let time = MediaTime::new(self.video_sent * 3000, Frequency::NINETY_KHZ);
            self.write(Kind::Video, publisher, seq, time);
            self.video_sent += 1;
        }
    }

    fn write(&mut self, kind: Kind, publisher: u32, seq: u32, time: MediaTime) {
        let (mid, codec) = match kind {
            Kind::Audio => (self.audio_mid, Codec::Opus),
            Kind::Video => (self.video_mid, Codec::Vp8),
        };
        let Some(writer) = mid.and_then(|m| self.rtc.writer(m)) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        let sent_ns = payload::now_ns();
        let frame = payload::make(publisher, kind, seq, sent_ns);
        if writer.write(pt, Instant::now(), time, frame).is_ok() {
            self.shared.on_sent(kind, self.bot, sent_ns);
        }
    }
}
