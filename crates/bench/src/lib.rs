//! The `tiffany perf-test` suites.
