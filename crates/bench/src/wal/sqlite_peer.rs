//! Peer: SQLite (the amalgamation bundled by rusqlite) in WAL mode with
//! `synchronous=FULL`: one `INSERT` of the stream id and the 256-byte
//! payload blob per transaction (autocommit), so every append is one commit
//! and is durable when it returns.
//!
//! Invariants:
//! - each writer has its own connection with a busy timeout; SQLite
//!   serialises the writers itself (one writer at a time, no group commit);
//! - the bundled build syncs with `fsync` (it is compiled without
//!   `HAVE_FDATASYNC`), which is what a user of the `bundled` feature gets;
//! - before the first timed append the database is prefilled with
//!   [`PREFILL_ROWS`] commits made with `synchronous=OFF`: enough to pass
//!   `wal_autocheckpoint` (1,000 pages), so the WAL file has reached its
//!   steady size and timed commits overwrite blocks it already has, as the
//!   baselines and okaywal do. SQLite's defaults otherwise (4 KiB pages,
//!   `wal_autocheckpoint` 1,000, checkpoints run by the committing writer).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use rusqlite::Connection;

use super::{AppendLog, Appender, OpenPlan};
use crate::measure::Named;

/// Unsynced commits that bring the WAL file to its steady size.
const PREFILL_ROWS: usize = 1_200;
/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
const INSERT: &str = "INSERT INTO log (stream, payload) VALUES (?1, ?2)";

/// SQLite, one row per append.
#[derive(Debug)]
pub(crate) struct Sqlite;

impl Named for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

impl AppendLog for Sqlite {
    fn setup(&self) -> String {
        format!(
            "SQLite {} (bundled), journal_mode=WAL, synchronous=FULL (fsync), one INSERT per \
             transaction, a connection per writer, busy_timeout {} s; prefilled with {} \
             unsynced commits so the WAL file is at its steady size",
            rusqlite::version(),
            BUSY_TIMEOUT.as_secs(),
            PREFILL_ROWS
        )
    }

    fn open(&self, dir: &Path, plan: &OpenPlan) -> Result<Vec<Box<dyn Appender>>> {
        let path = dir.join("log.db");
        let first = connect(&path)?;
        let mode: String =
            first.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "SQLite refused WAL mode: {mode}"
        );
        first.execute_batch(
            "CREATE TABLE log (lsn INTEGER PRIMARY KEY, stream INTEGER NOT NULL, \
             payload BLOB NOT NULL)",
        )?;
        first.pragma_update(None, "synchronous", "OFF")?;
        let filler = vec![0u8; plan.payload_len];
        for _ in 0..PREFILL_ROWS {
            first.prepare_cached(INSERT)?.execute((0i64, &filler))?;
        }
        let mut appenders: Vec<Box<dyn Appender>> = Vec::with_capacity(plan.writers);
        let mut next = Some(first);
        for _ in 0..plan.writers {
            let conn = match next.take() {
                Some(conn) => conn,
                None => connect(&path)?,
            };
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Compile the statement before the clock starts.
            drop(conn.prepare_cached(INSERT)?);
            appenders.push(Box::new(SqliteAppender { conn }));
        }
        Ok(appenders)
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

struct SqliteAppender {
    conn: Connection,
}

impl Appender for SqliteAppender {
    fn append(&mut self, stream: u64, payload: &[u8]) -> Result<()> {
        let stream = i64::try_from(stream).context("stream id out of SQLite's range")?;
        self.conn
            .prepare_cached(INSERT)?
            .execute((stream, payload))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn sqlite_rows_land_in_wal_mode_from_every_writer() {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "tiffany-sqlite-test").unwrap();
        let plan = OpenPlan {
            writers: 2,
            appends: 10,
            payload_len: 256,
        };
        let mut appenders = Sqlite.open(dir.path(), &plan).unwrap();
        for (w, a) in appenders.iter_mut().enumerate() {
            for _ in 0..5 {
                a.append(w as u64, &[7; 256]).unwrap();
            }
        }
        drop(appenders);
        let conn = Connection::open(dir.path().join("log.db")).unwrap();
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM log WHERE stream IN (0, 1) AND length(payload) = 256",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, PREFILL_ROWS as i64 + 10);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
