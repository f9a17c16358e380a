//! The decoders of the on-disk format (`decode_frame`,
//! `SegmentHeader::decode`, `CheckpointFile::decode`,
//! `ArchiveHeader::decode`) on thousands of seeded
//! random and mutated inputs: they never panic, what they accept is
//! consistent, and a valid decode re-encodes to the same bytes. The same
//! properties are the `frame_decode` fuzz target (`fuzz/` at the repository
//! root), which explores far more inputs.

use tiffany_testkit::Rng;
use tiffany_wal::Lsn;
use tiffany_wal::format::{
    ARCHIVE_HEADER_LEN, ArchiveHeader, CheckpointFile, Codec, FRAME_HEADER, Frame, FrameHeader,
    HEADER_LEN, SegmentHeader, decode_frame, encode_frame, frame_size,
};

/// The properties the fuzz target checks, for one input.
fn check(data: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    match decode_frame(data) {
        Frame::Valid {
            header,
            payload,
            size,
        } => {
            decoded.frame = true;
            assert_eq!(size, frame_size(payload.len()));
            assert!(size <= data.len());
            assert_eq!(header.len as usize, payload.len());
            assert_eq!(&data[FRAME_HEADER..FRAME_HEADER + payload.len()], payload);
            let mut out = vec![0; size];
            encode_frame(&mut out, &header, payload);
            // The padding is not covered by the checksum; everything else
            // must come back byte for byte.
            let covered = FRAME_HEADER + payload.len();
            assert!(
                out[..covered] == data[..covered],
                "a valid frame re-encodes differently: {header:?}"
            );
        }
        Frame::Zero => assert!(data.iter().take(FRAME_HEADER).all(|&b| b == 0)),
        Frame::Invalid => {}
    }
    if let Ok(h) = SegmentHeader::decode(data) {
        decoded.header = true;
        assert!(
            h.encode()[..] == data[..HEADER_LEN],
            "a valid segment header re-encodes differently: {h:?}"
        );
    }
    if let Ok(a) = ArchiveHeader::decode(data) {
        decoded.archive = true;
        assert!(
            a.encode()[..] == data[..ARCHIVE_HEADER_LEN],
            "a valid archive header re-encodes differently: {a:?}"
        );
    }
    if let Some(c) = CheckpointFile::decode(data) {
        decoded.checkpoint = true;
        assert!(
            c.encode() == data,
            "a valid checkpoint file re-encodes differently: {c:?}"
        );
    }
    decoded
}

#[derive(Default)]
struct Decoded {
    frame: bool,
    header: bool,
    checkpoint: bool,
    archive: bool,
}

fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(200) as usize;
    let payload = rng.bytes(n);
    let header = FrameHeader {
        len: payload.len() as u32,
        lsn: Lsn(rng.next_u64()),
        stream: rng.next_u64(),
        seq32: rng.next_u64() as u32,
        flags: rng.next_u64() as u16,
        synced: Lsn(rng.next_u64()),
    };
    let mut out = vec![0; frame_size(payload.len())];
    encode_frame(&mut out, &header, &payload);
    out
}

fn random_header(rng: &mut Rng) -> Vec<u8> {
    SegmentHeader {
        seq: rng.next_u64(),
        first_lsn: Lsn(rng.range(1, u64::MAX)),
        segment_size: rng.range(4097, u64::MAX),
        created_unix_ns: rng.next_u64(),
        slot: rng.next_u64() as u32,
        flags: rng.next_u64() as u16,
    }
    .encode()
    .to_vec()
}

fn random_archive(rng: &mut Rng) -> Vec<u8> {
    let first = rng.range(1, u64::MAX / 2);
    ArchiveHeader {
        codec: Codec::Lz4,
        seq: rng.next_u64(),
        first_lsn: Lsn(first),
        last_lsn: Lsn(rng.range(first, u64::MAX)),
        raw_len: rng.range(4097, u64::MAX),
        compressed_len: rng.next_u64(),
        body_crc: rng.next_u64() as u32,
    }
    .encode()
    .to_vec()
}

fn random_checkpoint(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(64) as usize;
    CheckpointFile {
        lsn: Lsn(rng.next_u64()),
        record_lsn: Lsn(rng.next_u64()),
        segment_seq: rng.next_u64(),
        snapshot_ref: rng.bytes(n),
    }
    .encode()
}

/// Flips bits, overwrites bytes, cuts or extends: the usual mutations.
fn mutate(rng: &mut Rng, mut data: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.index(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.index(data.len());
                data[i] = rng.next_u64() as u8;
            }
            2 => {
                let keep = rng.index(data.len() + 1);
                data.truncate(keep);
            }
            3 => {
                let n = rng.below(64) as usize;
                let extra = rng.bytes(n);
                data.extend_from_slice(&extra);
            }
            _ if data.len() >= 4 => {
                // A length field: absurd, zero, or off by a little.
                let len = match rng.below(3) {
                    0 => u32::MAX,
                    1 => 0,
                    _ => (data.len() as u32).wrapping_add(rng.below(16) as u32),
                };
                data[..4].copy_from_slice(&len.to_le_bytes());
            }
            _ => {}
        }
    }
    data
}

#[test]
fn format_decoders_never_panic_on_random_bytes() {
    let mut rng = Rng::new(0xDEC0DE);
    for _ in 0..5000 {
        let len = match rng.below(10) {
            0 => 0,
            1..=6 => rng.below(100) as usize,
            _ => rng.below(5000) as usize,
        };
        let mut data = rng.bytes(len);
        // Some with the magic numbers, to get past the first check.
        match rng.below(4) {
            0 if data.len() >= 8 => data[..8].copy_from_slice(b"TFYWAL\r\n"),
            1 if data.len() >= 8 => data[..8].copy_from_slice(b"TFYCKPT\n"),
            2 if data.len() >= 8 => data[..8].copy_from_slice(b"TFYSEAL\n"),
            _ => {}
        }
        check(&data);
    }
}

#[test]
fn format_decoders_never_panic_on_mutated_encodings() {
    let mut rng = Rng::new(0xBAD5EED);
    let mut valid = Decoded::default();
    for i in 0..8000 {
        let original = match i % 4 {
            0 => random_frame(&mut rng),
            1 => random_header(&mut rng),
            2 => random_archive(&mut rng),
            _ => random_checkpoint(&mut rng),
        };
        // Unmutated encodings decode.
        if i < 300 {
            let d = check(&original);
            assert!(
                d.frame || d.header || d.checkpoint || d.archive,
                "encoding {i} did not decode"
            );
        }
        let d = check(&mutate(&mut rng, original));
        valid.frame |= d.frame;
        valid.header |= d.header;
        valid.checkpoint |= d.checkpoint;
        valid.archive |= d.archive;
    }
    // Some mutations (cuts inside the padding, appended bytes) keep inputs
    // valid: the round-trip property was exercised on all four.
    assert!(valid.frame && valid.header && valid.checkpoint && valid.archive);
}

/// Reserved fields must be zero (docs/wal-format.md); a decoder that
/// accepts them non-zero returns a value that does not encode back to the
/// bytes it came from.
#[test]
fn format_reserved_fields_are_refused_when_not_zero() {
    // A frame with reserved = 1 and a correct checksum.
    let mut frame = vec![0; frame_size(5)];
    let header = FrameHeader {
        len: 5,
        lsn: Lsn(3),
        stream: 1,
        seq32: 0,
        flags: 0,
        synced: Lsn(2),
    };
    encode_frame(&mut frame, &header, b"hello");
    frame[30] = 1;
    let mut crc = crc32c::crc32c(&frame[..4]);
    crc = crc32c::crc32c_append(crc, &frame[8..FRAME_HEADER]);
    crc = crc32c::crc32c_append(crc, b"hello");
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    assert!(
        !matches!(decode_frame(&frame), Frame::Valid { .. }),
        "a frame with a non-zero reserved field decodes as valid"
    );

    let mut head = random_header(&mut Rng::new(1));
    head[52] = 1;
    let crc = crc32c::crc32c(&head[..60]);
    head[60..64].copy_from_slice(&crc.to_le_bytes());
    assert!(
        SegmentHeader::decode(&head).is_err(),
        "segment header reserved"
    );

    let mut ckpt = random_checkpoint(&mut Rng::new(2));
    ckpt[10] = 1;
    let end = ckpt.len() - 4;
    let crc = crc32c::crc32c(&ckpt[..end]);
    ckpt[end..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(CheckpointFile::decode(&ckpt), None, "checkpoint reserved");
}
