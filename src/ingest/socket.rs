//! UDP sockets: binding with the receive-buffer options, and batched receive.
//!
//! On Linux, [`Receiver::recv_batch`] reads up to `batch` datagrams per system call
//! with `recvmmsg` into buffers allocated once; [`Receiver::kernel_drops`] asks
//! the socket for the kernel's drop count (`SO_MEMINFO`), which the receive loop
//! does once per hand-off rather than paying for a control message on every
//! datagram (`SO_RXQ_OVFL` cost 3–4 % of herald's CPU at high rates).
//! Elsewhere (Windows servers) a plain `recv_from` loop does the same job one
//! datagram per call. Each buffer is one byte longer than `max_datagram_bytes`,
//! so an oversized datagram is detected rather than silently cut. This module knows nothing of allowlists or parsing.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// How long a blocking receive waits before returning, so the thread can notice
/// shutdown.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A bound socket and what the kernel granted.
#[derive(Debug)]
pub struct Bound {
    /// The socket, ready to move to its receive thread.
    pub socket: UdpSocket,
    /// The address it is bound to (with the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The receive buffer the kernel granted, in bytes.
    pub receive_buffer_bytes: usize,
}

/// Binds `addr` with a receive buffer of `receive_buffer_bytes`.
///
/// On Linux the buffer is capped by `net.core.rmem_max`; when it comes out smaller
/// than asked, `SO_RCVBUFFORCE` is tried (it works when running as root or with
/// `CAP_NET_ADMIN`). An IPv6 wildcard address also receives IPv4. With
/// `reuse_port`, other sockets that set it too may bind the same address, and
/// the kernel spreads senders across them by a hash of source and destination.
///
/// # Errors
///
/// When the socket cannot be created or bound; `reuse_port` outside Linux
/// (elsewhere `SO_REUSEPORT` does not spread senders, or does not exist).
pub fn bind(addr: SocketAddr, receive_buffer_bytes: usize, reuse_port: bool) -> io::Result<Bound> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    if reuse_port {
        #[cfg(target_os = "linux")]
        socket.set_reuse_port(true)?;
        #[cfg(not(target_os = "linux"))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "ingest.reuse_port needs Linux; run one herald per port elsewhere",
        ));
    }
    // Best effort: a smaller buffer still works, and the granted size is reported.
    // SO_RCVBUFFORCE (root or CAP_NET_ADMIN) is not capped by net.core.rmem_max;
    // either way the kernel doubles the value for its own bookkeeping.
    #[cfg(target_os = "linux")]
    {
        if linux::force_receive_buffer(&socket, receive_buffer_bytes).is_err() {
            let _ = socket.set_recv_buffer_size(receive_buffer_bytes);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket.set_recv_buffer_size(receive_buffer_bytes);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    let receive_buffer_bytes = socket.recv_buffer_size()?;
    let socket: UdpSocket = socket.into();
    let local_addr = socket.local_addr()?;
    Ok(Bound {
        socket,
        local_addr,
        receive_buffer_bytes,
    })
}

/// Whether [`Receiver::recv_batch`] waits for the first datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Up to [`POLL_INTERVAL`] (so the thread still notices shutdown).
    Block,
    /// Not at all: take what is queued.
    Never,
}

/// One received datagram, borrowed from the receiver's buffers.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The payload (at most `max_datagram_bytes + 1` bytes).
    pub payload: &'a [u8],
    /// The sender.
    pub peer: SocketAddr,
    /// Whether the datagram was longer than `max_datagram_bytes`.
    pub oversized: bool,
}

/// Reads batches of datagrams from one socket. Create it on the thread that uses it.
pub struct Receiver {
    batch_size: usize,
    #[cfg(target_os = "linux")]
    socket: UdpSocket,
    #[cfg(target_os = "linux")]
    max_datagram_bytes: usize,
    #[cfg(target_os = "linux")]
    batch: linux::Batch,
    #[cfg(not(target_os = "linux"))]
    portable: PortableReceiver,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// Prepares buffers for `batch_size` datagrams of up to `max_datagram_bytes`.
    pub fn new(socket: UdpSocket, batch_size: usize, max_datagram_bytes: usize) -> Receiver {
        let batch_size = batch_size.max(1);
        #[cfg(target_os = "linux")]
        {
            Receiver {
                batch_size,
                socket,
                max_datagram_bytes,
                batch: linux::Batch::new(batch_size, max_datagram_bytes + 1),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Receiver {
                batch_size,
                portable: PortableReceiver::new(socket, batch_size, max_datagram_bytes),
            }
        }
    }

    /// Most datagrams one call reads.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Waits as `wait` says for datagrams and calls `each` for every one read.
    ///
    /// # Errors
    ///
    /// Socket errors other than a timeout or an interrupted call.
    pub fn recv_batch(&mut self, wait: Wait, mut each: impl FnMut(Datagram<'_>)) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.batch.recv(
                &self.socket,
                self.max_datagram_bytes,
                wait != Wait::Block,
                &mut each,
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.portable.recv_batch(wait != Wait::Block, &mut each)
        }
    }
}

impl Receiver {
    /// The kernel's cumulative drop count for the socket, asked directly; `None`
    /// where the system cannot say.
    pub fn kernel_drops(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            linux::drop_count_now(&self.socket)
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

/// The receive loop for systems without `recvmmsg` (Windows): one `recv_from` per
/// datagram, draining what is queued without blocking after the first. Compiled
/// everywhere so its tests run on Linux too.
#[cfg_attr(target_os = "linux", allow(dead_code))]
struct PortableReceiver {
    socket: UdpSocket,
    max_datagram_bytes: usize,
    batch_size: usize,
    buffer: Vec<u8>,
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
impl PortableReceiver {
    fn new(socket: UdpSocket, batch_size: usize, max_datagram_bytes: usize) -> PortableReceiver {
        PortableReceiver {
            socket,
            max_datagram_bytes,
            batch_size: batch_size.max(1),
            buffer: vec![0; max_datagram_bytes + 1],
        }
    }

    fn recv_batch(
        &mut self,
        nonblocking: bool,
        each: &mut impl FnMut(Datagram<'_>),
    ) -> io::Result<()> {
        let mut result = Ok(());
        if nonblocking {
            self.socket.set_nonblocking(true)?;
        }
        for i in 0..self.batch_size {
            match self.socket.recv_from(&mut self.buffer) {
                Ok((len, peer)) => each(Datagram {
                    payload: &self.buffer[..len.min(self.buffer.len())],
                    peer,
                    oversized: len > self.max_datagram_bytes,
                }),
                Err(err) if is_transient(&err) => break,
                // Windows reports a datagram larger than the buffer as WSAEMSGSIZE,
                // without telling the sender; count it as oversized.
                Err(err) if err.raw_os_error() == Some(10040) => {
                    let local = self.socket.local_addr()?;
                    each(Datagram {
                        payload: &[],
                        peer: local,
                        oversized: true,
                    });
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
            if i == 0 {
                self.socket.set_nonblocking(true)?;
            }
        }
        self.socket.set_nonblocking(false)?;
        result
    }
}

/// Errors that only mean "nothing to read right now".
pub fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) || err.raw_os_error() == Some(libc::ECONNREFUSED)
}

#[cfg(target_os = "linux")]
mod linux {
    //! `recvmmsg` and the Linux-only socket options.

    use std::io;
    use std::mem::{self, MaybeUninit};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use socket2::Socket;

    use super::{Datagram, is_transient};

    fn set_int_option(fd: i32, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` outlives the call and its size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw const value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `SO_RCVBUFFORCE`: ignores `net.core.rmem_max` when permitted.
    pub fn force_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        set_int_option(socket.as_raw_fd(), libc::SO_RCVBUFFORCE, bytes)
    }

    /// `SO_MEMINFO` (include/uapi/asm-generic/socket.h; the same on x86-64 and
    /// arm64): the socket's memory counters, `SK_MEMINFO_DROPS` among them.
    const SO_MEMINFO: libc::c_int = 55;

    /// The socket's cumulative drop count (`SO_MEMINFO`, Linux 4.x and later).
    pub fn drop_count_now(socket: &UdpSocket) -> Option<u32> {
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let drops = libc::SK_MEMINFO_DROPS as usize;
        (rc == 0 && len as usize > drops * 4).then(|| info[drops])
    }

    /// Buffers for one `recvmmsg` call, allocated once and reused.
    pub struct Batch {
        slot_len: usize,
        data: Vec<u8>,
        names: Vec<MaybeUninit<libc::sockaddr_storage>>,
        iovecs: Vec<libc::iovec>,
        headers: Vec<libc::mmsghdr>,
    }

    impl Batch {
        pub fn new(batch_size: usize, slot_len: usize) -> Batch {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let zeroed_header: libc::mmsghdr = unsafe { mem::zeroed() };
            Batch {
                slot_len,
                data: vec![0; batch_size * slot_len],
                names: vec![MaybeUninit::zeroed(); batch_size],
                iovecs: vec![
                    libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0
                    };
                    batch_size
                ],
                headers: vec![zeroed_header; batch_size],
            }
        }

        pub fn recv(
            &mut self,
            socket: &UdpSocket,
            max_datagram_bytes: usize,
            nonblocking: bool,
            each: &mut impl FnMut(Datagram<'_>),
        ) -> io::Result<()> {
            let batch_size = self.headers.len();
            // The kernel rewrites lengths on every call, so every header is reset.
            for i in 0..batch_size {
                self.iovecs[i] = libc::iovec {
                    iov_base: self.data[i * self.slot_len..].as_mut_ptr().cast(),
                    iov_len: self.slot_len,
                };
                let header = &mut self.headers[i].msg_hdr;
                header.msg_name = self.names[i].as_mut_ptr().cast();
                header.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                header.msg_iov = &raw mut self.iovecs[i];
                header.msg_iovlen = 1;
                header.msg_flags = 0;
                self.headers[i].msg_len = 0;
            }
            // SAFETY: every pointer in the headers points into buffers owned by
            // `self` that outlive the call, with their true lengths. The socket's
            // read timeout bounds the wait for the first datagram; MSG_WAITFORONE
            // returns as soon as one has arrived.
            let received = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    batch_size as libc::c_uint,
                    if nonblocking {
                        libc::MSG_DONTWAIT
                    } else {
                        libc::MSG_WAITFORONE
                    },
                    std::ptr::null_mut(),
                )
            };
            if received < 0 {
                let err = io::Error::last_os_error();
                return if is_transient(&err) { Ok(()) } else { Err(err) };
            }
            for i in 0..received as usize {
                let header = &self.headers[i];
                let len = header.msg_len as usize;
                let oversized =
                    len > max_datagram_bytes || header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let Some(peer) = peer_address(&self.names[i], header.msg_hdr.msg_namelen) else {
                    continue;
                };
                let start = i * self.slot_len;
                each(Datagram {
                    payload: &self.data[start..start + len.min(self.slot_len)],
                    peer,
                    oversized,
                });
            }
            Ok(())
        }
    }

    /// The sender address the kernel wrote into `storage`.
    fn peer_address(
        storage: &MaybeUninit<libc::sockaddr_storage>,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
        let len = len as usize;
        // SAFETY: the storage was zero-initialised and the kernel wrote `len` bytes
        // of a sockaddr of the family it names; we read only within that length.
        unsafe {
            let storage = storage.as_ptr();
            match i32::from((*storage).ss_family) {
                libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                    let addr = &*storage.cast::<libc::sockaddr_in>();
                    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        ip,
                        u16::from_be(addr.sin_port),
                    )))
                }
                libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                    let addr = &*storage.cast::<libc::sockaddr_in6>();
                    let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        u16::from_be(addr.sin6_port),
                        addr.sin6_flowinfo,
                        addr.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(max: usize) -> (Receiver, SocketAddr) {
        let bound = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, false).unwrap();
        (Receiver::new(bound.socket, 16, max), bound.local_addr)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn with_reuse_port_two_sockets_share_a_port_and_without_it_they_cannot() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 1 << 16, true).unwrap();
        let second = bind(first.local_addr, 1 << 16, true).unwrap();
        assert_eq!(second.local_addr, first.local_addr);
        let err = bind(first.local_addr, 1 << 16, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let plain = bind("127.0.0.1:0".parse().unwrap(), 1 << 16, false).unwrap();
        assert!(bind(plain.local_addr, 1 << 16, true).is_err());
    }

    #[test]
    fn receives_a_batch_with_senders() {
        let (mut receiver, addr) = receiver(1024);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5 {
            sender
                .send_to(format!("datagram {i}").as_bytes(), addr)
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            receiver
                .recv_batch(Wait::Block, |d| {
                    got.push((
                        String::from_utf8_lossy(d.payload).into_owned(),
                        d.peer,
                        d.oversized,
                    ))
                })
                .unwrap();
        }
        assert_eq!(got[0].0, "datagram 0");
        assert_eq!(got[4].0, "datagram 4");
        assert!(
            got.iter()
                .all(|(_, peer, oversized)| *peer == sender.local_addr().unwrap() && !oversized)
        );
    }

    #[test]
    fn flags_datagrams_over_the_limit() {
        let (mut receiver, addr) = receiver(10);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"0123456789", addr).unwrap();
        sender.send_to(b"0123456789AB", addr).unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            receiver
                .recv_batch(Wait::Block, |d| got.push(d.oversized))
                .unwrap();
        }
        assert_eq!(got, [false, true]);
    }

    #[test]
    fn portable_receiver_reads_batches_and_flags_oversized_datagrams() {
        let bound = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, false).unwrap();
        let mut receiver = PortableReceiver::new(bound.socket, 8, 10);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"short", bound.local_addr).unwrap();
        sender.send_to(b"much too long", bound.local_addr).unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            receiver
                .recv_batch(false, &mut |d| got.push((d.payload.len(), d.oversized)))
                .unwrap();
        }
        assert_eq!(got, [(5, false), (11, true)]);
        // Back to blocking (with the poll timeout) after draining.
        receiver
            .recv_batch(false, &mut |_| panic!("nothing was sent"))
            .unwrap();
    }

    #[test]
    fn returns_empty_handed_after_the_poll_interval() {
        let (mut receiver, _) = receiver(100);
        let mut calls = 0;
        receiver.recv_batch(Wait::Block, |_| calls += 1).unwrap();
        assert_eq!(calls, 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reports_kernel_drops_when_the_buffer_overflows() {
        // A tiny buffer (the kernel's minimum) overflows after a few datagrams.
        let bound = bind("127.0.0.1:0".parse().unwrap(), 1, false).unwrap();
        let receiver = Receiver::new(bound.socket, 64, 2048);
        assert_eq!(receiver.kernel_drops(), Some(0));
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [b'x'; 1000];
        for _ in 0..200 {
            let _ = sender.send_to(&payload, bound.local_addr);
        }
        let drops = receiver.kernel_drops();
        assert!(drops.is_some_and(|count| count > 0), "drops: {drops:?}");
    }
}
