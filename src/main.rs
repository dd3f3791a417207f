//! `tollgate serve | migrate | demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tollgate::config::Settings;
use tollgate::startup::Application;
use tollgate::store::PgStore;
use tracing_subscriber::EnvFilter;

/// glibc's malloc took about a fifth of tollgate's CPU under load (many small, short-lived
/// allocations across threads); mimalloc handles that pattern far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A metering proxy for reselling Claude API access"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Configuration file (default: ./config.yaml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo against a simulated upstream.
    Demo {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr, so that what a command prints for people (the demo's key and
    // commands) stands alone on stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "tollgate is listening");
            app.run_until_stopped().await
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            let store = PgStore::connect(&settings.database.url, 2)?;
            let applied = store.migrate().await?;
            println!("applied {applied} migration(s)");
            Ok(())
        }
        Command::Demo { config } => tollgate::demo::run(config.as_deref()).await,
    }
}
