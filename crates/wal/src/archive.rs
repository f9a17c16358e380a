//! Archives: sealed segments compressed into `sealed-<seq>.lz4` files.
//! Writing one, finding one, reading one back.
//!
//! Invariants:
//! - An archive is written whole under `<name>.tmp`, synced, renamed into
//!   place and the directory synced ([`Storage::write_atomic`]) before the
//!   log relies on it, so an archive under its final name is always
//!   complete; a `.tmp` left by a crash is garbage (its segment is still in
//!   its slot) and is removed at open.
//! - The body is the segment's bytes `0..end` of its slot file, so a
//!   decompressed archive reads exactly like the slot it came from.
//! - Nothing of an archive is used before all of it is checked: header
//!   checksum, sequence number against the name, file length, body
//!   checksum, decompressed length, and the segment header inside.

use std::io;
use std::path::{Path, PathBuf};

use crate::format::{
    ARCHIVE_HEADER_LEN, ArchiveHeader, Codec, FORMAT_VERSION, HEADER_BLOCK, HeaderError,
    SegmentHeader,
};
use crate::storage::Storage;
use crate::{Error, Lsn};

const PREFIX: &str = "sealed-";
const SUFFIX: &str = ".lz4";
const TMP: &str = ".tmp";
/// The most an LZ4 block expands on decompression (a match of 255+ bytes
/// per input byte, with slack): a header claiming more is damaged, and is
/// refused before anything is allocated for it.
const MAX_RATIO: u64 = 256;

/// The file name of the archive of segment `seq`.
pub(crate) fn archive_name(seq: u64) -> String {
    format!("{PREFIX}{seq:016x}{SUFFIX}")
}

/// What a directory entry is, as far as archives go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArchiveEntry {
    /// A finished archive of segment `seq`.
    Final(u64),
    /// An archive being written (or left by a crash while it was).
    Temp,
}

/// Parses a directory entry name; `None` when it is not an archive's.
pub(crate) fn parse_archive(name: &str) -> Option<ArchiveEntry> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(stem) = rest.strip_suffix(TMP) {
        return stem.strip_suffix(SUFFIX).map(|_| ArchiveEntry::Temp);
    }
    let hex = rest.strip_suffix(SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(ArchiveEntry::Final)
}

/// A segment that lives in an archive. Shared (`Arc`) by the log and the
/// replays reading it; the log removes the file only when nobody else
/// holds it.
#[derive(Debug)]
pub(crate) struct Archived {
    pub(crate) seq: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) last_lsn: Lsn,
    /// Bytes of the decompressed segment (its slot's `end`).
    pub(crate) raw_len: u64,
    /// Bytes of the archive file.
    pub(crate) file_len: u64,
}

impl Archived {
    pub(crate) fn name(&self) -> String {
        archive_name(self.seq)
    }

    fn from_header(header: &ArchiveHeader) -> Archived {
        Archived {
            seq: header.seq,
            first_lsn: header.first_lsn,
            last_lsn: header.last_lsn,
            raw_len: header.raw_len,
            file_len: ARCHIVE_HEADER_LEN as u64 + header.compressed_len,
        }
    }
}

/// Compresses the sealed segment `raw` (its slot's bytes `0..end`) and
/// writes it durably as the archive of `seq`. Removes its temporary file
/// when that fails.
pub(crate) fn write<S: Storage>(
    storage: &S,
    dir: &Path,
    seq: u64,
    (first_lsn, last_lsn): (Lsn, Lsn),
    raw: &[u8],
) -> Result<Archived, Error> {
    let name = archive_name(seq);
    let path = dir.join(&name);
    let mut bytes =
        vec![0u8; ARCHIVE_HEADER_LEN + lz4_flex::block::get_maximum_output_size(raw.len())];
    let body = bytes.get_mut(ARCHIVE_HEADER_LEN..).unwrap_or_default();
    let n = lz4_flex::block::compress_into(raw, body)
        .map_err(|e| Error::io("compress segment", &path, io::Error::other(e)))?;
    bytes.truncate(ARCHIVE_HEADER_LEN + n);
    let header = ArchiveHeader {
        codec: Codec::Lz4,
        seq,
        first_lsn,
        last_lsn,
        raw_len: raw.len() as u64,
        compressed_len: n as u64,
        body_crc: crc32c::crc32c(bytes.get(ARCHIVE_HEADER_LEN..).unwrap_or_default()),
    };
    if let Some(head) = bytes.get_mut(..ARCHIVE_HEADER_LEN) {
        head.copy_from_slice(&header.encode());
    }
    if let Err(e) = storage.write_atomic(dir, &name, &bytes) {
        // Best effort: a leftover is removed at the next open anyway.
        let _ = storage.remove(&dir.join(format!("{name}{TMP}")));
        return Err(Error::io("write archive", path, e));
    }
    Ok(Archived::from_header(&header))
}

/// Reads the archive of segment `seq` whole, checks it and returns it with
/// the decompressed segment. `last_good` is the LSN before it, for errors.
pub(crate) fn load<S: Storage>(
    storage: &S,
    dir: &Path,
    seq: u64,
    last_good: Lsn,
) -> Result<(Archived, Vec<u8>), Error> {
    let path = dir.join(archive_name(seq));
    let bytes = storage
        .read_all(&path)
        .map_err(|e| Error::io("read archive", &path, e))?;
    let header = check_header(&path, &bytes, seq, last_good)?;
    let body = bytes.get(ARCHIVE_HEADER_LEN..).unwrap_or_default();
    if body.len() as u64 != header.compressed_len {
        return Err(corrupt(
            path,
            last_good,
            "an archive is not the length its header gives",
        ));
    }
    if crc32c::crc32c(body) != header.body_crc {
        return Err(corrupt(
            path,
            last_good,
            "an archive's body fails its checksum",
        ));
    }
    let raw_len = usize::try_from(header.raw_len).unwrap_or(usize::MAX);
    let mut raw = vec![0u8; raw_len];
    let decompressed = match header.codec {
        Codec::Lz4 => lz4_flex::block::decompress_into(body, &mut raw),
    };
    if decompressed.ok() != Some(raw_len) {
        return Err(corrupt(
            path,
            last_good,
            "an archive does not decompress to the length its header gives",
        ));
    }
    let inner = SegmentHeader::decode(raw.get(..HEADER_BLOCK as usize).unwrap_or_default());
    if inner.map(|h| (h.seq, h.first_lsn)) != Ok((seq, header.first_lsn)) {
        return Err(corrupt(
            path,
            last_good,
            "an archive holds another segment than its header says",
        ));
    }
    Ok((Archived::from_header(&header), raw))
}

/// Decodes an archive header and checks it names segment `seq` and a body
/// size a real segment can have.
fn check_header(
    path: &Path,
    bytes: &[u8],
    seq: u64,
    last_good: Lsn,
) -> Result<ArchiveHeader, Error> {
    let header = match ArchiveHeader::decode(bytes) {
        Ok(header) => header,
        Err(HeaderError::Version(found)) => {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Err(HeaderError::Codec(codec)) => {
            return Err(Error::UnsupportedCodec {
                path: path.to_path_buf(),
                codec,
            });
        }
        Err(HeaderError::Foreign | HeaderError::Short | HeaderError::Corrupt) => {
            return Err(corrupt(
                path.to_path_buf(),
                last_good,
                "an archive's header is damaged",
            ));
        }
    };
    if header.seq != seq {
        return Err(corrupt(
            path.to_path_buf(),
            last_good,
            "an archive holds another segment than its name says",
        ));
    }
    if header.raw_len > header.compressed_len.saturating_mul(MAX_RATIO) + HEADER_BLOCK {
        return Err(corrupt(
            path.to_path_buf(),
            last_good,
            "an archive's header gives an impossible length",
        ));
    }
    Ok(header)
}

fn corrupt(file: PathBuf, last_good: Lsn, reason: &'static str) -> Error {
    Error::Corrupt {
        file,
        offset: 0,
        last_good,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_parse_back() {
        assert_eq!(archive_name(0x2a), "sealed-000000000000002a.lz4");
        assert_eq!(
            parse_archive(&archive_name(u64::MAX)),
            Some(ArchiveEntry::Final(u64::MAX))
        );
        assert_eq!(
            parse_archive("sealed-000000000000002a.lz4.tmp"),
            Some(ArchiveEntry::Temp)
        );
        for other in [
            "sealed-2a.lz4",
            "slot-0000.seg",
            "sealed-zz00000000000000.lz4",
            "CHECKPOINT.tmp",
        ] {
            assert_eq!(parse_archive(other), None, "{other}");
        }
    }
}
