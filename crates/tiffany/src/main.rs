//! The `tiffany` command.
fn main() {}
