//! `mock-epay`: the simulated EPay gateway as a standalone server, for demos and load tests.
//! Every knob is a flag (or a `MOCK_EPAY_*` variable) and can be changed later with
//! `PUT /knobs`.

use clap::Parser;
use mock_epay::{Config, Knobs, MockEpay, NotifyMethod, Tamper, DEFAULT_KEY, DEFAULT_PID};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mock-epay",
    version,
    about = "A simulated EPay (易支付) payment gateway"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_EPAY_LISTEN", default_value = "127.0.0.1:19900")]
    listen: String,
    /// The merchant id (pid) the gateway accepts.
    #[arg(long, env = "MOCK_EPAY_PID", default_value = DEFAULT_PID)]
    pid: String,
    /// The merchant key that signs requests and notifies.
    #[arg(long, env = "MOCK_EPAY_KEY", default_value = DEFAULT_KEY)]
    key: String,
    /// The base URL the gateway names in its pages; by default http://<listen address>.
    #[arg(long, env = "MOCK_EPAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Never send the notify (a lost callback); the payment is still recorded.
    #[arg(long, env = "MOCK_EPAY_DROP_NOTIFY")]
    drop_notify: bool,
    /// Wait this long before the first notify.
    #[arg(long, env = "MOCK_EPAY_NOTIFY_DELAY_MS", default_value_t = Knobs::default().notify_delay_ms)]
    notify_delay_ms: u64,
    /// Send the first notify this many times at once.
    #[arg(long, env = "MOCK_EPAY_DUPLICATE_NOTIFY", default_value_t = Knobs::default().duplicate_notify)]
    duplicate_notify: u32,
    /// Corrupt the notify.
    #[arg(long, env = "MOCK_EPAY_TAMPER", value_enum, default_value_t = Tamper::None)]
    tamper: Tamper,
    /// With --tamper money, api.php reports the tampered amount too.
    #[arg(long, env = "MOCK_EPAY_TAMPER_QUERY")]
    tamper_query: bool,
    /// How the notify is sent.
    #[arg(long, env = "MOCK_EPAY_NOTIFY_METHOD", value_enum, default_value_t = NotifyMethod::Get)]
    notify_method: NotifyMethod,
    /// Attempts per notify in total until the merchant answers "success".
    #[arg(long, env = "MOCK_EPAY_NOTIFY_ATTEMPTS", default_value_t = Knobs::default().notify_attempts)]
    notify_attempts: u32,
    /// Pause between two attempts of one notify.
    #[arg(long, env = "MOCK_EPAY_NOTIFY_RETRY_MS", default_value_t = Knobs::default().notify_retry_ms)]
    notify_retry_ms: u64,
}

impl Args {
    fn config(&self) -> Config {
        Config {
            pid: self.pid.clone(),
            key: self.key.clone(),
            public_url: self.public_url.clone(),
            knobs: Knobs {
                drop_notify: self.drop_notify,
                notify_delay_ms: self.notify_delay_ms,
                duplicate_notify: self.duplicate_notify,
                tamper: self.tamper,
                tamper_query: self.tamper_query,
                notify_method: self.notify_method,
                notify_attempts: self.notify_attempts,
                notify_retry_ms: self.notify_retry_ms,
            },
        }
    }
}

// The server runs on its own thread; this runtime only waits for a signal.
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
        anyhow::bail!("invalid mock-epay settings: {e}");
    }

    let server = MockEpay::start(config, &args.listen).await?;
    println!(
        "mock-epay listening on {} (pid {}, pages at {})",
        server.addr(),
        server.pid(),
        server.public_url()
    );

    shutdown_signal().await?;
    tracing::info!(orders = server.orders().len(), "stopping mock-epay");
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
