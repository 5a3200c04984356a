//! A batch: the datagrams one receive thread accepted between two hand-offs,
//! back to back in one buffer, and the spare buffers that come back from the
//! workers to be filled again.
//!
//! Recycling the buffers keeps fresh memory out of the receive path at high
//! rates. A buffer freed on a worker thread goes back to the receive thread's
//! allocator arena, which may hand the pages of a block that large back to
//! the kernel; a new buffer then faults every page in again, at a cost in
//! the order of parsing the datagrams it holds. This module does not read
//! sockets or decide when to hand a batch over (that is the receive loop in
//! `ingest`), and it does not parse (that is the workers').

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use jiff::Timestamp;

/// Spare buffers kept per receive thread: enough for the batches the workers
/// hold at a steady rate, so that such a stream needs no new memory.
const SPARES: usize = 4;

/// Larger buffers are freed, not kept: at most this much each (plus a slot
/// list of about 50 KiB), so the spares of one receive thread hold at most
/// [`SPARES`] times this (16 MiB), and only while datagrams arrive faster
/// than a trickle (see [`Spares::release`]).
const SPARE_MAX_BYTES: usize = super::HANDOFF_MAX_BYTES;

/// Where one accepted datagram lies in its batch's buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    start: usize,
    end: usize,
    peer: SocketAddr,
}

/// One accepted datagram of a [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The payload.
    pub bytes: &'a [u8],
    /// The sender.
    pub peer: SocketAddr,
}

/// What a receive thread fills between two hand-offs: the payloads back to
/// back, and where each lies.
#[derive(Debug, Default)]
pub(super) struct Filling {
    buffer: Vec<u8>,
    slots: Vec<Slot>,
}

impl Filling {
    /// An empty filling with room for about `bytes` of payload.
    pub(super) fn with_capacity(bytes: usize) -> Filling {
        Filling {
            buffer: Vec::with_capacity(bytes),
            slots: Vec::new(),
        }
    }

    /// Appends one accepted datagram.
    pub(super) fn push(&mut self, payload: &[u8], peer: SocketAddr) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(payload);
        self.slots.push(Slot {
            start,
            end: self.buffer.len(),
            peer,
        });
    }

    /// Datagrams held.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Payload bytes held.
    pub(super) fn payload_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Payload bytes it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Bytes of memory held, capacity included: what the hand-off's budget
    /// counts for a batch made of it.
    pub(super) fn memory_bytes(&self) -> u64 {
        (self.buffer.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()) as u64
    }

    /// Empties it, keeping its memory.
    pub(super) fn clear(&mut self) {
        self.buffer.clear();
        self.slots.clear();
    }

    /// Whether it uses so little of its memory that handing over a copy of
    /// exactly its size (and filling it again) is better than handing it over
    /// whole: a few datagrams in a buffer sized for a burst would count the
    /// whole buffer against the hand-off's budget.
    pub(super) fn mostly_empty(&self) -> bool {
        self.buffer.len() < self.buffer.capacity() / 4
    }

    /// Where its buffer is (tests compare it to see a buffer come back).
    #[cfg(test)]
    pub(super) fn buffer_ptr(&self) -> *const u8 {
        self.buffer.as_ptr()
    }

    /// A copy of exactly the size of what it holds.
    pub(super) fn exact_copy(&self) -> Filling {
        Filling {
            buffer: self.buffer.clone(),
            slots: self.slots.clone(),
        }
    }
}

/// The buffers of handed-off batches that came back, for their receive
/// thread to fill again. Shared by the thread and every batch it made.
#[derive(Debug)]
pub(super) struct Spares {
    queue: ArrayQueue<Filling>,
}

impl Spares {
    pub(super) fn new() -> Arc<Spares> {
        Arc::new(Spares {
            queue: ArrayQueue::new(SPARES),
        })
    }

    /// A spare, emptied, if one came back.
    pub(super) fn take(&self) -> Option<Filling> {
        let mut filling = self.queue.pop()?;
        filling.clear();
        Some(filling)
    }

    /// Keeps `filling` for the next batch when it is worth keeping; frees it
    /// otherwise (or when enough are kept already).
    pub(super) fn give_back(&self, filling: Filling) {
        let capacity = filling.buffer.capacity();
        // Copies made for a few datagrams are too small to be worth keeping.
        if (super::MIN_BUFFER_BYTES..=SPARE_MAX_BYTES).contains(&capacity) {
            let _ = self.queue.push(filling);
        }
    }

    /// Frees every spare: the receive thread does this when nothing arrived
    /// for a while or the stream is slow enough to go over in copies, so a
    /// quiet herald holds no memory a burst left behind.
    pub(super) fn release(&self) {
        while self.queue.pop().is_some() {}
    }
}

/// A batch of accepted datagrams from one receive thread, sharing one
/// buffer. Dropping it offers the buffer back to that thread.
#[derive(Debug)]
pub struct Batch {
    /// When its first datagram was read (the others came at most the
    /// receive thread's linger, 20 ms, later).
    pub received_at: Timestamp,
    /// The bytes it holds, taken from the hand-off's budget; whoever is done
    /// with the batch gives them back.
    pub bytes: u64,
    filling: Filling,
    spares: Arc<Spares>,
}

impl Batch {
    /// A batch of what `filling` holds, counted as `bytes` against the
    /// hand-off's budget; its buffer goes back to `spares` when dropped.
    pub(super) fn new(
        received_at: Timestamp,
        filling: Filling,
        bytes: u64,
        spares: Arc<Spares>,
    ) -> Batch {
        Batch {
            received_at,
            bytes,
            filling,
            spares,
        }
    }

    /// How many datagrams it holds.
    pub fn len(&self) -> usize {
        self.filling.slots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.filling.slots.is_empty()
    }

    /// Its datagrams, in the order they were read.
    pub fn datagrams(&self) -> impl ExactSizeIterator<Item = Datagram<'_>> + '_ {
        let buffer = &self.filling.buffer;
        self.filling.slots.iter().map(move |slot| Datagram {
            bytes: &buffer[slot.start..slot.end],
            peer: slot.peer,
        })
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.spares.give_back(std::mem::take(&mut self.filling));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn filled(capacity: usize, payloads: &[&[u8]]) -> Filling {
        let mut filling = Filling::with_capacity(capacity);
        for (port, payload) in payloads.iter().enumerate() {
            filling.push(payload, peer(port as u16));
        }
        filling
    }

    #[test]
    fn a_batch_yields_each_datagram_with_its_sender() {
        let spares = Spares::new();
        let filling = filled(super::super::MIN_BUFFER_BYTES, &[b"one", b"", b"three"]);
        let batch = Batch::new(Timestamp::UNIX_EPOCH, filling, 0, spares);
        let got: Vec<_> = batch.datagrams().map(|d| (d.bytes, d.peer)).collect();
        assert_eq!(
            got,
            [
                (&b"one"[..], peer(0)),
                (&b""[..], peer(1)),
                (&b"three"[..], peer(2))
            ]
        );
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn a_dropped_batch_gives_its_buffer_back_emptied() {
        let spares = Spares::new();
        let filling = filled(super::super::MIN_BUFFER_BYTES, &[b"payload"]);
        let pointer = filling.buffer.as_ptr();
        drop(Batch::new(
            Timestamp::UNIX_EPOCH,
            filling,
            0,
            spares.clone(),
        ));
        let spare = spares.take().expect("the buffer came back");
        assert_eq!(spare.buffer.as_ptr(), pointer, "the same memory");
        assert_eq!((spare.len(), spare.payload_bytes()), (0, 0));
        assert!(spares.take().is_none());
    }

    #[test]
    fn small_copies_and_oversized_buffers_are_not_kept() {
        let spares = Spares::new();
        let small = filled(0, &[b"x"]).exact_copy();
        drop(Batch::new(Timestamp::UNIX_EPOCH, small, 0, spares.clone()));
        let huge = filled(SPARE_MAX_BYTES + 1, &[b"x"]);
        drop(Batch::new(Timestamp::UNIX_EPOCH, huge, 0, spares.clone()));
        assert!(spares.take().is_none());
    }

    #[test]
    fn at_most_a_few_spares_are_kept_and_release_frees_them() {
        let spares = Spares::new();
        for _ in 0..SPARES + 3 {
            let filling = filled(super::super::MIN_BUFFER_BYTES, &[b"x"]);
            drop(Batch::new(
                Timestamp::UNIX_EPOCH,
                filling,
                0,
                spares.clone(),
            ));
        }
        assert_eq!(spares.queue.len(), SPARES);
        spares.release();
        assert!(spares.take().is_none());
    }

    #[test]
    fn an_exact_copy_is_as_small_as_what_it_holds() {
        let filling = filled(super::super::MIN_BUFFER_BYTES, &[b"abc"]);
        assert!(filling.mostly_empty());
        let copy = filling.exact_copy();
        assert_eq!(copy.buffer.capacity(), 3);
        assert!(copy.memory_bytes() < 100);
        assert!(!copy.mostly_empty());
        assert!(filling.memory_bytes() >= super::super::MIN_BUFFER_BYTES as u64);
    }
}
