//! Records the compiler's version for the report's `machine.rustc` field.
//!
//! Cargo hands build scripts the compiler it uses in `RUSTC`; its
//! `--version` line reads `rustc 1.95.0 (59807616e 2026-04-14)` and the
//! report keeps the second word. Any failure yields `unknown` rather than a
//! failed build: the figure is informative, not load-bearing.

use std::process::Command;

// A build script is not agent code: blocking on a child is fine here.
#[allow(clippy::disallowed_methods)]
fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=TIFFANY_BENCH_RUSTC={version}");
    println!("cargo::rerun-if-env-changed=RUSTC");
}
