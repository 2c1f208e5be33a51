//! Linux plumbing: CPU time and RSS from /proc, CPU pinning, batched UDP receive and send.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// CPU time of a process in seconds: the sum of its threads' run time from
/// /proc/<pid>/task/*/schedstat (nanoseconds), or utime + stime from /proc/<pid>/stat (clock
/// ticks) where schedstat is missing.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let mut total_ns: u64 = 0;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                if let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    total_ns += ns;
                    found = true;
                }
            }
        }
    }
    if found {
        return Ok(total_ns as f64 / 1e9);
    }
    cpu_seconds_stat(pid)
}

/// utime + stime of a process (all its threads, also exited ones), in seconds.
pub fn cpu_seconds_stat(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Pins the calling thread (and the threads it creates later) to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Buffers for receiving up to `BATCH` datagrams with one recvmmsg call.
pub struct RecvBatch {
    bufs: Vec<[u8; 2048]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

pub const BATCH: usize = 32;

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: vec![[0u8; 2048]; BATCH],
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Receives what is waiting (at most [`BATCH`]), without blocking. IPv4 only.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The `i`th datagram of the last [`RecvBatch::recv`] and where it came from.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let a = &self.addrs[i];
        let addr = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        );
        (
            &self.bufs[i][..self.msgs[i].msg_len as usize],
            SocketAddr::V4(addr),
        )
    }
}

/// Datagrams queued for one sendmmsg call.
pub struct SendBatch {
    data: Vec<u8>,
    /// (offset, len, destination)
    entries: Vec<(usize, usize, libc::sockaddr_in)>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

pub fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    sa
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            data: Vec::with_capacity(64 * 2048),
            entries: Vec::with_capacity(64),
            iovs: Vec::with_capacity(64),
            msgs: Vec::with_capacity(64),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a datagram; `fill` writes it into the given buffer and returns its length.
    pub fn push_with(&mut self, to: &libc::sockaddr_in, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        fill(&mut self.data);
        self.entries.push((start, self.data.len() - start, *to));
    }

    /// Sends everything queued (datagrams the kernel refuses are dropped) and clears.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut sent = 0;
        let mut first = 0;
        while first < self.entries.len() {
            self.iovs.clear();
            self.msgs.clear();
            let batch = &mut self.entries[first..];
            let count = batch.len().min(1024);
            for (off, len, _) in batch[..count].iter() {
                self.iovs.push(libc::iovec {
                    iov_base: unsafe { self.data.as_mut_ptr().add(*off) }.cast(),
                    iov_len: *len,
                });
            }
            for (i, (_, _, to)) in batch[..count].iter_mut().enumerate() {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (to as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = unsafe { self.iovs.as_mut_ptr().add(i) };
                m.msg_hdr.msg_iovlen = 1;
                self.msgs.push(m);
            }
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    count as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // Buffer full or an unreachable peer: drop this datagram and go on.
                first += 1;
            } else {
                sent += n as usize;
                first += n as usize;
            }
        }
        self.entries.clear();
        self.data.clear();
        sent
    }
}

/// A non-blocking IPv4 UDP socket with big kernel buffers.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = unsafe { <std::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let size = buffer as libc::c_int;
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
    }
    let sa = sockaddr(addr);
    let rc = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Is this datagram an RTP (not RTCP) packet? RTP version 2, and a second byte outside the
/// RTCP packet types 192..=223.
pub fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_tcp_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free UDP port on 127.0.0.1 (bound, then released).
pub fn free_udp_port() -> io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends one datagram without waiting (dropped if the kernel buffer is full).
pub fn send_to(socket: &impl AsRawFd, data: &[u8], to: SocketAddr) {
    let sa = sockaddr(to);
    unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
    }
}

/// How the servers are started: pinned to a CPU (`taskset -c`, which execs, so the child's pid
/// is the server's). They inherit the generator's priority (see [`set_nice`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement {
    pub cpu: Option<usize>,
}

impl Placement {
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        match self.cpu {
            Some(cpu) => {
                let mut cmd = tokio::process::Command::new("taskset");
                cmd.args(["-c", &cpu.to_string()]).arg(program);
                cmd
            }
            None => tokio::process::Command::new(program),
        }
    }
}

/// Raises the priority of the calling thread (inherited by the threads and processes it
/// starts later) and of its scheduler autogroup. With autogroups (the default on desktop
/// and many server kernels) CPU time is first shared between sessions, whatever the nice
/// value of a process, so the session's group gets the same nice value (best effort).
pub fn set_nice(n: i32) -> io::Result<()> {
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = std::fs::write("/proc/self/autogroup", n.to_string());
    Ok(())
}

/// Datagrams the kernel dropped on arrival at the UDP sockets of a process (receive buffer
/// full), summed from the `drops` column of /proc/net/udp over the process' socket inodes.
pub fn udp_drops(pid: u32) -> u64 {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode = f.get(9)?;
            if !inodes.contains(*inode) {
                return None;
            }
            f.get(12)?.parse::<u64>().ok()
        })
        .sum()
}
