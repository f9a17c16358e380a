//! Only regular files are read or written: a FIFO in the workspace fails
//! fast instead of hanging the call.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, failed_text};
use rustix::fs::{CWD, FileType, Mode, mknodat};
use serde_json::json;

#[test]
fn fs_fifo_is_refused_without_blocking() {
    let h = Harness::new();
    mknodat(
        CWD,
        h.workspace().join("pipe"),
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(
        failed_text(h.err("fs.read", json!({"path": "pipe"}))),
        "`pipe` is not a regular file"
    );
    // No reader: opening for writing fails (ENXIO) rather than waiting.
    let text = failed_text(h.err("fs.write", json!({"path": "pipe", "content": "x"})));
    assert!(text.starts_with("`pipe`: "), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.ok("fs.list", json!({})), "other 0 pipe\n");
}
