# Tiffany's developer commands; `just` alone lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", "target")

# List the recipes.
default:
    @just --list

# The main job: 1,000 durable agents on the embedded defaults (`just demo --agents 50 --data-dir d`).
demo *ARGS:
    cargo run --release -p tiffany -- demo {{ARGS}}

# Every test: nextest for unit and integration tests, then doctests (nextest skips them).
test:
    cargo nextest run --workspace
    cargo test --doc --workspace

# Formatting, clippy on all targets and the docs, with warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace

# The benchmark suites (shared/PERF.md), e.g. `just perf-test sched --quick --json out.json`.
perf-test *ARGS:
    cargo run --release -p tiffany -- perf-test {{ARGS}}

# Profile one suite at quick size with perf; draws flamegraph-SUITE.svg when inferno is installed.
flamegraph SUITE:
    cargo build --release -p tiffany
    perf record -F 249 -g --call-graph dwarf -o perf.data -- {{target_dir}}/release/tiffany perf-test {{SUITE}} --quick
    if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then \
        perf script -i perf.data | inferno-collapse-perf | inferno-flamegraph > flamegraph-{{SUITE}}.svg; \
        echo "wrote flamegraph-{{SUITE}}.svg"; \
    else \
        echo "perf.data recorded; for a flame graph install inferno (cargo install inferno) and run this recipe again," >&2; \
        echo "or inspect it now with: perf report -i perf.data" >&2; \
    fi

# What CI runs on every submission.
ci:
    bash .ci/run
