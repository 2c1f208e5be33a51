//! The relay's IO edge: a TLS listener whose connections carry TURN frames, one relayed UDP
//! socket per allocation, and one task that owns the sans-IO `TurnServer` and the [`Gate`].
//!
//! Connections and relayed sockets only move bytes; every decision is in the core task, so
//! the protocol state needs no lock. A slow client never stalls the core: its frames go
//! through a bounded queue and are dropped (whole frames, so the stream stays framed) when
//! the queue is full, as a congested UDP path would lose them.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::stun::types::message::{LongTermKeyCredentials, Message};
use turn_server_proto::stun::types::{AddressFamily, TransportType};
use turn_server_proto::stun::Instant;

use crate::framing::StreamFramer;
use crate::gate::{Gate, Verdict};
use crate::tls::RelayTls;

/// Frames queued towards one client before further ones are dropped.
const CLIENT_QUEUE: usize = 512;
/// A TLS handshake must finish within this (slowloris).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// After the handshake, the first whole frame must arrive within this: a connection that
/// starts something else (an HTTP request on the relay's name) holds no place for long.
pub const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// What the relay is and whom it serves.
#[derive(Clone)]
pub struct RelayConfig {
    /// The TLS listen address (e.g. 0.0.0.0:443).
    pub listen: SocketAddr,
    /// Where relayed sockets bind.
    pub relay_bind_ip: IpAddr,
    /// The address put in XOR-RELAYED-ADDRESS: the machine's public address.
    pub relay_public_ip: IpAddr,
    pub gate: Gate,
    pub tls: RelayTls,
    /// The long-term credential realm.
    pub realm: String,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_allocations: usize,
}

/// Counters, read by the server's metrics.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Connections that reached the relay through the shared HTTPS port.
    pub connections_shared: AtomicU64,
    pub connections_cut_for_garbage: AtomicU64,
    /// Connections that sent no whole frame within [`FIRST_FRAME_DEADLINE`].
    pub connections_cut_idle: AtomicU64,
    pub allocations: AtomicU64,
    pub allocations_refused: AtomicU64,
    pub refused_expired: AtomicU64,
    pub refused_bad_username: AtomicU64,
    /// Requests whose MESSAGE-INTEGRITY does not match the REST credential.
    pub refused_forged: AtomicU64,
    pub refused_peer: AtomicU64,
    pub refused_transport: AtomicU64,
    pub refused_unparseable: AtomicU64,
    pub relayed_to_sfu: AtomicU64,
    pub relayed_to_clients: AtomicU64,
    pub dropped_slow_client: AtomicU64,
}

impl RelayStats {
    fn count_refusal(&self, kind: &str) {
        let counter = match kind {
            "expired" => &self.refused_expired,
            "bad_username" => &self.refused_bad_username,
            "peer" => &self.refused_peer,
            "transport" => &self.refused_transport,
            _ => &self.refused_unparseable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, value)` pairs for the metrics page.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("turn_connections_open", read(&self.connections_open)),
            ("turn_connections_refused", read(&self.connections_refused)),
            ("turn_connections_shared", read(&self.connections_shared)),
            (
                "turn_connections_cut_for_garbage",
                read(&self.connections_cut_for_garbage),
            ),
            (
                "turn_connections_cut_idle",
                read(&self.connections_cut_idle),
            ),
            ("turn_allocations", read(&self.allocations)),
            ("turn_allocations_refused", read(&self.allocations_refused)),
            ("turn_refused_expired", read(&self.refused_expired)),
            (
                "turn_refused_bad_username",
                read(&self.refused_bad_username),
            ),
            ("turn_refused_forged", read(&self.refused_forged)),
            ("turn_refused_peer", read(&self.refused_peer)),
            ("turn_refused_transport", read(&self.refused_transport)),
            ("turn_refused_unparseable", read(&self.refused_unparseable)),
            ("turn_relayed_to_sfu", read(&self.relayed_to_sfu)),
            ("turn_relayed_to_clients", read(&self.relayed_to_clients)),
            ("turn_dropped_slow_client", read(&self.dropped_slow_client)),
        ]
    }
}

/// A started relay.
pub struct RunningRelay {
    /// The bound TLS address.
    pub addr: SocketAddr,
    /// SHA-256 fingerprint of its certificate.
    pub fingerprint: String,
    pub self_signed: bool,
    pub stats: Arc<RelayStats>,
    intake: RelayIntake,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningRelay {
    /// The door for connections from a listener the relay shares.
    pub fn intake(&self) -> RelayIntake {
        self.intake.clone()
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub struct TurnRelay;

enum Event {
    Connected {
        client: SocketAddr,
        frames: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        client: SocketAddr,
        frame: Vec<u8>,
    },
    Closed {
        client: SocketAddr,
    },
    FromPeer {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

impl TurnRelay {
    /// Binds the listener and starts the relay; it stops when `stop` turns true.
    pub async fn start(
        config: RelayConfig,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<RunningRelay> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let mut running = Self::start_behind(config, addr, stop);
        let intake = running.intake.clone();
        running
            .tasks
            .push(tokio::spawn(accept_loop(listener, intake)));
        info!(%addr, "TURN relay (TLS) listening");
        Ok(running)
    }

    /// Starts the relay without a listener of its own: connections reach it through
    /// [`RunningRelay::intake`], already past TLS, from the listener at `config.listen` (the
    /// HTTPS port, routed by server name), which the relay does not bind.
    pub fn start_shared(config: RelayConfig, stop: watch::Receiver<bool>) -> RunningRelay {
        let addr = config.listen;
        info!(%addr, "TURN relay (TLS) shares the HTTPS listener");
        Self::start_behind(config, addr, stop)
    }

    fn start_behind(
        config: RelayConfig,
        addr: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> RunningRelay {
        let stats = Arc::new(RelayStats::default());
        let (events, inbox) = mpsc::channel(4096);
        let mut server = TurnServer::new(TransportType::Tcp, addr, config.realm.clone());
        // Nonces rotate hourly; credentials carry their own expiry.
        server.set_nonce_expiry_duration(Duration::from_secs(3600));
        let core = Core {
            server,
            listen: addr,
            config: config.clone(),
            stats: stats.clone(),
            clients: HashMap::new(),
            known_users: HashSet::new(),
            sockets: HashMap::new(),
            events: events.clone(),
            base: std::time::Instant::now(),
        };
        let core_task = tokio::spawn(core.run(inbox, stop));
        let intake = RelayIntake {
            acceptor: tokio_rustls::TlsAcceptor::from(config.tls.config.clone()),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            per_ip: Arc::default(),
            stats: stats.clone(),
            events,
        };
        RunningRelay {
            addr,
            fingerprint: config.tls.fingerprint.clone(),
            self_signed: config.tls.self_signed,
            stats,
            intake,
            tasks: vec![core_task],
        }
    }
}

/// Where client connections enter the relay, with its connection limits: its own listener's
/// accept loop, or the HTTPS listener when the two share a port.
#[derive(Clone)]
pub struct RelayIntake {
    acceptor: tokio_rustls::TlsAcceptor,
    max_connections: usize,
    max_connections_per_ip: usize,
    per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    stats: Arc<RelayStats>,
    events: mpsc::Sender<Event>,
}

/// One admitted connection; dropping it frees its place under the limits.
struct ConnectionSlot {
    client: SocketAddr,
    per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    stats: Arc<RelayStats>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.client.ip()) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.client.ip());
            }
        }
    }
}

impl RelayIntake {
    /// The relay's TLS configuration, for a shared listener to finish handshakes with.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.acceptor.config().clone()
    }

    /// A place for `client` under the total and per-address limits, or None (counted).
    fn admit(&self, client: SocketAddr) -> Option<ConnectionSlot> {
        let open = self.stats.connections_open.load(Ordering::Relaxed) as usize;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(client.ip()).or_default();
        if open >= self.max_connections || *count >= self.max_connections_per_ip {
            if *count == 0 {
                per_ip.remove(&client.ip());
            }
            self.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(%client, "TURN connection refused: too many");
            return None;
        }
        *count += 1;
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            client,
            per_ip: self.per_ip.clone(),
            stats: self.stats.clone(),
        })
    }

    /// Serves a connection whose TLS handshake another listener completed (with this relay's
    /// certificate), under the same limits as the relay's own connections.
    pub fn hand_over<S>(&self, tls: S, client: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(slot) = self.admit(client) else {
            return;
        };
        self.stats
            .connections_shared
            .fetch_add(1, Ordering::Relaxed);
        let intake = self.clone();
        tokio::spawn(async move {
            intake.serve(tls, client).await;
            drop(slot);
        });
    }

    /// Handshakes a raw connection from the relay's own listener, then serves it.
    async fn handshake_and_serve(self, stream: TcpStream, client: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let accepted = tokio::time::timeout(HANDSHAKE_DEADLINE, self.acceptor.accept(stream));
        match accepted.await {
            Ok(Ok(tls)) => self.serve(tls, client).await,
            Ok(Err(error)) => debug!(%client, %error, "TURN TLS handshake failed"),
            Err(_) => debug!(%client, "TURN TLS handshake too slow"),
        }
    }

    /// One client past TLS: frames in (to the core) and frames out (from its queue).
    async fn serve<S>(&self, tls: S, client: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (events, stats) = (&self.events, &self.stats);
        let (mut reader, mut writer) = tokio::io::split(tls);
        let (frames, mut outbox) = mpsc::channel::<Vec<u8>>(CLIENT_QUEUE);
        if events
            .send(Event::Connected { client, frames })
            .await
            .is_err()
        {
            return;
        }
        let write = async {
            let mut batch = Vec::with_capacity(16 * 1024);
            while let Some(frame) = outbox.recv().await {
                batch.clear();
                push_padded(&mut batch, &frame);
                // Whatever else is queued goes out in the same TLS record.
                while batch.len() < 64 * 1024 {
                    match outbox.try_recv() {
                        Ok(frame) => push_padded(&mut batch, &frame),
                        Err(_) => break,
                    }
                }
                if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
        };
        let read = async {
            let mut framer = StreamFramer::new();
            let mut buffer = vec![0u8; 16 * 1024];
            let first_frame_by = tokio::time::Instant::now() + FIRST_FRAME_DEADLINE;
            let mut framed = false;
            loop {
                let read = reader.read(&mut buffer);
                let read = if framed {
                    read.await
                } else {
                    match tokio::time::timeout_at(first_frame_by, read).await {
                        Ok(read) => read,
                        Err(_) => {
                            stats.connections_cut_idle.fetch_add(1, Ordering::Relaxed);
                            debug!(%client, "TURN connection cut: no frame in time");
                            return;
                        }
                    }
                };
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                framer.push(&buffer[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => {
                            framed = true;
                            if events.send(Event::Frame { client, frame }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            stats
                                .connections_cut_for_garbage
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%client, %error, "TURN connection cut");
                            return;
                        }
                    }
                }
            }
        };
        // Either side ending ends the connection (the core closes the queue on TcpClose).
        tokio::select! {
            _ = write => {}
            _ = read => {}
        }
        let _ = events.send(Event::Closed { client }).await;
    }
}

async fn accept_loop(listener: TcpListener, intake: RelayIntake) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and the like: wait a little rather than spin.
                warn!(%error, "TURN accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = intake.admit(client) else {
            continue;
        };
        let intake = intake.clone();
        tokio::spawn(async move {
            intake.handshake_and_serve(stream, client).await;
            drop(slot);
        });
    }
}

/// ChannelData over TCP is padded to a multiple of 4 (RFC 8656 §12.5); STUN already is.
fn push_padded(batch: &mut Vec<u8>, frame: &[u8]) {
    batch.extend_from_slice(frame);
    if frame.first().is_some_and(|b| b >> 6 == 0b01) {
        let padded = frame.len().div_ceil(4) * 4;
        batch.resize(batch.len() + (padded - frame.len()), 0);
    }
}

struct RelayedSocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

struct Core {
    server: TurnServer,
    listen: SocketAddr,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Users already handed to the protocol (only after their MESSAGE-INTEGRITY checked out).
    known_users: HashSet<String>,
    /// By advertised relayed address.
    sockets: HashMap<SocketAddr, RelayedSocket>,
    events: mpsc::Sender<Event>,
    base: std::time::Instant,
}

impl Core {
    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
        let mut wake = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => {
                    if *stop.borrow() {
                        break;
                    }
                }
            }
            let now = self.now();
            // Never in the past (and never a busy loop): at least a millisecond ahead.
            let next = self.drive().max(now + Duration::from_millis(1));
            wake = tokio::time::Instant::from_std(next.to_std(self.base));
        }
        for (_, socket) in self.sockets.drain() {
            socket.reader.abort();
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Connected { client, frames } => {
                self.clients.insert(client, frames);
            }
            Event::Closed { client } => {
                self.clients.remove(&client);
            }
            Event::Frame { client, frame } => {
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                match self.config.gate.judge(&frame, unix) {
                    Verdict::Refuse { reason, reply } => {
                        debug!(%client, %reason, "TURN request refused");
                        self.stats.count_refusal(reason.kind());
                        if let Some(reply) = reply {
                            self.send_to_client(client, reply);
                        }
                    }
                    Verdict::Pass { user } => {
                        if let Some((username, password)) = user {
                            self.learn_user(&frame, username, password);
                        }
                        let transmit = Transmit::new(
                            frame.as_slice(),
                            TransportType::Tcp,
                            client,
                            self.listen,
                        );
                        if let Some(reply) = self.server.recv(transmit, now) {
                            self.dispatch(reply.build());
                        }
                    }
                }
            }
            Event::FromPeer {
                relayed,
                from,
                data,
            } => {
                let transmit = Transmit::new(data.as_slice(), TransportType::Udp, from, relayed);
                if let Some(forward) = self.server.recv(transmit, now) {
                    self.dispatch(forward.build());
                }
            }
        }
    }

    /// Hands a REST user to the protocol once a message proves it holds the credential: an
    /// attacker inventing usernames cannot grow the protocol's user table. A message that
    /// fails is counted here and still goes to the protocol, which answers it with a 401.
    fn learn_user(&mut self, frame: &[u8], username: String, password: String) {
        let Ok(message) = Message::from_bytes(frame) else {
            return;
        };
        let key = LongTermKeyCredentials::new(
            username.clone(),
            password.clone(),
            self.config.realm.clone(),
        );
        if message.validate_integrity(&key.into()).is_err() {
            self.stats.refused_forged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.known_users.insert(username.clone()) {
            self.server.add_user(username, password);
        }
    }

    /// Runs the protocol's timers and requests; returns when to wake next.
    fn drive(&mut self) -> Instant {
        let now = self.now();
        let next = loop {
            match self.server.poll(now) {
                TurnServerPollRet::WaitUntil(at) => break at,
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let result = self.allocate(allocation_transport, family);
                    self.server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        result,
                        now,
                    );
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    if let Some(socket) = self.sockets.remove(&listen_addr) {
                        socket.reader.abort();
                        self.stats.allocations.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                TurnServerPollRet::TcpConnect {
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                } => {
                    // The gate refuses CONNECT; should one get here, refuse it again.
                    self.server.tcp_connected(
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                        Err(TcpConnectError::Forbidden),
                        now,
                    );
                }
                TurnServerPollRet::TcpClose { remote_addr, .. } => {
                    // Dropping the queue ends the connection's writer, and so the connection.
                    self.clients.remove(&remote_addr);
                }
            }
        };
        while let Some(transmit) = self.server.poll_transmit(now) {
            self.dispatch(transmit);
        }
        // Wake at least once a second: allocations expire on the protocol's clock.
        next.min(now + Duration::from_secs(1))
    }

    fn allocate(
        &mut self,
        transport: TransportType,
        family: AddressFamily,
    ) -> Result<SocketAddr, SocketAllocateError> {
        let family_ok = matches!(
            (family, self.config.relay_public_ip),
            (AddressFamily::IPV4, IpAddr::V4(_)) | (AddressFamily::IPV6, IpAddr::V6(_))
        );
        if !family_ok {
            return Err(SocketAllocateError::AddressFamilyNotSupported);
        }
        if transport != TransportType::Udp || self.sockets.len() >= self.config.max_allocations {
            self.stats
                .allocations_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let bound = std::net::UdpSocket::bind((self.config.relay_bind_ip, 0))
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .and_then(UdpSocket::from_std);
        let socket = match bound {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                warn!(%error, "cannot bind a relayed socket");
                self.stats
                    .allocations_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(SocketAllocateError::InsufficientCapacity);
            }
        };
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let relayed = SocketAddr::new(self.config.relay_public_ip, port);
        let reader = tokio::spawn(read_relayed(socket.clone(), relayed, self.events.clone()));
        self.sockets
            .insert(relayed, RelayedSocket { socket, reader });
        self.stats.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(relayed)
    }

    fn dispatch(&mut self, transmit: Transmit<Vec<u8>>) {
        match transmit.transport {
            TransportType::Tcp => {
                self.stats
                    .relayed_to_clients
                    .fetch_add(1, Ordering::Relaxed);
                self.send_to_client(transmit.to, transmit.data);
            }
            TransportType::Udp => {
                // Defence in depth: the gate already limited peers to the SFU.
                if !self.config.gate.peers.contains(&transmit.to) {
                    self.stats.count_refusal("peer");
                    return;
                }
                if let Some(relayed) = self.sockets.get(&transmit.from) {
                    if relayed
                        .socket
                        .try_send_to(&transmit.data, transmit.to)
                        .is_ok()
                    {
                        self.stats.relayed_to_sfu.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn send_to_client(&mut self, client: SocketAddr, frame: Vec<u8>) {
        let Some(queue) = self.clients.get(&client) else {
            return;
        };
        match queue.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats
                    .dropped_slow_client
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.clients.remove(&client);
            }
        }
    }
}

async fn read_relayed(socket: Arc<UdpSocket>, relayed: SocketAddr, events: mpsc::Sender<Event>) {
    let mut buffer = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let event = Event::FromPeer {
            relayed,
            from,
            data: buffer[..n].to_vec(),
        };
        // Full inbox: drop, as the network would.
        if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event) {
            return;
        }
    }
}
