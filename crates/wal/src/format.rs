//! The on-disk format, version 1: segment headers, record frames, the
//! checkpoint file, compressed segment archives. Pure encoding and decoding,
//! no I/O; `docs/wal-format.md` has the byte diagrams.
//!
//! Invariants:
//! - Every integer is little-endian; every checksum is CRC32C.
//! - Decoders never panic and never index out of bounds: every slice access
//!   goes through `get`, and every length read from disk is checked against
//!   the bytes actually available before it is used.
//! - A frame decodes as valid only when its checksum covers exactly the
//!   header fields after the checksum and the payload, so a torn write, a
//!   bit flip or stale bytes from an earlier pass of the ring fail the check.

use crate::Lsn;

/// `"TFYWAL\r\n"`: the first bytes of every segment slot.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TFYWAL\r\n";
/// `"TFYCKPT\n"`: the first bytes of the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"TFYCKPT\n";
/// `"TFYSEAL\n"`: the first bytes of every compressed segment archive.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"TFYSEAL\n";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header block; records start here.
pub const HEADER_BLOCK: u64 = 4096;
/// Bytes of the meaningful part of the segment header.
pub const HEADER_LEN: usize = 64;
/// Bytes of a record frame's header.
pub const FRAME_HEADER: usize = 40;
/// Record frames start at multiples of this.
pub const FRAME_ALIGN: usize = 8;

/// Bytes of an archive's header; the compressed body follows it.
pub const ARCHIVE_HEADER_LEN: usize = 64;

/// Record flag: a checkpoint record.
pub const FLAG_CHECKPOINT: u16 = 1 << 0;
/// Record flag: the segment's seal (last record before rotation).
pub const FLAG_SEAL: u16 = 1 << 1;

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment sequence number: increases every time a slot is used.
    pub seq: u64,
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// Size of the slot file.
    pub segment_size: u64,
    /// Creation time, Unix nanoseconds (informational).
    pub created_unix_ns: u64,
    /// The slot's index.
    pub slot: u32,
    /// Header flags (reserved, zero in version 1; see `docs/wal-format.md`).
    pub flags: u16,
}

/// Why a segment header did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// The magic number is not ours: a foreign file.
    Foreign,
    /// Written by a newer format version.
    Version(u16),
    /// Our magic and version, but the checksum or a field is wrong.
    Corrupt,
    /// An archive compressed with a codec this build does not know (a
    /// later build's).
    Codec(u16),
}

/// How an archive's body is compressed. The id is on disk, so a later
/// codec (zstd) is a new variant, not a new format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// An LZ4 block (`lz4_flex::block`), id 1.
    Lz4,
}

impl Codec {
    /// The id stored in archive headers.
    pub fn id(self) -> u16 {
        match self {
            Codec::Lz4 => 1,
        }
    }

    /// The codec with this id.
    pub fn from_id(id: u16) -> Option<Codec> {
        match id {
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// The header of an archive: a sealed segment, compressed.
///
/// The body is the segment's bytes `0..raw_len` of its slot file (header
/// block included), so offsets in the decompressed segment are offsets in
/// the slot it was sealed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// The codec of the body.
    pub codec: Codec,
    /// The segment's sequence number.
    pub seq: u64,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// LSN of its last record (its seal).
    pub last_lsn: Lsn,
    /// Bytes of the decompressed segment.
    pub raw_len: u64,
    /// Bytes of the compressed body after the header.
    pub compressed_len: u64,
    /// CRC32C of the compressed body.
    pub body_crc: u32,
}

impl ArchiveHeader {
    /// Encodes the header into its [`ARCHIVE_HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; ARCHIVE_HEADER_LEN] {
        let mut b = [0u8; ARCHIVE_HEADER_LEN];
        put(&mut b, 0, &ARCHIVE_MAGIC);
        put(&mut b, 8, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, 10, &self.codec.id().to_le_bytes());
        put(&mut b, 12, &self.body_crc.to_le_bytes());
        put(&mut b, 16, &self.seq.to_le_bytes());
        put(&mut b, 24, &self.first_lsn.0.to_le_bytes());
        put(&mut b, 32, &self.last_lsn.0.to_le_bytes());
        put(&mut b, 40, &self.raw_len.to_le_bytes());
        put(&mut b, 48, &self.compressed_len.to_le_bytes());
        let crc = crc32c::crc32c(b.get(..60).unwrap_or_default());
        put(&mut b, 60, &crc.to_le_bytes());
        b
    }

    /// Decodes the header at the start of an archive file. Checks the
    /// header's own fields only; the caller checks the body against
    /// `compressed_len` and `body_crc`.
    pub fn decode(bytes: &[u8]) -> Result<ArchiveHeader, HeaderError> {
        let b = bytes.get(..ARCHIVE_HEADER_LEN).ok_or(HeaderError::Short)?;
        if b.get(..8) != Some(&ARCHIVE_MAGIC[..]) {
            return Err(HeaderError::Foreign);
        }
        let version = u16_at(b, 8).ok_or(HeaderError::Short)?;
        if version > FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let crc = u32_at(b, 60).ok_or(HeaderError::Short)?;
        let reserved_zero = b.get(56..60).is_some_and(|r| r.iter().all(|&x| x == 0));
        if crc32c::crc32c(b.get(..60).unwrap_or_default()) != crc || version == 0 || !reserved_zero
        {
            return Err(HeaderError::Corrupt);
        }
        let id = u16_at(b, 10).ok_or(HeaderError::Short)?;
        let header = ArchiveHeader {
            codec: Codec::from_id(id).ok_or(HeaderError::Codec(id))?,
            body_crc: u32_at(b, 12).ok_or(HeaderError::Short)?,
            seq: u64_at(b, 16).ok_or(HeaderError::Short)?,
            first_lsn: Lsn(u64_at(b, 24).ok_or(HeaderError::Short)?),
            last_lsn: Lsn(u64_at(b, 32).ok_or(HeaderError::Short)?),
            raw_len: u64_at(b, 40).ok_or(HeaderError::Short)?,
            compressed_len: u64_at(b, 48).ok_or(HeaderError::Short)?,
        };
        if header.first_lsn.0 == 0
            || header.last_lsn < header.first_lsn
            || header.raw_len <= HEADER_BLOCK
        {
            return Err(HeaderError::Corrupt);
        }
        Ok(header)
    }
}

impl SegmentHeader {
    /// Encodes the header into its [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &SEGMENT_MAGIC);
        put(&mut b, 8, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, 10, &self.flags.to_le_bytes());
        put(&mut b, 12, &(HEADER_LEN as u32).to_le_bytes());
        put(&mut b, 16, &self.seq.to_le_bytes());
        put(&mut b, 24, &self.first_lsn.0.to_le_bytes());
        put(&mut b, 32, &self.segment_size.to_le_bytes());
        put(&mut b, 40, &self.created_unix_ns.to_le_bytes());
        put(&mut b, 48, &self.slot.to_le_bytes());
        let crc = crc32c::crc32c(b.get(..60).unwrap_or_default());
        put(&mut b, 60, &crc.to_le_bytes());
        b
    }

    /// Decodes a header from the start of a slot file.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let b = bytes.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if b.get(..8) != Some(&SEGMENT_MAGIC[..]) {
            return Err(HeaderError::Foreign);
        }
        let version = u16_at(b, 8).ok_or(HeaderError::Short)?;
        if version > FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let crc = u32_at(b, 60).ok_or(HeaderError::Short)?;
        if crc32c::crc32c(b.get(..60).unwrap_or_default()) != crc {
            return Err(HeaderError::Corrupt);
        }
        // Reserved bytes must be zero: a later format may give them meaning.
        let reserved_zero = b.get(52..60).is_some_and(|r| r.iter().all(|&x| x == 0));
        if version == 0 || u32_at(b, 12) != Some(HEADER_LEN as u32) || !reserved_zero {
            return Err(HeaderError::Corrupt);
        }
        let header = SegmentHeader {
            flags: u16_at(b, 10).ok_or(HeaderError::Short)?,
            seq: u64_at(b, 16).ok_or(HeaderError::Short)?,
            first_lsn: Lsn(u64_at(b, 24).ok_or(HeaderError::Short)?),
            segment_size: u64_at(b, 32).ok_or(HeaderError::Short)?,
            created_unix_ns: u64_at(b, 40).ok_or(HeaderError::Short)?,
            slot: u32_at(b, 48).ok_or(HeaderError::Short)?,
        };
        if header.first_lsn.0 == 0 || header.segment_size <= HEADER_BLOCK {
            return Err(HeaderError::Corrupt);
        }
        Ok(header)
    }
}

/// The fixed fields of a record frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Log sequence number.
    pub lsn: Lsn,
    /// Stream (agent) id.
    pub stream: u64,
    /// Low 32 bits of the segment's sequence number.
    pub seq32: u32,
    /// Record flags ([`FLAG_CHECKPOINT`], [`FLAG_SEAL`]).
    pub flags: u16,
    /// The log's durable LSN when this record was written: every record up
    /// to it was on stable storage then. Recovery uses it to tell a torn,
    /// never-synced tail from damage to synced records.
    pub synced: Lsn,
}

/// Total bytes a frame with `len` payload bytes occupies (header, payload,
/// padding).
pub fn frame_size(len: usize) -> usize {
    (FRAME_HEADER + len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Bytes the frame at the start of `bytes` occupies, from its length field
/// alone: for a frame already found valid.
pub fn frame_size_at(bytes: &[u8]) -> Option<usize> {
    u32_at(bytes, 0).map(|len| frame_size(len as usize))
}

/// Writes a frame for `payload` into `out`, which must be exactly
/// `frame_size(payload.len())` bytes long (padding is zeroed).
pub fn encode_frame(out: &mut [u8], header: &FrameHeader, payload: &[u8]) {
    debug_assert_eq!(out.len(), frame_size(payload.len()));
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    put(out, 0, &len.to_le_bytes());
    put(out, 8, &header.lsn.0.to_le_bytes());
    put(out, 16, &header.stream.to_le_bytes());
    put(out, 24, &header.seq32.to_le_bytes());
    put(out, 28, &header.flags.to_le_bytes());
    put(out, 30, &0u16.to_le_bytes());
    put(out, 32, &header.synced.0.to_le_bytes());
    put(out, FRAME_HEADER, payload);
    if let Some(pad) = out.get_mut(FRAME_HEADER + payload.len()..) {
        pad.fill(0);
    }
    let crc = frame_crc(
        len,
        out.get(8..FRAME_HEADER + payload.len()).unwrap_or_default(),
    );
    put(out, 4, &crc.to_le_bytes());
}

/// The frame checksum: the length, then the fields after the checksum and
/// the payload (`rest`, contiguous in a frame).
fn frame_crc(len: u32, rest: &[u8]) -> u32 {
    crate::crc::append(crate::crc::append(0, &len.to_le_bytes()), rest)
}

/// What the bytes at a frame position hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A frame whose checksum matches.
    Valid {
        /// Its fixed fields.
        header: FrameHeader,
        /// Its payload.
        payload: &'a [u8],
        /// Bytes it occupies (header, payload, padding).
        size: usize,
    },
    /// All zeroes up to the end of the frame header: the end of the data.
    Zero,
    /// Anything else: torn, corrupt, or stale bytes.
    Invalid,
}

/// Decodes the frame at the start of `bytes` (the rest of a segment).
/// Checks the checksum only; the caller checks LSN order and `seq32`.
pub fn decode_frame(bytes: &[u8]) -> Frame<'_> {
    let Some(head) = bytes.get(..FRAME_HEADER) else {
        return if bytes.iter().all(|&b| b == 0) {
            Frame::Zero
        } else {
            Frame::Invalid
        };
    };
    if head.iter().all(|&b| b == 0) {
        return Frame::Zero;
    }
    let (Some(len), Some(crc)) = (u32_at(head, 0), u32_at(head, 4)) else {
        return Frame::Invalid;
    };
    let size = frame_size(len as usize);
    let Some(payload) = bytes.get(FRAME_HEADER..FRAME_HEADER + len as usize) else {
        return Frame::Invalid;
    };
    let rest = bytes
        .get(8..FRAME_HEADER + len as usize)
        .unwrap_or_default();
    if bytes.len() < size || frame_crc(len, rest) != crc {
        return Frame::Invalid;
    }
    if u16_at(head, 30) != Some(0) {
        // Reserved: zero in version 1.
        return Frame::Invalid;
    }
    let (Some(lsn), Some(stream), Some(seq32), Some(flags), Some(synced)) = (
        u64_at(head, 8),
        u64_at(head, 16),
        u32_at(head, 24),
        u16_at(head, 28),
        u64_at(head, 32),
    ) else {
        return Frame::Invalid;
    };
    Frame::Valid {
        header: FrameHeader {
            len,
            lsn: Lsn(lsn),
            stream,
            seq32,
            flags,
            synced: Lsn(synced),
        },
        payload,
        size,
    }
}

/// The contents of the `CHECKPOINT` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFile {
    /// The checkpointed LSN.
    pub lsn: Lsn,
    /// LSN of the checkpoint record in the log.
    pub record_lsn: Lsn,
    /// Sequence number of the oldest segment recovery needs: the one
    /// holding `lsn + 1` (older segments may be recycled).
    pub segment_seq: u64,
    /// The caller's reference to its snapshot.
    pub snapshot_ref: Vec<u8>,
}

impl CheckpointFile {
    /// Encodes the file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(44 + self.snapshot_ref.len());
        b.extend_from_slice(&CHECKPOINT_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(
            &u32::try_from(self.snapshot_ref.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.lsn.0.to_le_bytes());
        b.extend_from_slice(&self.record_lsn.0.to_le_bytes());
        b.extend_from_slice(&self.segment_seq.to_le_bytes());
        b.extend_from_slice(&self.snapshot_ref);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the file; `None` when it is not a valid version-1
    /// checkpoint file (recovery then scans the log instead).
    pub fn decode(b: &[u8]) -> Option<CheckpointFile> {
        if b.get(..8)? != CHECKPOINT_MAGIC || u16_at(b, 8)? != FORMAT_VERSION || u16_at(b, 10)? != 0
        {
            return None;
        }
        let ref_len = u32_at(b, 12)? as usize;
        let end = 40usize.checked_add(ref_len)?;
        let crc = u32_at(b, end)?;
        if b.len() != end + 4 || crc32c::crc32c(b.get(..end)?) != crc {
            return None;
        }
        Some(CheckpointFile {
            lsn: Lsn(u64_at(b, 16)?),
            record_lsn: Lsn(u64_at(b, 24)?),
            segment_seq: u64_at(b, 32)?,
            snapshot_ref: b.get(40..end)?.to_vec(),
        })
    }
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            seq: 7,
            first_lsn: Lsn(100),
            segment_size: 1 << 20,
            created_unix_ns: 123,
            slot: 3,
            flags: 0,
        }
    }

    #[test]
    fn format_segment_header_round_trips() {
        let h = header();
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn format_segment_header_rejects_foreign_newer_and_corrupt() {
        let mut b = header().encode();
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Short));
        b[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::Corrupt));
        let mut newer = header().encode();
        newer[8] = 2;
        assert_eq!(SegmentHeader::decode(&newer), Err(HeaderError::Version(2)));
        let mut foreign = header().encode();
        foreign[0] = b'X';
        assert_eq!(SegmentHeader::decode(&foreign), Err(HeaderError::Foreign));
    }

    #[test]
    fn format_archive_header_round_trips_and_rejects_damage() {
        let h = ArchiveHeader {
            codec: Codec::Lz4,
            seq: 9,
            first_lsn: Lsn(100),
            last_lsn: Lsn(250),
            raw_len: 60_000,
            compressed_len: 12_345,
            body_crc: 0xDEAD_BEEF,
        };
        let b = h.encode();
        assert_eq!(ArchiveHeader::decode(&b), Ok(h));
        assert_eq!(ArchiveHeader::decode(&b[..63]), Err(HeaderError::Short));
        // Bytes 8..10 are the version: a higher one is reported as such.
        for i in 10..ARCHIVE_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x04;
            assert_eq!(
                ArchiveHeader::decode(&d),
                Err(HeaderError::Corrupt),
                "damage at byte {i} went unnoticed"
            );
        }
        let mut foreign = b;
        foreign[0] = b'X';
        assert_eq!(ArchiveHeader::decode(&foreign), Err(HeaderError::Foreign));
        assert_eq!(
            ArchiveHeader::decode(&SegmentHeader::decode(&header().encode()).unwrap().encode()),
            Err(HeaderError::Foreign),
            "a segment header is not an archive header"
        );
        let mut zstd = b;
        zstd[10] = 2;
        let crc = crc32c::crc32c(&zstd[..60]);
        zstd[60..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(ArchiveHeader::decode(&zstd), Err(HeaderError::Codec(2)));
    }

    #[test]
    fn format_frame_round_trips_and_pads() {
        let payload = b"hello, journal";
        let mut buf = vec![0xAA; frame_size(payload.len())];
        let fh = FrameHeader {
            len: payload.len() as u32,
            lsn: Lsn(42),
            stream: 9,
            seq32: 7,
            flags: FLAG_CHECKPOINT,
            synced: Lsn(40),
        };
        encode_frame(&mut buf, &fh, payload);
        assert_eq!(buf.len() % FRAME_ALIGN, 0);
        assert!(buf[FRAME_HEADER + payload.len()..].iter().all(|&b| b == 0));
        match decode_frame(&buf) {
            Frame::Valid {
                header,
                payload: p,
                size,
            } => {
                assert_eq!(header, fh);
                assert_eq!(p, payload);
                assert_eq!(size, buf.len());
            }
            other => panic!("expected a valid frame, got {other:?}"),
        }
    }

    #[test]
    fn format_frame_detects_every_single_bit_flip() {
        let payload = [7u8; 40];
        let mut buf = vec![0; frame_size(payload.len())];
        let fh = FrameHeader {
            len: 40,
            lsn: Lsn(1),
            stream: 1,
            seq32: 1,
            flags: 0,
            synced: Lsn(0),
        };
        encode_frame(&mut buf, &fh, &payload);
        // Every bit of the header and payload (padding is not covered).
        for bit in 0..(FRAME_HEADER + payload.len()) * 8 {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_frame(&flipped), Frame::Valid { header, .. } if header == fh),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn format_frame_truncated_and_zero_and_absurd() {
        assert_eq!(decode_frame(&[0u8; 64]), Frame::Zero);
        assert_eq!(decode_frame(&[0u8; 5]), Frame::Zero);
        let mut absurd = [0u8; 64];
        absurd[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        absurd[4] = 1;
        assert_eq!(decode_frame(&absurd), Frame::Invalid);
        let payload = [1u8; 16];
        let mut buf = vec![0; frame_size(16)];
        let fh = FrameHeader {
            len: 16,
            lsn: Lsn(1),
            stream: 0,
            seq32: 0,
            flags: 0,
            synced: Lsn(0),
        };
        encode_frame(&mut buf, &fh, &payload);
        for cut in 1..buf.len() {
            assert!(
                !matches!(decode_frame(&buf[..cut]), Frame::Valid { .. }),
                "a frame cut at {cut} bytes decoded as valid"
            );
        }
    }

    #[test]
    fn format_checkpoint_file_round_trips_and_rejects_damage() {
        let c = CheckpointFile {
            lsn: Lsn(10),
            record_lsn: Lsn(11),
            segment_seq: 2,
            snapshot_ref: b"snap-10".to_vec(),
        };
        let b = c.encode();
        assert_eq!(CheckpointFile::decode(&b), Some(c));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(
                CheckpointFile::decode(&d),
                None,
                "damage at byte {i} went unnoticed"
            );
        }
        assert_eq!(CheckpointFile::decode(&b[..b.len() - 1]), None);
    }
}
