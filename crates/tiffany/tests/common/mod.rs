//! Running the `tiffany` binary from integration tests.

use std::process::{Command, Output};

/// Runs the binary under test with `args` and waits for it.
#[allow(clippy::disallowed_methods)] // waiting for the child is the point
pub(crate) fn tiffany(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiffany"))
        .args(args)
        .output()
        .expect("run the tiffany binary")
}
