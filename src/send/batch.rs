//! Handing a batch of datagrams to the kernel: one `sendmmsg` per batch on
//! Linux, one `send` per datagram elsewhere. Counts what went out and why the
//! rest did not; never paces (the caller does).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use super::Outcome;

/// Sends a batch on a connected socket, counting what went out and why the
/// rest did not.
#[cfg(target_os = "linux")]
pub(super) fn send_batch(
    socket: &UdpSocket,
    batch: &[&[u8]],
    to: SocketAddr,
    outcome: &mut Outcome,
) {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr; each header then points at one iovec
    // that lives until the call returns.
    let mut headers: Vec<libc::mmsghdr> = (0..batch.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    let (mut next, mut tries) = (0, 0);
    while next < batch.len() {
        // SAFETY: the headers and iovecs are valid for `batch.len() - next` entries.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[next..].as_mut_ptr(),
                (batch.len() - next) as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            outcome.sent += n as u64;
            next += n as usize;
            tries = 0;
            continue;
        }
        let err = if n < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::new(io::ErrorKind::WriteZero, "the kernel took no datagram")
        };
        // An error stops the call at the datagram it could not send: try that
        // one again, or count it as failed and go on with the next.
        if !outcome.error(&err, to, &mut tries) {
            outcome.failed += 1;
            next += 1;
            tries = 0;
        }
    }
}

/// Sends a batch on a connected socket, counting what went out and why the
/// rest did not.
#[cfg(not(target_os = "linux"))]
pub(super) fn send_batch(
    socket: &UdpSocket,
    batch: &[&[u8]],
    to: SocketAddr,
    outcome: &mut Outcome,
) {
    for datagram in batch {
        let mut tries = 0;
        loop {
            match socket.send(datagram) {
                Ok(_) => {
                    outcome.sent += 1;
                    break;
                }
                Err(err) => {
                    if !outcome.error(&err, to, &mut tries) {
                        outcome.failed += 1;
                        break;
                    }
                }
            }
        }
    }
}
