//! Handing a batch of datagrams to the kernel: one `sendmmsg` per batch on
//! Linux, one `send` per datagram elsewhere. Counts what went out and why the
//! rest did not; never paces (the caller does).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use super::Outcome;

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a send, as a control
/// message.
#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;

/// The most datagrams one segmented send carries (the kernel's limit is 64
/// on older kernels), the most bytes (below the 64 KiB of one IP packet), and
/// the longest datagram sent segmented: one that fits an Ethernet frame (a
/// segment larger than the path's MTU is refused).
#[cfg(target_os = "linux")]
const SEGMENTS_MAX: usize = 64;
#[cfg(target_os = "linux")]
const SEGMENTED_BYTES_MAX: usize = 60_000;
#[cfg(target_os = "linux")]
const SEGMENT_LEN_MAX: usize = 1472;

/// Sends a batch on a connected socket, counting what went out and why the
/// rest did not.
///
/// Consecutive datagrams of the same length go out as one segmented send
/// (UDP generic segmentation offload, `UDP_SEGMENT`) while `*segmented` is
/// true: the receiver gets the same datagrams in the same order, and the
/// sender's cost per datagram falls to a fraction (a whole pass through the
/// network stack per 64 datagrams instead of per datagram), which a load test
/// needs to outrun the receiver it measures. If the kernel refuses it, it is
/// switched off for good and the rest is sent one datagram per message.
#[cfg(target_os = "linux")]
pub(super) fn send_batch(
    socket: &UdpSocket,
    batch: &[&[u8]],
    to: SocketAddr,
    outcome: &mut Outcome,
    segmented: &mut bool,
) {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // Runs of datagrams sent as one message: (first, count).
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(batch.len());
    let mut first = 0;
    while first < batch.len() {
        let len = batch[first].len();
        let mut count = 1;
        if *segmented && len > 0 && len <= SEGMENT_LEN_MAX {
            while first + count < batch.len()
                && batch[first + count].len() == len
                && count < SEGMENTS_MAX
                && (count + 1) * len <= SEGMENTED_BYTES_MAX
            {
                count += 1;
            }
        }
        runs.push((first, count));
        first += count;
    }
    // Room for one control message carrying a u16, 8-byte aligned.
    let mut controls: Vec<[u64; 4]> = vec![[0; 4]; runs.len()];
    // SAFETY: all-zero is a valid mmsghdr; each header then points at its
    // run's iovecs and, for a run of several, its control buffer, all of which
    // live until the calls return.
    let mut headers: Vec<libc::mmsghdr> = (0..runs.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let iovec_base = iovecs.as_mut_ptr();
    for ((header, &(first, count)), control) in
        headers.iter_mut().zip(&runs).zip(controls.iter_mut())
    {
        // SAFETY: `first + count <= batch.len()`, the number of iovecs.
        header.msg_hdr.msg_iov = unsafe { iovec_base.add(first) };
        header.msg_hdr.msg_iovlen = count as _;
        if count > 1 {
            let segment = u16::try_from(batch[first].len()).unwrap_or(u16::MAX);
            header.msg_hdr.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes; the buffer
            // holds CMSG_SPACE(2) bytes (24 of its 32), and CMSG_FIRSTHDR of a
            // header whose control buffer is that large is a valid pointer
            // into it.
            unsafe {
                header.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                let cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
            }
        }
    }
    let (mut next, mut tries) = (0, 0);
    while next < runs.len() {
        // SAFETY: the headers, iovecs and control buffers are valid for
        // `runs.len() - next` entries.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[next..].as_mut_ptr(),
                (runs.len() - next) as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            let done = &runs[next..next + n as usize];
            outcome.sent += done.iter().map(|&(_, count)| count as u64).sum::<u64>();
            next += n as usize;
            tries = 0;
            continue;
        }
        let err = if n < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::new(io::ErrorKind::WriteZero, "the kernel took no datagram")
        };
        let (first, count) = runs[next];
        if count > 1
            && matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
            )
        {
            // No segmentation offload here: the rest one datagram a message.
            *segmented = false;
            send_batch(socket, &batch[first..], to, outcome, segmented);
            return;
        }
        // An error stops the call at the message it could not send: try that
        // one again, or count its datagrams as failed and go on with the next.
        if !outcome.error(&err, to, &mut tries) {
            outcome.failed += count as u64;
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
    _segmented: &mut bool,
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
