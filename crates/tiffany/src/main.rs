//! The `tiffany` command: thin glue over the library crates.
//!
//! Exit status: 0 on success (a benchmark run with missed goals included),
//! 1 when a command fails (the error and its causes go to stderr), 2 on a
//! usage error (reported by clap).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Parser, Subcommand};
use tiffany_bench::{CHILD_SUBCOMMAND, Machine, Metric, Options, Suite};

mod config;
mod demo_plan;
mod node_cmd;
mod wal_cmd;

/// A node allocates one small object per task and per message, by the
/// million; mimalloc's per-thread size classes serve that faster and with
/// less slack than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of a command that failed.
const EXIT_FAILURE: u8 = 1;

/// Tiffany: a durable, coroutine-first multi-agent runtime.
///
/// Tiffany runs many agents as cooperative tasks on a thread-per-core
/// scheduler with priorities and per-agent feedback. This command is its
/// entry point: it runs the demo workload (`demo`), one instruction (`run`),
/// shows a node's tasks (`tasks`), runs the benchmark suites (`perf-test`)
/// and looks into write-ahead logs (`wal`).
#[derive(Debug, Parser)]
#[command(
    name = "tiffany",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Run `tiffany help <COMMAND>` for the details of a command."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    node: node_cmd::NodeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo workload: many agents, each maintaining a small release
    /// with real `git`, `sha256sum` and file calls, journaled to a real WAL.
    ///
    /// Kill it at any moment (even with SIGKILL) and run it again with the
    /// same --data-dir: it resumes the unfinished tasks without redoing
    /// journaled steps, and says how many it resumed.
    #[command(after_long_help = DEMO_EXAMPLES)]
    Demo(node_cmd::DemoArgs),

    /// Run one instruction on one agent and print its live activity.
    ///
    /// Without --llm the offline planner runs the instruction as one
    /// command line through the `shell` skill.
    Run(node_cmd::RunArgs),

    /// Show the tasks recorded in a node's journal (read-only).
    #[command(subcommand)]
    Tasks(node_cmd::TasksCommand),

    /// Show the agents recorded in a node's journal, with their task counts
    /// and token totals (read-only).
    #[command(subcommand)]
    Agents(node_cmd::AgentsCommand),

    /// Run the performance suites and compare Tiffany against peer runtimes.
    ///
    /// Each suite runs Tiffany's hot paths and the same workloads on peer
    /// runtimes (tokio, async-executor, ...) in the same process, interleaved
    /// sample by sample, so the ratios survive machine noise. Every metric is
    /// the median of at least five samples taken after a warm-up.
    ///
    /// Prints one table per suite: each metric's value, [min, max] spread,
    /// spec target and goal, then one row per peer with the peer's value and
    /// our ratio to it. A last line names the missed goals; missing a goal
    /// does not fail the command.
    #[command(after_long_help = PERF_TEST_EXAMPLES)]
    PerfTest(PerfTestArgs),

    /// Look into a write-ahead log directory: inspect, verify, dump.
    #[command(subcommand)]
    Wal(wal_cmd::WalCommand),

    /// Run one measurement in a fresh process and print it as one JSON line
    /// (used by `perf-test` itself).
    #[command(name = CHILD_SUBCOMMAND, hide = true)]
    BenchChild {
        /// The measurement, `<suite>.<name>`.
        name: String,
        /// The measurement's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

const DEMO_EXAMPLES: &str = "\
Examples:
  tiffany demo                               1,000 agents in a fresh directory
  tiffany demo --agents 50 --data-dir d      50 agents; rerun on d to resume after a kill
  tiffany tasks list --data-dir d --json     what the run left

Configuration: --config FILE (TOML) and TIFFANY_* variables; see docs/configuration.md.";

const PERF_TEST_EXAMPLES: &str = "\
Examples:
  tiffany perf-test                        Run every suite at full size
  tiffany perf-test sched --quick          A quick smoke run of the scheduler suite
  tiffany perf-test sched --json out.json  Also write the JSON report

Environment:
  TIFFANY_BENCH_DIR  Where disk suites write their data (default: ./target/bench-tmp)

Exit status:
  0  the suites ran (missed goals are reported, not fatal)
  1  a suite could not run
  2  usage error";

#[derive(Debug, clap::Args)]
struct PerfTestArgs {
    /// Suites to run, in order [default: all]
    #[arg(value_name = "SUITE", value_parser = suite_parser())]
    suites: Vec<Suite>,

    /// Use small sizes that finish well under a minute per suite (CI smoke
    /// runs); still at least five samples per metric
    #[arg(long)]
    quick: bool,

    /// Also write the machine-readable report (PERF.md schema 1) to PATH
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// Accepts the names of [`Suite::ALL`]; clap lists them in the help and in
/// the error for any other name.
fn suite_parser() -> impl clap::builder::TypedValueParser<Value = Suite> {
    PossibleValuesParser::new(Suite::ALL.iter().map(|s| s.name()))
        .try_map(|name| name.parse::<Suite>())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, &cli.node) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`tiffany tasks list | head`) is the reader's
        // choice, not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = match cause.downcast_ref::<std::io::Error>() {
            Some(e) => Some(e.kind()),
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn run(command: Command, node: &node_cmd::NodeArgs) -> Result<()> {
    match command {
        Command::Demo(args) => node_cmd::demo(node, &args),
        Command::Run(args) => node_cmd::run(node, &args),
        Command::Tasks(command) => node_cmd::tasks(&command),
        Command::Agents(command) => node_cmd::agents(&command),
        Command::PerfTest(args) => perf_test(&args),
        Command::Wal(command) => wal_cmd::run(command),
        Command::BenchChild { name, args } => {
            println!("{}", tiffany_bench::run_child(&name, &args)?);
            Ok(())
        }
    }
}

// Blocking file I/O on purpose: this is the CLI's main thread, not a task.
#[allow(clippy::disallowed_methods)]
fn perf_test(args: &PerfTestArgs) -> Result<()> {
    // Create the JSON file first: a bad path should fail before the run.
    let json = match &args.json {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create the JSON report {}", path.display()))?;
            Some((path, BufWriter::new(file)))
        }
        None => None,
    };
    let options = Options { quick: args.quick };
    let machine = Machine::current();
    let report = tiffany_bench::run(&args.suites, &options, |suite, metrics: &[Metric]| {
        let table = tiffany_bench::render_suite(suite.name(), options.quick, &machine, metrics);
        println!("{table}");
    })?;
    if let Some((path, file)) = json {
        report
            .write_json(file)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_perf_test_defaults_to_all_suites() {
        let cli = Cli::try_parse_from(["tiffany", "perf-test"]).unwrap();
        let Command::PerfTest(args) = cli.command else {
            panic!("parsed {cli:?}");
        };
        assert!(args.suites.is_empty());
        assert!(!args.quick);
        assert_eq!(args.json, None);
    }

    #[test]
    fn cli_perf_test_parses_suites_and_flags() {
        let cli = Cli::try_parse_from([
            "tiffany",
            "perf-test",
            "sched",
            "--quick",
            "--json",
            "r.json",
        ])
        .unwrap();
        let Command::PerfTest(args) = cli.command else {
            panic!("parsed {cli:?}");
        };
        assert_eq!(args.suites, [Suite::Sched]);
        assert!(args.quick);
        assert_eq!(args.json, Some(PathBuf::from("r.json")));
    }

    #[test]
    fn cli_unknown_suite_is_a_usage_error_listing_known_suites() {
        let err = Cli::try_parse_from(["tiffany", "perf-test", "nosuch"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("nosuch") && msg.contains("sched"), "{msg}");
    }

    #[test]
    fn cli_bench_child_is_hidden_and_takes_raw_args() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains(CHILD_SUBCOMMAND), "{help}");
        let cli = Cli::try_parse_from([
            "tiffany",
            CHILD_SUBCOMMAND,
            "sched.idle_tasks",
            "tiffany",
            "-1",
        ])
        .unwrap();
        let Command::BenchChild { name, args } = cli.command else {
            panic!("parsed {cli:?}");
        };
        assert_eq!(name, "sched.idle_tasks");
        assert_eq!(args, ["tiffany", "-1"]);
    }
}
