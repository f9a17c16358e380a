//! Fuzzes the decoders of the write-ahead log's on-disk format:
//! `decode_frame`, `SegmentHeader::decode`, `ArchiveHeader::decode` and
//! `CheckpointFile::decode`.
//! None may panic, and whatever one accepts must encode back to the bytes
//! it came from (for a frame: every byte the checksum covers; the padding
//! is not covered). `crates/wal/tests/format_decode_random.rs` checks the
//! same properties on seeded inputs in the ordinary test run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tiffany_wal::format::{
    ARCHIVE_HEADER_LEN, ArchiveHeader, CheckpointFile, FRAME_HEADER, Frame, HEADER_LEN,
    SegmentHeader, decode_frame, encode_frame, frame_size,
};

fuzz_target!(|data: &[u8]| {
    if let Frame::Valid {
        header,
        payload,
        size,
    } = decode_frame(data)
    {
        assert_eq!(size, frame_size(payload.len()));
        assert!(size <= data.len());
        assert_eq!(header.len as usize, payload.len());
        let mut out = vec![0; size];
        encode_frame(&mut out, &header, payload);
        let covered = FRAME_HEADER + payload.len();
        assert_eq!(out[..covered], data[..covered], "{header:?}");
    }
    if let Ok(header) = SegmentHeader::decode(data) {
        assert_eq!(header.encode()[..], data[..HEADER_LEN], "{header:?}");
    }
    if let Ok(archive) = ArchiveHeader::decode(data) {
        assert_eq!(
            archive.encode()[..],
            data[..ARCHIVE_HEADER_LEN],
            "{archive:?}"
        );
    }
    if let Some(checkpoint) = CheckpointFile::decode(data) {
        assert_eq!(checkpoint.encode(), data, "{checkpoint:?}");
    }
});
