//! `loadgen`: measures Messages API targets one after the other under identical closed-loop
//! load and compares them. The work is done by `mock_anthropic::loadgen`; this is its CLI.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mock_anthropic::loadgen::target::{assign_keys, split_named};
use mock_anthropic::loadgen::{run_bench, BenchConfig, Mode, Target, Workload};

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
    about = "Closed-loop load generator comparing Anthropic Messages API targets"
)]
struct Args {
    /// A target as NAME=URL; repeat it. Measured in the order given; the first is the
    /// baseline of the comparisons.
    #[arg(long = "target", value_name = "NAME=URL", required = true, value_parser = Target::parse)]
    targets: Vec<Target>,
    /// Sent as x-api-key to every target.
    #[arg(long, env = "LOADGEN_KEY")]
    key: Option<String>,
    /// Key for one target, NAME=KEY; overrides --key for it.
    #[arg(long = "key-for", value_name = "NAME=KEY", value_parser = split_named)]
    key_for: Vec<(String, String)>,
    /// Clients of the closed loop, each sending its next request as soon as one ends.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per target, per mode, per round.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each measurement, not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
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
            concurrency: self.concurrency.max(1),
            warmup: seconds(self.warmup, "warmup")?,
            duration: seconds(self.duration, "duration")?,
            rounds: self.rounds.max(1),
            timeout: seconds(self.timeout, "timeout")?,
            pause: Duration::from_millis(self.pause_ms),
            preflight: !self.no_preflight,
            progress: !self.quiet,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
