//! The on-disk record format of a disk buffer segment, and reading it back
//! safely.
//!
//! ```text
//! magic  u32 LE  "HRB1"
//! len    u32 LE  payload length
//! seq    u64 LE  the record's sequence number in its buffer
//! crc    u32 LE  CRC-32C over payload ‖ len ‖ seq
//! payload        len bytes (one encoded event)
//! ```
//!
//! The checksum covers the length and the sequence number, so a flipped bit
//! anywhere in a record is caught; the magic lets a reader find the next whole
//! record after damage ([`scan`]). This module only frames and checks bytes: it
//! knows nothing of files, events or acknowledgements.

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"HRB1";
/// Bytes before the payload.
pub const HEADER: usize = 20;
/// The longest payload a record may have; a longer length in a header is damage.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Appends one record with sequence number 0 to `out`; [`seal`] sets the real
/// number (and finishes the checksum) when the record's place in the buffer is
/// known. The payload's checksum is computed here, outside any lock.
pub fn frame(out: &mut Vec<u8>, write_payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    write_payload(out);
    let len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&MAGIC);
    out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
    // Until sealed, the checksum slot holds the payload's own checksum.
    out[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Numbers the framed records in `staged` from `first_seq` on and finishes
/// their checksums; returns how many records there are.
pub fn seal(staged: &mut [u8], first_seq: u64) -> u64 {
    let mut at = 0;
    let mut seq = first_seq;
    while at + HEADER <= staged.len() {
        let header = &mut staged[at..at + HEADER];
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let payload_crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let crc = finish_crc(payload_crc, &header[4..8], &header[8..16]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        at += HEADER + len;
        seq += 1;
    }
    seq - first_seq
}

fn finish_crc(payload_crc: u32, len: &[u8], seq: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(payload_crc, len), seq)
}

/// What [`parse`] found at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, intact record: its sequence number, payload and total size.
    Record {
        /// Sequence number.
        seq: u64,
        /// The payload.
        payload: &'a [u8],
        /// Header plus payload.
        size: usize,
    },
    /// The slice ends inside a record that looks intact so far (read more).
    Incomplete,
    /// Not a record: a wrong magic, an impossible length or a bad checksum.
    Damaged,
}

/// Reads the record at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed<'_> {
    if bytes.len() < HEADER {
        return if MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            Parsed::Incomplete
        } else {
            Parsed::Damaged
        };
    }
    if bytes[..4] != MAGIC {
        return Parsed::Damaged;
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Parsed::Damaged;
    }
    let size = HEADER + len;
    if bytes.len() < size {
        return Parsed::Incomplete;
    }
    let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let payload = &bytes[HEADER..size];
    if finish_crc(crc32c::crc32c(payload), &bytes[4..8], &bytes[8..16]) != stored {
        return Parsed::Damaged;
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&bytes[8..16]);
    Parsed::Record {
        seq: u64::from_le_bytes(seq),
        payload,
        size,
    }
}

/// After damage at the start of `bytes`: the offset of the next intact record,
/// or (unless `at_end`, when no more bytes will come) of a possible record cut
/// off by the end of `bytes`.
pub fn scan(bytes: &[u8], at_end: bool) -> Option<usize> {
    let mut from = 1;
    while from < bytes.len() {
        let at = from + memchr::memchr(MAGIC[0], &bytes[from..])?;
        match parse(&bytes[at..]) {
            Parsed::Record { .. } => return Some(at),
            Parsed::Incomplete if !at_end => return Some(at),
            Parsed::Incomplete | Parsed::Damaged => from = at + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(payloads: &[&[u8]], first_seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            frame(&mut out, |out| out.extend_from_slice(payload));
        }
        assert_eq!(seal(&mut out, first_seq), payloads.len() as u64);
        out
    }

    #[test]
    fn a_sealed_record_reads_back_with_its_number() {
        let bytes = records(&[b"one", b"", b"three"], 7);
        let mut at = 0;
        let mut seen = Vec::new();
        while at < bytes.len() {
            match parse(&bytes[at..]) {
                Parsed::Record { seq, payload, size } => {
                    seen.push((seq, payload.to_vec()));
                    at += size;
                }
                other => panic!("{other:?} at {at}"),
            }
        }
        assert_eq!(
            seen,
            [
                (7, b"one".to_vec()),
                (8, Vec::new()),
                (9, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn a_cut_record_is_incomplete_not_damaged() {
        let bytes = records(&[b"payload"], 0);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let bytes = records(&[b"some payload bytes"], 3);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse(&damaged), Parsed::Record { .. }),
                "bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn scan_finds_the_next_intact_record_after_damage() {
        let mut bytes = records(&[b"first", b"second", b"third"], 0);
        let first = HEADER + 5;
        bytes[7] ^= 0x40; // the first record's length, now impossible
        assert_eq!(parse(&bytes), Parsed::Damaged);
        assert_eq!(scan(&bytes, true), Some(first));
        assert_eq!(scan(b"no records here at all", false), None);
        // A record cut off by the end: a candidate while more may come.
        let cut = &bytes[..first + 10];
        assert_eq!(scan(cut, false), Some(first));
        assert_eq!(scan(cut, true), None);
    }

    #[test]
    fn an_unsealed_record_does_not_pass_for_a_sealed_one_of_another_number() {
        let mut bytes = Vec::new();
        frame(&mut bytes, |out| out.extend_from_slice(b"x"));
        seal(&mut bytes, 5);
        bytes[8] ^= 1; // now claims seq 4
        assert_eq!(parse(&bytes), Parsed::Damaged);
    }
}
