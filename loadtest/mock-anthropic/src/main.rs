//! `mock-anthropic`: the simulated Anthropic upstream as a standalone server, for benchmarks
//! and demos. Every `MockConfig` field is a flag (or a `MOCK_ANTHROPIC_*` variable).

use clap::Parser;
use mock_anthropic::{MockConfig, MockServer};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mock-anthropic",
    version,
    about = "A simulated Anthropic Messages API upstream"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_ANTHROPIC_LISTEN", default_value = "127.0.0.1:9999")]
    listen: String,
    /// Delay before the first byte of a stream, or before a non-streaming response.
    #[arg(long, env = "MOCK_ANTHROPIC_TTFT_MS", default_value_t = MockConfig::default().ttft_ms)]
    ttft_ms: u64,
    /// Delay between output-token chunks of a stream.
    #[arg(long, env = "MOCK_ANTHROPIC_INTER_TOKEN_MS", default_value_t = MockConfig::default().inter_token_ms)]
    inter_token_ms: u64,
    /// Output tokens per response, capped by the request's max_tokens.
    #[arg(long, env = "MOCK_ANTHROPIC_OUTPUT_TOKENS", default_value_t = MockConfig::default().output_tokens)]
    output_tokens: u64,
    /// When set, draw each response's output length uniformly in [output-tokens, this].
    #[arg(long, env = "MOCK_ANTHROPIC_OUTPUT_TOKENS_MAX")]
    output_tokens_max: Option<u64>,
    /// Output tokens per content_block_delta.
    #[arg(long, env = "MOCK_ANTHROPIC_TOKENS_PER_CHUNK", default_value_t = MockConfig::default().tokens_per_chunk)]
    tokens_per_chunk: u64,
    /// Cache-read tokens reported in usage.
    #[arg(long, env = "MOCK_ANTHROPIC_CACHE_READ_TOKENS", default_value_t = MockConfig::default().cache_read_tokens)]
    cache_read_tokens: u64,
    /// 5-minute cache-write tokens reported in usage.
    #[arg(long, env = "MOCK_ANTHROPIC_CACHE_WRITE_5M_TOKENS", default_value_t = MockConfig::default().cache_write_5m_tokens)]
    cache_write_5m_tokens: u64,
    /// 1-hour cache-write tokens reported in usage.
    #[arg(long, env = "MOCK_ANTHROPIC_CACHE_WRITE_1H_TOKENS", default_value_t = MockConfig::default().cache_write_1h_tokens)]
    cache_write_1h_tokens: u64,
    /// Probability that a request reports its cache reads.
    #[arg(long, env = "MOCK_ANTHROPIC_CACHE_HIT_RATE", default_value_t = MockConfig::default().cache_hit_rate)]
    cache_hit_rate: f64,
    /// Probability that a request reports its cache writes (both TTLs).
    #[arg(long, env = "MOCK_ANTHROPIC_CACHE_WRITE_RATE", default_value_t = MockConfig::default().cache_write_rate)]
    cache_write_rate: f64,
    /// Probability of a 429 rate_limit_error answer.
    #[arg(long, env = "MOCK_ANTHROPIC_ERROR_RATE_429", default_value_t = MockConfig::default().error_rate_429)]
    error_rate_429: f64,
    /// Probability of a 529 overloaded_error answer.
    #[arg(long, env = "MOCK_ANTHROPIC_ERROR_RATE_529", default_value_t = MockConfig::default().error_rate_529)]
    error_rate_529: f64,
    /// Probability of a 500 api_error answer.
    #[arg(long, env = "MOCK_ANTHROPIC_ERROR_RATE_500", default_value_t = MockConfig::default().error_rate_500)]
    error_rate_500: f64,
    /// Probability that a stream ends with event: error mid-stream.
    #[arg(long, env = "MOCK_ANTHROPIC_STREAM_ERROR_RATE", default_value_t = MockConfig::default().stream_error_rate)]
    stream_error_rate: f64,
    /// Probability that a stream's connection is cut mid-stream.
    #[arg(long, env = "MOCK_ANTHROPIC_RESET_RATE", default_value_t = MockConfig::default().reset_rate)]
    reset_rate: f64,
    /// Input tokens reported in usage; by default ceil(request body bytes / 4).
    #[arg(long, env = "MOCK_ANTHROPIC_INPUT_TOKENS")]
    input_tokens: Option<u64>,
    /// Input tokens each URL or file document adds to the reported input.
    #[arg(
        long,
        env = "MOCK_ANTHROPIC_DOCUMENT_INPUT_TOKENS",
        default_value_t = 0
    )]
    document_input_tokens: u64,
    /// Require this key in x-api-key or as a Bearer token.
    #[arg(long, env = "MOCK_ANTHROPIC_API_KEY")]
    api_key: Option<String>,
    /// Seed of the generated text, the ids and the per-request draws.
    #[arg(long, env = "MOCK_ANTHROPIC_SEED", default_value_t = MockConfig::default().seed)]
    seed: u64,
    /// actix-web worker threads.
    #[arg(long, env = "MOCK_ANTHROPIC_WORKERS", default_value_t = MockConfig::default().workers)]
    workers: usize,
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            ttft_ms: self.ttft_ms,
            inter_token_ms: self.inter_token_ms,
            output_tokens: self.output_tokens,
            output_tokens_max: self.output_tokens_max,
            tokens_per_chunk: self.tokens_per_chunk,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_5m_tokens: self.cache_write_5m_tokens,
            cache_write_1h_tokens: self.cache_write_1h_tokens,
            cache_hit_rate: self.cache_hit_rate,
            cache_write_rate: self.cache_write_rate,
            error_rate_429: self.error_rate_429,
            error_rate_529: self.error_rate_529,
            error_rate_500: self.error_rate_500,
            stream_error_rate: self.stream_error_rate,
            reset_rate: self.reset_rate,
            input_tokens: self.input_tokens,
            document_input_tokens: self.document_input_tokens,
            api_key: self.api_key.clone(),
            seed: self.seed,
            workers: self.workers,
        }
    }
}

// The server runs on its own threads; this runtime only waits for a signal.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = args.config();
    if let Err(e) = config.validate() {
        anyhow::bail!("invalid mock-anthropic settings: {e}");
    }

    let server = MockServer::start(config, &args.listen).await?;
    println!("mock-anthropic listening on {}", server.addr());

    shutdown_signal().await?;
    tracing::info!(stats = ?server.stats(), "stopping mock-anthropic");
    server.stop().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
