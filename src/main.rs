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

/// `mi_option_arena_eager_commit` in mimalloc 3, the version libmimalloc-sys builds by default
/// (libmimalloc-sys 0.1 names only mimalloc 2's options); `allocator_tests` checks the version.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// mimalloc commits its arenas eagerly on systems that overcommit, such as Linux, and then
/// keeps freed pages resident. Committing on demand cut tollgate's resident memory per open
/// stream by half (docs/adr/0002-mimalloc-with-arenas-committed-on-demand.md). The option only applies to arenas
/// reserved after it is set, and the first one is reserved by the first allocation, before
/// `main`; so it is set from a constructor, which runs before Rust's runtime allocates.
fn tune_allocator() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[ctor::ctor]
fn tune_allocator_before_main() {
    tune_allocator();
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
    tollgate_actors::journal::fail_writes_past_the_file_size_limit();
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

#[cfg(test)]
mod allocator_tests {
    #[test]
    fn the_option_index_belongs_to_mimalloc_3() {
        // SAFETY: reads a constant.
        let version = unsafe { libmimalloc_sys::mi_version() };
        assert!(
            (30000..40000).contains(&version),
            "mimalloc {version}: check MI_OPTION_ARENA_EAGER_COMMIT against its mimalloc.h"
        );
        super::tune_allocator();
        // SAFETY: reads a plain integer option.
        let eager = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT) };
        assert_eq!(eager, 0);
    }
}
