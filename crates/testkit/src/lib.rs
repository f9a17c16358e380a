//! Test tools for Tiffany's durable crates: a storage that crashes, tears
//! writes and fails on demand, a seeded random number generator, and a mock
//! OpenAI-compatible LLM server.
//!
//! # Overview
//! - [`FaultStorage`] implements [`tiffany_wal::Storage`] in memory. Each
//!   file keeps the bytes a power loss would leave (*durable*) apart from
//!   what the process sees (*current*); directory entries are likewise
//!   unsynced until `sync_dir`. [`FaultStorage::crash`] returns what a power
//!   loss leaves, optionally with [`Torn`] unsynced writes;
//!   [`FaultStorage::crash_after`] stops all I/O after a numbered operation
//!   so a test can sweep "crash after each operation in turn";
//!   [`FaultRule`]s inject `EIO`, `ENOSPC` or short writes into chosen
//!   operations ([`OpKind`], [`Fault`]).
//! - [`Rng`] is a SplitMix64 generator, so every random test replays from
//!   its seed.
//! - [`MockLlmServer`] speaks OpenAI's chat completions with tool calls over
//!   real HTTP on `127.0.0.1` (so a child process can use it too). It checks
//!   each request against the protocol, answers through a responder the test
//!   supplies ([`MockRequest`] in, [`MockReply`] out), injects delays,
//!   error statuses and malformed bodies on demand, and records every
//!   request ([`RecordedRequest`]) with a fingerprint of its conversation.
//!
//! # The model (what survives a crash)
//! - File bytes: a write changes what reads see at once; only
//!   `sync_data` makes it survive [`FaultStorage::crash`]. A *failed* sync
//!   loses the writes it should have made durable while reads still see
//!   them, as Linux does after a write-back error.
//! - Names: creating, renaming and removing files survive a crash only after
//!   `sync_dir` of their directory; until then a crash undoes them. A created
//!   file's length and zeroes are durable with its name.
//! - [`Torn`] modes let part of the unsynced writes reach the disk, in whole
//!   512-byte sectors: in order up to a cut ([`Torn::Prefix`]) or any subset
//!   ([`Torn::Scattered`]); directories keep a prefix of their unsynced
//!   changes.
//! - Every fallible call is one numbered operation ([`FaultStorage::ops`]);
//!   after [`FaultStorage::crash_after`]`(n)` operation `n + 1` and all later
//!   ones fail and do nothing; a crashed storage fails everything.
//!
//! The notes at the top of `src/fault.rs` state every rule in full.
//!
//! # Example
//! ```
//! use std::path::Path;
//! use tiffany_testkit::FaultStorage;
//! use tiffany_wal::{Storage, StorageFile};
//!
//! let disk = FaultStorage::new();
//! let dir = Path::new("/log");
//! disk.create_dir_all(dir).unwrap();
//! let file = disk.create(&dir.join("a"), 1024).unwrap();
//! disk.sync_dir(dir).unwrap();
//! file.write_at(0, b"synced").unwrap();
//! file.sync_data().unwrap();
//! file.write_at(512, b"lost").unwrap();
//!
//! let after = disk.crash();
//! let bytes = after.contents(&dir.join("a")).unwrap();
//! assert_eq!(&bytes[..6], b"synced");
//! assert_eq!(&bytes[512..516], [0; 4]);
//! ```
//!
//! # Features
//! None.

mod fault;
mod http1;
mod llm_server;
mod rng;

pub use fault::{
    Fault, FaultFile, FaultLock, FaultRule, FaultStorage, Op, OpKind, Outcome, SECTOR, Torn,
};
pub use llm_server::{
    MockLlmServer, MockMessage, MockReply, MockRequest, MockToolCall, RecordedRequest,
};
pub use rng::Rng;
