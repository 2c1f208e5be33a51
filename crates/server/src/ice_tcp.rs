//! ICE over TCP (RFC 6544) for networks that drop UDP: the listener of the SFU's passive TCP
//! candidate and its connections, each carrying datagrams framed per RFC 4571 (a 16-bit
//! length before each one).
//!
//! The media loop owns a [`TcpMedia`]: it accepts connections, and every connection gets a
//! reader task (frames in, to the loop) and a writer task (frames out, batched into one write
//! per wakeup). The loop hands the frames to the SFU as [`sfu::Transport::Tcp`] datagrams and
//! queues what the SFU sends to a TCP peer on that peer's writer without ever waiting: a slow
//! or stalled peer loses its own packets and, if it stays stalled, its connection, and nobody
//! else notices.
//!
//! Strangers cost little: a connection that is not yet a participant's (no frame of it has
//! been accepted by the SFU) must send a frame within [`HELLO_DEADLINE`], at most
//! [`TcpLimits::pending_per_ip`] such connections are open per address, and the first frame
//! the SFU refuses (not STUN, DTLS or RTP, or a STUN for no participant) closes it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::{Encoder, FramedRead, LengthDelimitedCodec};
use tracing::debug;

/// A new connection's first frame must arrive within this (slowloris).
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// A connection silent this long is closed. Browsers send ICE consent checks every ~5 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that cannot finish in this long means the peer stopped reading: it is cut off.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// Frames queued for one peer's writer; beyond this the peer's link is not keeping up and
/// newer frames are dropped (the SFU's NACK and keyframe handling recover, as after loss).
const OUTBOUND_QUEUE: usize = 512;
/// Frames the readers may have in flight to the media loop before they wait (which, through
/// TCP flow control, slows the peers down instead of buffering without bound).
const INBOUND_QUEUE: usize = 2048;
/// The most bytes one write carries: a batch of frames, like one `sendmmsg`.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// RFC 4571 framing: a 16-bit big-endian length, then the datagram.
pub fn rfc4571_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(u16::MAX as usize)
        .new_codec()
}

/// Caps on TCP media connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections in all.
    pub total: usize,
    /// Connections from one address that no participant owns yet. Owned ones do not count:
    /// a whole institution may sit behind one NAT address.
    pub pending_per_ip: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            total: 4096,
            pending_per_ip: 8,
        }
    }
}

/// Why a connection was refused or closed, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpRefusal {
    /// Too many connections in all.
    Total,
    /// Too many not-yet-owned connections from the connection's address.
    PendingPerIp,
    /// A frame the SFU refused (garbage, or STUN for no participant).
    BadFrame,
    /// No first frame within the hello deadline, or silent too long.
    Timeout,
    /// The peer stopped reading what it is sent.
    Stalled,
}

impl TcpRefusal {
    pub const ALL: [TcpRefusal; 5] = [
        TcpRefusal::Total,
        TcpRefusal::PendingPerIp,
        TcpRefusal::BadFrame,
        TcpRefusal::Timeout,
        TcpRefusal::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TcpRefusal::Total => "total_connections",
            TcpRefusal::PendingPerIp => "pending_per_address",
            TcpRefusal::BadFrame => "bad_frame",
            TcpRefusal::Timeout => "timeout",
            TcpRefusal::Stalled => "stalled",
        }
    }
}

/// The bookkeeping of which connections are open and owned: pure, so the caps are tested
/// without sockets.
#[derive(Debug, Default)]
pub struct TcpAdmission {
    limits: TcpLimits,
    open: HashMap<SocketAddr, bool>,
    pending_by_ip: HashMap<IpAddr, usize>,
}

impl TcpAdmission {
    pub fn new(limits: TcpLimits) -> Self {
        TcpAdmission {
            limits,
            ..TcpAdmission::default()
        }
    }

    /// Takes a new connection from `peer`, or says why not.
    pub fn admit(&mut self, peer: SocketAddr) -> Result<(), TcpRefusal> {
        if self.open.len() >= self.limits.total {
            return Err(TcpRefusal::Total);
        }
        let pending = self.pending_by_ip.entry(peer.ip()).or_default();
        if *pending >= self.limits.pending_per_ip {
            return Err(TcpRefusal::PendingPerIp);
        }
        *pending += 1;
        self.open.insert(peer, false);
        Ok(())
    }

    /// A frame of `peer`'s was accepted by the SFU: it belongs to a participant now.
    pub fn owned(&mut self, peer: SocketAddr) {
        if let Some(owned @ false) = self.open.get_mut(&peer) {
            *owned = true;
            self.release_pending(peer.ip());
        }
    }

    #[cfg(test)]
    pub fn is_owned(&self, peer: SocketAddr) -> bool {
        self.open.get(&peer).copied().unwrap_or(false)
    }

    pub fn closed(&mut self, peer: SocketAddr) {
        if self.open.remove(&peer) == Some(false) {
            self.release_pending(peer.ip());
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    fn release_pending(&mut self, ip: IpAddr) {
        if let Some(n) = self.pending_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_by_ip.remove(&ip);
            }
        }
    }
}

/// What the connection tasks tell the media loop.
pub enum TcpEvent {
    Frame(SocketAddr, BytesMut),
    Closed(SocketAddr, Option<TcpRefusal>),
}

struct Connection {
    outbound: mpsc::Sender<Bytes>,
    reader: AbortHandle,
    writer: AbortHandle,
}

/// Counters of the TCP media connections, for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TcpStats {
    pub open: usize,
    /// Connections refused or closed, by reason.
    pub refused: HashMap<TcpRefusal, u64>,
    /// Frames dropped because a peer's writer queue was full.
    pub dropped_frames: u64,
}

/// The TCP media connections. Lives on the media loop's thread, which also owns the listener
/// and the receiver of [`TcpEvent`]s (apart, so that the loop can wait on both at once).
pub struct TcpMedia {
    admission: TcpAdmission,
    connections: HashMap<SocketAddr, Connection>,
    events: mpsc::Sender<TcpEvent>,
    stats: TcpStats,
}

impl TcpMedia {
    pub fn new(limits: TcpLimits) -> (Self, mpsc::Receiver<TcpEvent>) {
        let (events, receiver) = mpsc::channel(INBOUND_QUEUE);
        let media = TcpMedia {
            admission: TcpAdmission::new(limits),
            connections: HashMap::new(),
            events,
            stats: TcpStats::default(),
        };
        (media, receiver)
    }

    pub fn stats(&self) -> TcpStats {
        TcpStats {
            open: self.admission.open_connections(),
            ..self.stats.clone()
        }
    }

    /// Takes an accepted connection (within the caps) and starts its reader and writer.
    pub fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
        if let Err(why) = self.admission.admit(peer) {
            debug!(%peer, reason = why.as_str(), "TCP media connection refused");
            *self.stats.refused.entry(why).or_default() += 1;
            // Dropping the stream closes it.
            return;
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let reader = tokio::spawn(read_frames(read, peer, self.events.clone())).abort_handle();
        let writer =
            tokio::spawn(write_frames(write, peer, queue, self.events.clone())).abort_handle();
        self.connections.insert(
            peer,
            Connection {
                outbound,
                reader,
                writer,
            },
        );
    }

    /// A frame of `peer`'s was accepted by the SFU.
    pub fn owned(&mut self, peer: SocketAddr) {
        self.admission.owned(peer);
    }

    /// Closes `peer`'s connection (if open), counting why.
    pub fn close(&mut self, peer: SocketAddr, why: Option<TcpRefusal>) {
        if let Some(connection) = self.connections.remove(&peer) {
            connection.reader.abort();
            connection.writer.abort();
            self.admission.closed(peer);
            if let Some(why) = why {
                debug!(%peer, reason = why.as_str(), "TCP media connection closed");
                *self.stats.refused.entry(why).or_default() += 1;
            }
        }
    }

    /// Queues a datagram for `peer` without waiting: dropped if its queue is full.
    pub fn send(&mut self, peer: SocketAddr, datagram: &[u8]) {
        let Some(connection) = self.connections.get(&peer) else {
            return;
        };
        match connection
            .outbound
            .try_send(Bytes::copy_from_slice(datagram))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.stats.dropped_frames += 1,
            // The writer ended; its close event is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

async fn read_frames(
    read: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
) {
    let mut frames = FramedRead::new(read, rfc4571_codec());
    let mut wait = HELLO_DEADLINE;
    let why = loop {
        match tokio::time::timeout(wait, frames.next()).await {
            Ok(Some(Ok(frame))) => {
                if events.send(TcpEvent::Frame(peer, frame)).await.is_err() {
                    return;
                }
                wait = IDLE_TIMEOUT;
            }
            // A length the codec refuses cannot happen with 16 bits; EOF or a reset is a close.
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => break Some(TcpRefusal::Timeout),
        }
    };
    let _ = events.send(TcpEvent::Closed(peer, why)).await;
}

async fn write_frames(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    peer: SocketAddr,
    mut queue: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<TcpEvent>,
) {
    let mut codec = rfc4571_codec();
    let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    let why = loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        batch.clear();
        // Everything already queued goes in the same write.
        let mut next = Some(first);
        while let Some(datagram) = next.take() {
            if codec.encode(datagram, &mut batch).is_err() {
                continue;
            }
            if batch.len() < WRITE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        match tokio::time::timeout(WRITE_STALL, write.write_all(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break None,
            Err(_) => break Some(TcpRefusal::Stalled),
        }
    };
    let _ = events.send(TcpEvent::Closed(peer, why)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn strangers_from_one_address_are_capped_but_owned_connections_are_not() {
        let mut admission = TcpAdmission::new(TcpLimits {
            total: 100,
            pending_per_ip: 2,
        });
        let nat = [198, 18, 0, 2];
        admission.admit(addr(nat, 1)).unwrap();
        admission.admit(addr(nat, 2)).unwrap();
        assert_eq!(admission.admit(addr(nat, 3)), Err(TcpRefusal::PendingPerIp));
        // Another address is not affected.
        admission.admit(addr([198, 18, 0, 3], 1)).unwrap();
        // Once a participant owns one, another stranger from the same NAT may knock.
        admission.owned(addr(nat, 1));
        assert!(admission.is_owned(addr(nat, 1)));
        admission.admit(addr(nat, 3)).unwrap();
        assert_eq!(admission.admit(addr(nat, 4)), Err(TcpRefusal::PendingPerIp));
        // Closing a pending one frees its place; closing an owned one frees none.
        admission.closed(addr(nat, 2));
        admission.admit(addr(nat, 4)).unwrap();
        admission.closed(addr(nat, 1));
        assert_eq!(admission.admit(addr(nat, 5)), Err(TcpRefusal::PendingPerIp));
        assert_eq!(admission.open_connections(), 3);
    }

    #[test]
    fn the_total_cap_holds_whatever_the_addresses() {
        let mut admission = TcpAdmission::new(TcpLimits {
            total: 3,
            pending_per_ip: 8,
        });
        for i in 0..3u8 {
            admission.admit(addr([198, 18, 1, i], 9)).unwrap();
            admission.owned(addr([198, 18, 1, i], 9));
        }
        assert_eq!(
            admission.admit(addr([198, 18, 2, 1], 9)),
            Err(TcpRefusal::Total)
        );
        admission.closed(addr([198, 18, 1, 0], 9));
        admission.admit(addr([198, 18, 2, 1], 9)).unwrap();
    }

    #[test]
    fn rfc4571_frames_are_a_16_bit_length_then_the_datagram() {
        let mut codec = rfc4571_codec();
        let mut out = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"\x00\x01abc"), &mut out)
            .unwrap();
        assert_eq!(&out[..], b"\x00\x05\x00\x01abc");
        let mut decoder = rfc4571_codec();
        let frame = tokio_util::codec::Decoder::decode(&mut decoder, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(&frame[..], b"\x00\x01abc");
        // A datagram longer than 16 bits can say is refused, not truncated.
        let mut out = BytesMut::new();
        assert!(codec
            .encode(Bytes::from(vec![0u8; 70_000]), &mut out)
            .is_err());
    }
}
