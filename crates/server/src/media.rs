//! The media IO edge: one UDP socket, the ICE-TCP listener beside it, the sans-IO [`Sfu`] and
//! the clock that drives it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::{LeaveReason, ParticipantId, ServerMessage, TrackInfo, TrackKind, TrackSource};
use sfu::{RoomId, Sfu, SfuConfig, SfuError, SfuEvent, SfuOutput, Transport};
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::hub::{Hub, Outbound};
use crate::ice_tcp::{TcpEvent, TcpLimits, TcpMedia, TcpRefusal};
use crate::metrics::Metrics;
use crate::udp_batch::{RecvBatch, SendBatch};

/// Requests from signaling sessions to the SFU.
pub enum MediaCommand {
    Add {
        room: u64,
        id: ParticipantId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        sources: BTreeMap<String, TrackSource>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Answer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Remove {
        id: ParticipantId,
    },
    /// How a participant shows the videos it receives: `(mid, Some(height))` for a tile on
    /// screen, `None` for one off screen; and what it wants to receive at most.
    VideoLayout {
        id: ParticipantId,
        tiles: Vec<(String, Option<u32>)>,
        max_receive_bps: Option<u64>,
    },
    /// Stop or resume forwarding one of a participant's sources (host mute, screen share).
    Block {
        id: ParticipantId,
        source: TrackSource,
        blocked: bool,
    },
}

/// How sessions reach the media loop.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<MediaCommand>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the media task has stopped")]
    Stopped,
    #[error(transparent)]
    Sfu(#[from] SfuError),
}

impl MediaHandle {
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> MediaCommand,
    ) -> Result<T, MediaError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| MediaError::Stopped)?;
        Ok(response.await.map_err(|_| MediaError::Stopped)??)
    }

    pub async fn add(&self, room: u64, id: ParticipantId) -> Result<(), MediaError> {
        self.request(|reply| MediaCommand::Add { room, id, reply })
            .await
    }

    /// Applies a participant's offer; the media loop sends the answer itself, so that it
    /// reaches the participant before any offer the SFU makes next.
    pub async fn offer(
        &self,
        id: ParticipantId,
        sdp: String,
        sources: BTreeMap<String, TrackSource>,
    ) -> Result<(), MediaError> {
        self.request(|reply| MediaCommand::Offer {
            id,
            sdp,
            sources,
            reply,
        })
        .await
    }

    /// Stops (or resumes) forwarding a participant's source. Commands run in order, so a block
    /// sent right after [`MediaHandle::add`] holds before any media can flow.
    pub async fn block(&self, id: ParticipantId, source: TrackSource, blocked: bool) {
        let _ = self
            .commands
            .send(MediaCommand::Block {
                id,
                source,
                blocked,
            })
            .await;
    }

    pub async fn video_layout(
        &self,
        id: ParticipantId,
        tiles: Vec<(String, Option<u32>)>,
        max_receive_bps: Option<u64>,
    ) {
        let _ = self
            .commands
            .send(MediaCommand::VideoLayout {
                id,
                tiles,
                max_receive_bps,
            })
            .await;
    }

    pub async fn answer(&self, id: ParticipantId, sdp: String) -> Result<(), MediaError> {
        self.request(|reply| MediaCommand::Answer { id, sdp, reply })
            .await
    }

    pub async fn remove(&self, id: ParticipantId) {
        let _ = self.commands.send(MediaCommand::Remove { id }).await;
    }
}

/// Kernel buffer for the media socket. The default (~200 KiB) overflows in bursts when one
/// thread serves many participants; the kernel caps it at net.core.rmem_max / wmem_max.
const MEDIA_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a non-blocking UDP socket with large kernel buffers.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: a smaller buffer than asked still works, just with more loss under bursts.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Where the media loop listens and what it puts in ICE candidates.
pub struct MediaSockets {
    /// The UDP socket's address.
    pub udp: SocketAddr,
    /// The ICE-TCP listener's address, or None for no ICE-TCP; port 0 takes the UDP port's
    /// number.
    pub tcp: Option<SocketAddr>,
    pub public_ip: std::net::IpAddr,
}

/// The addresses the media loop bound.
#[derive(Debug, Clone, Copy)]
pub struct MediaBound {
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
}

/// What went wrong binding a media socket.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind media {what} on {addr}: {source}")]
pub struct MediaBindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the media sockets and starts the media loop on its own thread.
pub async fn start(
    sockets: MediaSockets,
    tap: Option<crate::MediaTap>,
    downlink_estimation: bool,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(MediaHandle, MediaBound, MediaThread), MediaBindError> {
    let udp_error = |source| MediaBindError {
        what: "UDP",
        addr: sockets.udp,
        source,
    };
    let socket = bind_udp(sockets.udp, MEDIA_SOCKET_BUFFER).map_err(udp_error)?;
    let local = socket.local_addr().map_err(udp_error)?;
    let candidate = SocketAddr::new(sockets.public_ip, local.port());
    let tcp_listener = match sockets.tcp {
        Some(mut addr) => {
            if addr.port() == 0 {
                addr.set_port(local.port());
            }
            let tcp_error = |source| MediaBindError {
                what: "TCP (ICE-TCP; --media-tcp-port 0 turns it off)",
                addr,
                source,
            };
            // An ephemeral UDP port (tests, `--media-port 0`) wants the same number over TCP
            // where it is free, and any port where it is not: nobody configured that number.
            let listener = match bind_tcp(addr) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && sockets.udp.port() == 0
                        && sockets.tcp.is_some_and(|t| t.port() == 0) =>
                {
                    bind_tcp(SocketAddr::new(addr.ip(), 0))
                }
                other => other,
            }
            .map_err(tcp_error)?;
            let bound = listener.local_addr().map_err(tcp_error)?;
            Some((listener, bound))
        }
        None => None,
    };
    let tcp_candidate = tcp_listener
        .as_ref()
        .map(|(_, bound)| SocketAddr::new(sockets.public_ip, bound.port()));
    let bound = MediaBound {
        udp: local,
        tcp: tcp_listener.as_ref().map(|(_, bound)| *bound),
    };
    let mut sfu = Sfu::new(SfuConfig {
        downlink_estimation,
        tcp_candidate_addr: tcp_candidate,
        ..SfuConfig::new(candidate, local)
    });
    if let Some(tap) = &tap {
        let frames = tap.0.clone();
        sfu.set_frame_tap(Box::new(move |frame| frames(frame)));
    }
    let (commands, rx) = mpsc::channel(1024);
    // The media loop gets a thread and a single-threaded runtime of its own: it waits in
    // epoll itself and runs as soon as datagrams arrive, instead of being woken through the
    // multi-threaded runtime (a handoff between worker threads, measured at about a seventh
    // of the server's CPU in a small meeting). Signaling stays on the shared runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(udp_error)?;
    let (socket, tcp) = {
        let _entered = runtime.enter();
        let socket = UdpSocket::from_std(socket).map_err(udp_error)?;
        let tcp = match (tcp_listener, tcp_candidate) {
            (Some((listener, bound)), Some(candidate)) => {
                let listener =
                    TcpListener::from_std(listener).map_err(|source| MediaBindError {
                        what: "TCP",
                        addr: bound,
                        source,
                    })?;
                let (media, events) = TcpMedia::new(TcpLimits::default());
                Some(TcpPath {
                    listener,
                    candidate,
                    media,
                    events,
                })
            }
            _ => None,
        };
        (socket, tcp)
    };
    // str0m matches each datagram's destination against its local candidate. The socket may be
    // bound to a wildcard address (or sit behind a NAT), so every datagram is presented as
    // addressed to the candidate.
    let media_loop = MediaLoop {
        socket,
        candidate,
        tcp,
        sfu,
        commands: rx,
        tap,
        hub,
        metrics,
        shutdown,
    };
    let (stopped, stopped_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("conclave-media".into())
        .spawn(move || {
            runtime.block_on(media_loop.run());
            let _ = stopped.send(());
        })
        .map_err(udp_error)?;
    Ok((MediaHandle { commands }, bound, MediaThread(stopped_rx)))
}

/// Binds the ICE-TCP listener (non-blocking, address reusable across a quick restart).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The ICE-TCP path: its listener, its candidate, its connections and their events.
struct TcpPath {
    listener: TcpListener,
    /// The passive candidate (public IP, TCP port): what every frame is presented as sent to.
    candidate: SocketAddr,
    media: TcpMedia,
    events: mpsc::Receiver<TcpEvent>,
}

/// Most frames from TCP connections handed to the SFU in one batch.
const TCP_BATCH: usize = 64;

/// The thread running the media loop.
pub struct MediaThread(oneshot::Receiver<()>);

impl MediaThread {
    /// Waits until the media loop has stopped (after shutdown) and its socket is closed.
    pub async fn stopped(self) {
        // An error means the thread ended without saying so (a panic): stopped all the same.
        let _ = self.0.await;
    }
}

/// How long the media loop sleeps when the SFU has nothing timed (no participants).
const IDLE_WAKEUP: Duration = Duration::from_millis(500);

/// Everything the media loop owns.
struct MediaLoop {
    socket: UdpSocket,
    candidate: SocketAddr,
    tcp: Option<TcpPath>,
    sfu: Sfu,
    commands: mpsc::Receiver<MediaCommand>,
    tap: Option<crate::MediaTap>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl MediaLoop {
    async fn run(self) {
        let MediaLoop {
            socket,
            candidate,
            tcp,
            mut sfu,
            mut commands,
            tap,
            hub,
            metrics,
            mut shutdown,
        } = self;
        // Allocated once: datagrams come in and go out through these buffers, many per
        // system call.
        let mut inbox = RecvBatch::new();
        let mut outbox = SendBatch::new();
        let mut last_stats = Instant::now();
        // One timer, moved only when the SFU's deadline moves: most turns of the loop keep it.
        let mut deadline = Instant::now() + IDLE_WAKEUP;
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        let (listener, mut tcp_events, mut tcp) = match tcp {
            Some(path) => (
                Some(path.listener),
                Some(path.events),
                Some((path.media, path.candidate)),
            ),
            None => (None, None, None),
        };
        let mut tcp_frames: Vec<(SocketAddr, bytes::BytesMut)> = Vec::with_capacity(TCP_BATCH);
        let mut tcp_refused: Vec<SocketAddr> = Vec::new();
        loop {
            let next = sfu
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKEUP);
            if next != deadline {
                deadline = next;
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                ready = socket.readable() => match ready {
                    Ok(()) => match socket.try_io(Interest::READABLE, || inbox.recv(&socket)) {
                        Ok(_) => {
                            if let Some(tap) = &tap {
                                for (_, datagram) in inbox.datagrams() {
                                    (tap.0)(datagram);
                                }
                            }
                            sfu.handle_receive_batch(
                                Instant::now(),
                                Transport::Udp,
                                candidate,
                                inbox.datagrams(),
                                |_, e| debug!("datagram refused: {e}"),
                            );
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => warn!("media socket receive failed: {e}"),
                    },
                    Err(e) => warn!("media socket receive failed: {e}"),
                },
                accepted = accept(listener.as_ref()) => match (accepted, tcp.as_mut()) {
                    (Ok((stream, peer)), Some((media, _))) => media.open(stream, peer),
                    (Ok(_), None) => {}
                    // Out of file descriptors, typically: the listener stays, the peer retries.
                    (Err(e), _) => debug!("ICE-TCP accept failed: {e}"),
                },
                event = next_tcp_event(tcp_events.as_mut()) => {
                    if let (Some((media, tcp_candidate)), Some(events)) = (tcp.as_mut(), tcp_events.as_mut()) {
                        let mut next = event;
                        while let Some(event) = next.take() {
                            match event {
                                TcpEvent::Frame(peer, frame) => tcp_frames.push((peer, frame)),
                                TcpEvent::Closed(peer, why) => media.close(peer, why),
                            }
                            if tcp_frames.len() < TCP_BATCH {
                                next = events.try_recv().ok();
                            }
                        }
                        if let Some(tap) = &tap {
                            for (_, frame) in &tcp_frames {
                                (tap.0)(frame);
                            }
                        }
                        sfu.handle_receive_batch(
                            Instant::now(),
                            Transport::Tcp,
                            *tcp_candidate,
                            tcp_frames.iter().map(|(peer, frame)| (*peer, &frame[..])),
                            |peer, e| {
                                debug!("TCP frame refused: {e}");
                                tcp_refused.push(peer);
                            },
                        );
                        // A connection whose frame was refused is garbage or a stranger's: cut
                        // it off. Every other one that sent a frame belongs to a participant.
                        for peer in tcp_refused.drain(..) {
                            media.close(peer, Some(TcpRefusal::BadFrame));
                        }
                        for (peer, _) in tcp_frames.drain(..) {
                            media.owned(peer);
                        }
                    }
                },
                command = commands.recv() => match command {
                    Some(command) => handle_command(&mut sfu, &hub, command),
                    None => break,
                },
                _ = &mut timer => sfu.handle_timeout(Instant::now()),
                _ = shutdown.changed() => break,
            }
            while let Some(output) = sfu.poll_output() {
                match output {
                    SfuOutput::Transmit {
                        transport: Transport::Udp,
                        destination,
                        contents,
                        ..
                    } => outbox.push(destination, &contents),
                    SfuOutput::Transmit {
                        transport: Transport::Tcp,
                        destination,
                        contents,
                        ..
                    } => {
                        if let Some((media, _)) = tcp.as_mut() {
                            media.send(destination, &contents);
                        }
                    }
                    SfuOutput::Signal { participant, event } => {
                        signal(&hub, ParticipantId(participant.0), event)
                    }
                }
            }
            while !outbox.is_empty() {
                match socket.try_io(Interest::WRITABLE, || outbox.send(&socket)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The kernel's send buffer is full: wait, as a blocking send would.
                        if let Err(e) = socket.writable().await {
                            warn!("media socket send failed: {e}");
                            break;
                        }
                    }
                    Err(e) => debug!("media send failed, datagram dropped: {e}"),
                }
            }
            if last_stats.elapsed() >= Duration::from_millis(250) {
                metrics.set_sfu_stats(sfu.stats());
                if let Some((media, _)) = &tcp {
                    metrics.set_tcp_stats(media.stats());
                }
                last_stats = Instant::now();
            }
        }
        metrics.set_sfu_stats(sfu.stats());
        if let Some((media, _)) = &tcp {
            metrics.set_tcp_stats(media.stats());
        }
        info!("media task stopped; UDP socket closed");
    }
}

/// The next connection on the ICE-TCP listener; never, without one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The next frame or close from an ICE-TCP connection; never, without ICE-TCP.
async fn next_tcp_event(events: Option<&mut mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match events {
        // The loop holds a sender (in TcpMedia), so this never ends with None.
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

fn handle_command(sfu: &mut Sfu, hub: &Hub, command: MediaCommand) {
    let now = Instant::now();
    match command {
        MediaCommand::Add { room, id, reply } => {
            let _ = reply.send(sfu.add_participant(now, RoomId(room), sfu::ParticipantId(id.0)));
        }
        MediaCommand::Offer {
            id,
            sdp,
            sources,
            reply,
        } => {
            let result = sfu
                .set_track_sources(sfu::ParticipantId(id.0), sources)
                .and_then(|()| sfu.handle_offer(now, sfu::ParticipantId(id.0), &sdp))
                .map(|answer| {
                    hub.send(id, Outbound::Message(ServerMessage::Answer { sdp: answer }));
                });
            let _ = reply.send(result);
        }
        MediaCommand::Answer { id, sdp, reply } => {
            let _ = reply.send(sfu.handle_answer(now, sfu::ParticipantId(id.0), &sdp));
        }
        MediaCommand::Remove { id } => {
            let _ = sfu.remove_participant(now, sfu::ParticipantId(id.0));
        }
        MediaCommand::VideoLayout {
            id,
            tiles,
            max_receive_bps,
        } => {
            let _ = sfu.set_video_layout(now, sfu::ParticipantId(id.0), tiles, max_receive_bps);
        }
        MediaCommand::Block {
            id,
            source,
            blocked,
        } => {
            let _ = sfu.set_blocked(now, sfu::ParticipantId(id.0), source, blocked);
        }
    }
}

fn signal(hub: &Hub, id: ParticipantId, event: SfuEvent) {
    match event {
        SfuEvent::Offer { sdp, tracks } => {
            let tracks = tracks
                .into_iter()
                .map(|t| TrackInfo {
                    mid: t.mid,
                    participant_id: ParticipantId(t.publisher.0),
                    kind: match t.kind {
                        sfu::TrackKind::Audio => TrackKind::Audio,
                        sfu::TrackKind::Video => TrackKind::Video,
                    },
                    source: t.source,
                })
                .collect();
            hub.send(id, Outbound::Message(ServerMessage::Offer { sdp, tracks }));
        }
        SfuEvent::Connected => debug!(participant = id.0, "media connected"),
        SfuEvent::PublishLayers { mid, active } => {
            hub.send(
                id,
                Outbound::Message(ServerMessage::PublishLayers { mid, active }),
            );
        }
        SfuEvent::ActiveSpeakers { speakers } => {
            let speakers = speakers.into_iter().map(|p| ParticipantId(p.0)).collect();
            hub.send(
                id,
                Outbound::Message(ServerMessage::ActiveSpeakers { speakers }),
            );
        }
        SfuEvent::Vanished => {
            hub.send(
                id,
                Outbound::Close {
                    code: proto::CLOSE_POLICY,
                    reason: "media connection lost".into(),
                },
            );
            hub.leave(id, LeaveReason::Disconnected);
        }
    }
}
