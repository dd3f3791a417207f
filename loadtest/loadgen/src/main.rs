//! `loadgen`: measures Messages API targets one after the other under identical closed-loop
//! load and compares them (bench mode, `--target ...`), or runs a scenario file against
//! tollgate with provisioned tenants and reconciles its books (`--scenario FILE`). The work is
//! done by the `loadgen` library; this is its CLI.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use loadgen::prices::PriceTable;
use loadgen::scenario::LoopKind;
use loadgen::target::{assign_keys, split_named};
use loadgen::{
    html, run_bench, run_scenario_with, BenchConfig, Endpoints, Mode, RunOptions, Scenario, Target,
    Workload,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    NonStream,
    Stream,
    Both,
}

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator: compares Anthropic Messages API targets (--target), or runs a \
             scenario against tollgate and reconciles its books (--scenario)"
)]
struct Args {
    /// Scenario mode: run this scenario file (YAML) against --tollgate.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Scenario mode: tollgate's base URL.
    #[arg(long, env = "LOADGEN_TOLLGATE", requires = "scenario")]
    tollgate: Option<String>,
    /// Scenario mode: tollgate's admin token.
    #[arg(long, env = "LOADGEN_ADMIN_TOKEN", requires = "scenario")]
    admin_token: Option<String>,
    /// Scenario mode: tollgate's database, for reconciliation (required when the scenario has
    /// `reconcile: true`).
    #[arg(long, env = "LOADGEN_DATABASE_URL", requires = "scenario")]
    database_url: Option<String>,
    /// Scenario mode: the mock's base URL, for the baseline run.
    #[arg(long, requires = "scenario")]
    direct: Option<String>,
    /// Scenario mode: a pass-through hop's base URL, measured like the baseline.
    #[arg(long, requires = "scenario")]
    passthrough: Option<String>,
    /// Scenario mode: open-loop rate, req/s (switches the scenario to an open loop).
    #[arg(long, requires = "scenario", conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Scenario mode: seed of the schedule and the mix.
    #[arg(long, requires = "scenario")]
    seed: Option<u64>,
    /// Write the HTML report here (scenario mode).
    #[arg(long, requires = "scenario")]
    html: Option<PathBuf>,
    /// Scenario mode: reconcile at the prices of this file (the shape of
    /// loadtest/loadgen/prices.yaml) instead of the scenario's or the shipped ones.
    #[arg(long, value_name = "FILE", requires = "scenario")]
    prices: Option<PathBuf>,
    /// Scenario mode: print the mock's flags for the scenario's `upstream`, one a line, and exit.
    #[arg(long, requires = "scenario")]
    print_mock_args: bool,
    /// Bench mode: a target as NAME=URL; repeat it. Measured in the order given; the first is
    /// the baseline of the comparisons.
    #[arg(long = "target", value_name = "NAME=URL", required_unless_present = "scenario", value_parser = Target::parse)]
    targets: Vec<Target>,
    /// Sent as x-api-key to every target.
    #[arg(long, env = "LOADGEN_KEY")]
    key: Option<String>,
    /// Key for one target, NAME=KEY; overrides --key for it.
    #[arg(long = "key-for", value_name = "NAME=KEY", value_parser = split_named)]
    key_for: Vec<(String, String)>,
    /// Clients of the closed loop, each sending its next request as soon as one ends [bench:
    /// 16]. In scenario mode it switches the scenario to a closed loop.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured seconds per target, per mode, per round [bench: 10].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of load before each measurement, not counted [bench: 2].
    #[arg(long)]
    warmup: Option<f64>,
    /// Streaming requests (same as --mode stream).
    #[arg(long, conflicts_with = "mode")]
    stream: bool,
    /// Which responses to request.
    #[arg(long, value_enum, default_value_t = ModeArg::NonStream)]
    mode: ModeArg,
    #[arg(long, default_value_t = 16)]
    max_tokens: u64,
    /// Pad the user message to about this many bytes.
    #[arg(long, default_value_t = 0)]
    prompt_bytes: usize,
    #[arg(long, default_value = "claude-opus-5-5")]
    model: String,
    /// Repeat the whole sequence of targets this many times, interleaved; figures are the
    /// medians over rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Seconds after which a request counts as timed out.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Milliseconds of idleness between two runs.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Skip the one-request check of every target before measuring.
    #[arg(long)]
    no_preflight: bool,
    /// Threads of the tokio runtime (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Write every run and the summaries to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

impl Args {
    fn config(mut self) -> anyhow::Result<BenchConfig> {
        assign_keys(&mut self.targets, self.key.as_deref(), &self.key_for)?;
        let modes = match (self.stream, self.mode) {
            (true, _) | (false, ModeArg::Stream) => vec![Mode::Stream],
            (false, ModeArg::NonStream) => vec![Mode::NonStream],
            (false, ModeArg::Both) => vec![Mode::NonStream, Mode::Stream],
        };
        Ok(BenchConfig {
            targets: self.targets,
            modes,
            workload: Workload {
                model: self.model,
                max_tokens: self.max_tokens,
                prompt_bytes: self.prompt_bytes,
            },
            concurrency: self.concurrency.unwrap_or(16).max(1),
            warmup: seconds(self.warmup.unwrap_or(2.0), "warmup")?,
            duration: seconds(self.duration.unwrap_or(10.0), "duration")?,
            rounds: self.rounds.max(1),
            timeout: seconds(self.timeout, "timeout")?,
            pause: Duration::from_millis(self.pause_ms),
            preflight: !self.no_preflight,
            progress: !self.quiet,
        })
    }
}

fn write_file(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Scenario mode. Returns the process exit code: 0 passed, 1 failed run, 2 bad input.
fn scenario_main(args: Args, path: PathBuf) -> anyhow::Result<i32> {
    let mut scenario = match Scenario::load(&path) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return Ok(2);
        }
    };
    if args.print_mock_args {
        for arg in scenario.mock_args()? {
            println!("{arg}");
        }
        return Ok(0);
    }
    if let Some(rate) = args.rate {
        scenario.arrival.mode = LoopKind::Open;
        scenario.arrival.rate = rate;
    }
    if let Some(concurrency) = args.concurrency {
        scenario.arrival.mode = LoopKind::Closed;
        scenario.arrival.concurrency = concurrency;
    }
    if let Some(duration) = args.duration {
        scenario.duration_secs = duration;
    }
    if let Some(warmup) = args.warmup {
        scenario.warmup_secs = warmup;
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(path) = &args.prices {
        match PriceTable::load(path) {
            Ok(prices) => {
                scenario.prices = Some(prices);
                scenario.prices_file = Some(path.clone());
            }
            Err(e) => {
                eprintln!("loadgen: --prices: {e}");
                return Ok(2);
            }
        }
    }
    if let Err(e) = scenario.validate() {
        eprintln!("loadgen: {e} (after the command-line overrides)");
        return Ok(2);
    }
    let (Some(tollgate), Some(admin_token)) = (args.tollgate, args.admin_token) else {
        eprintln!("loadgen: --scenario needs --tollgate URL and --admin-token TOKEN");
        return Ok(2);
    };
    if scenario.reconcile && args.database_url.is_none() {
        eprintln!(
            "loadgen: the scenario reconciles (reconcile: true) but no --database-url \
             (or LOADGEN_DATABASE_URL) was given; pass tollgate's database URL, or set \
             `reconcile: false` in the scenario"
        );
        return Ok(2);
    }
    let endpoints = Endpoints {
        tollgate,
        admin_token,
        database_url: args.database_url,
        direct: args.direct,
        passthrough: args.passthrough,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    let options = RunOptions {
        progress: !args.quiet,
    };
    let report = match runtime
        .enable_all()
        .build()?
        .block_on(run_scenario_with(&scenario, &endpoints, options))
    {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return Ok(1);
        }
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
        eprintln!("JSON report written to {}", path.display());
    }
    if let Some(path) = &args.html {
        write_file(path, &html::render(&report))?;
        eprintln!("HTML report written to {}", path.display());
    }
    Ok(if report.passed() { 0 } else { 1 })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = args.scenario.clone() {
        let code = scenario_main(args, path)?;
        std::process::exit(code);
    }
    let threads = args.threads;
    let json = args.json.clone();
    let config = args.config()?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        runtime.worker_threads(threads);
    }
    let report = runtime.enable_all().build()?.block_on(run_bench(&config))?;

    print!("{}", report.render());
    if let Some(path) = json {
        let file =
            std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
