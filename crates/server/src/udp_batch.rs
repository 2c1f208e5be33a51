//! Batched UDP IO for the media socket: `recvmmsg` and `sendmmsg` move many datagrams per
//! system call, into and out of buffers that are allocated once.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per system call. 32 covers the bursts one video frame fans out into at
/// meeting sizes the server targets, while keeping the buffers small (64 KiB).
pub const BATCH: usize = 32;

/// Largest datagram kept; WebRTC stays under the path MTU (str0m sends at most 1150-byte
/// RTP packets by default; browsers stay under ~1200), so longer ones are not media.
const DATAGRAM_MAX: usize = 2048;

/// Buffers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM_MAX]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    len: usize,
}

// SAFETY: the raw pointers in `iovs` and `msgs` only ever point into this struct's own boxed
// buffers, and are rewritten before each use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: vec![[0u8; DATAGRAM_MAX]; BATCH].into_boxed_slice(),
            // SAFETY: all-zero is a valid value for these plain C structs.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                BATCH
            ]
            .into_boxed_slice(),
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH].into_boxed_slice(),
            len: 0,
        }
    }

    /// Receives what is waiting, up to [`BATCH`] datagrams, without blocking
    /// (`WouldBlock` when there is nothing).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.len = 0;
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM_MAX,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the lengths given, owned by self.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// The datagrams of the last [`RecvBatch::recv`] with their senders. Truncated datagrams
    /// and senders of an unknown address family are skipped.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.len).filter_map(|i| {
            let msg = &self.msgs[i];
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return None;
            }
            let len = (msg.msg_len as usize).min(DATAGRAM_MAX);
            let source = from_sockaddr(&self.addrs[i])?;
            Some((source, &self.bufs[i][..len]))
        })
    }
}

/// Datagrams queued for `sendmmsg`: their bytes back to back in one reused buffer.
pub struct SendBatch {
    data: Vec<u8>,
    /// (offset in `data`, length, destination)
    entries: Vec<(usize, usize, libc::sockaddr_storage, libc::socklen_t)>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Entries before this one are sent.
    sent: usize,
}

// SAFETY: as for RecvBatch, the pointers are rebuilt from owned buffers before each call.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            data: Vec::with_capacity(BATCH * 1500),
            entries: Vec::with_capacity(BATCH),
            iovs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            sent: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a datagram (copied into the batch buffer).
    pub fn push(&mut self, destination: SocketAddr, contents: &[u8]) {
        let (addr, addr_len) = to_sockaddr(destination);
        let start = self.data.len();
        self.data.extend_from_slice(contents);
        self.entries.push((start, contents.len(), addr, addr_len));
    }

    /// Sends as much of the queue as the socket takes in one call, without blocking. Returns
    /// how many went (`WouldBlock` when the socket buffer is full). A datagram the kernel
    /// refuses outright (an unreachable destination) is dropped so that it cannot hold up
    /// the rest; that error is returned.
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let count = self.len().min(BATCH);
        self.iovs.clear();
        self.msgs.clear();
        for (offset, len, _, _) in &self.entries[self.sent..self.sent + count] {
            self.iovs.push(libc::iovec {
                // SAFETY: offset + len lies within data (pushed together above).
                iov_base: unsafe { self.data.as_mut_ptr().add(*offset) }.cast(),
                iov_len: *len,
            });
        }
        for (i, (_, _, addr, addr_len)) in self.entries[self.sent..self.sent + count]
            .iter_mut()
            .enumerate()
        {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = *addr_len;
            // SAFETY: i < count == iovs.len().
            msg.msg_hdr.msg_iov = unsafe { self.iovs.as_mut_ptr().add(i) };
            msg.msg_hdr.msg_iovlen = 1;
            self.msgs.push(msg);
        }
        // SAFETY: the headers point into self.iovs, self.entries and self.data, all alive and
        // unchanged during the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                self.sent += 1;
                self.clear_if_done();
            }
            return Err(error);
        }
        self.sent += n as usize;
        self.clear_if_done();
        Ok(n as usize)
    }

    fn clear_if_done(&mut self) {
        if self.sent == self.entries.len() {
            self.entries.clear();
            self.data.clear();
            self.sent = 0;
        }
    }
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_datagrams_both_ways_in_batches() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut out = SendBatch::new();
        for i in 0..40u8 {
            out.push(to, &[i; 100]);
        }
        let mut sent = 0;
        while !out.is_empty() {
            sent += out.send(&a).unwrap();
        }
        assert_eq!(sent, 40);
        let mut inbox = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 40 {
            match inbox.recv(&b) {
                Ok(_) => got.extend(inbox.datagrams().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        for (i, (from, d)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(d, &vec![i as u8; 100]);
        }
        assert_eq!(
            from_sockaddr(&to_sockaddr("[::1]:4242".parse().unwrap()).0),
            Some("[::1]:4242".parse().unwrap())
        );
    }
}
