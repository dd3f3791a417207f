//! Builds the service from its settings: database, migrations, key lookup, engine, HTTP server.
//! Tests start the real thing on port 0 through [`Application::build`].

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use governor::{Quota, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_actors::flusher::write_replay;
use tollgate_actors::journal::{Journal, JournalConfig, JournalHealth};
use tollgate_actors::pricing::RateCard;
use tollgate_actors::relay::Drain;
use tollgate_actors::{ActorPlacement, Engine, EngineConfig};

use crate::auth::KeyRing;
use crate::config::{MeteringSettings, Settings, INSTANCE_RELEASE_TIMEOUT, SERVER_STOP_TIMEOUT};
use crate::http::anthropic::body::BodyReader;
use crate::http::anthropic::PriceOptions;
use crate::http::{self, AppState};
use crate::store::{InstanceLock, PgStore};
use crate::upstream::{without_credentials, Upstream, UpstreamPool};

/// How often the failed-authentication limiter forgets recovered addresses, and the body
/// reader the keys with no upload in progress.
const FAILURE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub struct Application {
    port: u16,
    /// The admin API's own port, when `admin.listen` is set.
    admin_port: Option<u16>,
    server: Server,
    /// The admin API's own server, when `admin.listen` is set.
    admin_server: Option<Server>,
    /// Fired to shut down as SIGTERM would (tests, embedding).
    shutdown: CancellationToken,
    engine: Engine,
    store: PgStore,
    keys: KeyRing,
    settings: Arc<Settings>,
    /// The service's own periodic work, stopped at the end of a shutdown.
    background: Background,
    /// This instance's hold on its database, given back when it stops.
    instance: InstanceLock,
}

/// Work the service runs beside its requests for as long as it runs (the prune
/// loop). Every task is tracked: a shutdown stops them and waits for them, and
/// dropping an application that was never run stops them too, so none outlives its
/// application (tests start many in one process).
struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    fn new() -> Background {
        Background {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Spawns `work`, which must return soon after the token it is given is cancelled.
    fn spawn<F>(&self, work: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work(self.stop.clone()));
    }

    /// Stops every task and waits until all have returned.
    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every [`FAILURE_PRUNE_INTERVAL`], runs `prune` (the failed-authentication limiter forgets
/// the addresses that have recovered, the body reader its idle keys), until `stop` is
/// cancelled.
/// How long one question to a payment gateway may take.
const PAYMENT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

async fn prune_loop(prune: impl Fn() + Send, stop: CancellationToken) {
    let mut every = tokio::time::interval(FAILURE_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => prune(),
        }
    }
}

/// How often the journal's health is looked at, to log its changes.
const JOURNAL_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Logs every change of the journal's health, once: an error when it stops taking settles
/// (new requests then get 529), and when it recovers. Ends when `stop` is cancelled.
async fn watch_journal(journal: Journal, stop: CancellationToken) {
    let mut every = tokio::time::interval(JOURNAL_WATCH_INTERVAL);
    let mut last = JournalHealth::Healthy;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let health = journal.health();
        if std::mem::discriminant(&health) == std::mem::discriminant(&last) {
            continue;
        }
        if health.admits() {
            tracing::info!(was = ?last, "the journal takes settles again; new requests are admitted");
        } else {
            tracing::error!(
                ?health,
                "the journal cannot take settles; new requests are refused with 529"
            );
        }
        last = health;
    }
}

/// The process-wide metrics recorder. Several applications in one process (tests) share it.
///
/// The recorder is installed inside `get_or_init`, so an application built on another thread
/// at the same moment waits for the first install instead of finding the global recorder
/// taken and the handle not yet stored.
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
        .context("a metrics recorder not tollgate's is installed in this process")
}

/// How long start-up keeps trying to write a journal's replay to the ledger before it gives
/// up (the journal keeps it for the next start).
const REPLAY_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Opens the journal of `metering.journal_dir`, if set, and writes what it held to the ledger
/// (docs/adr/0019-write-ahead-journal.md). Refuses a directory another process holds.
async fn open_journal(
    metering: &MeteringSettings,
    store: &PgStore,
) -> anyhow::Result<Option<Journal>> {
    // An empty path turns the journal off, as an unset one does (`TOLLGATE__METERING__JOURNAL_DIR=`).
    let Some(dir) = metering
        .journal_dir
        .as_ref()
        .filter(|dir| !dir.as_os_str().is_empty())
    else {
        tracing::warn!(
            "metering.journal_dir is not set: a crash loses the usage settled since the last flush"
        );
        return Ok(None);
    };
    let config = JournalConfig {
        dir: dir.clone(),
        segment_bytes: metering.journal_segment_bytes,
        max_bytes: metering.journal_max_bytes,
        commit_interval: Duration::from_micros(metering.journal_commit_interval_us),
        commit_bytes: metering.journal_commit_bytes,
        preallocate: metering.journal_preallocate,
    };
    warn_if_open_to_others(dir);
    // A relative path is the working directory's: said in full, so that a start from another
    // directory, which would find another journal, shows in the log.
    tracing::info!(dir = %std::path::absolute(dir).unwrap_or_else(|_| dir.clone()).display(), "opening the journal");
    let (journal, replay) = tokio::task::spawn_blocking(move || Journal::open(config))
        .await
        .context("opening the journal")?
        .with_context(|| format!("opening the journal in {}", dir.display()))?;
    let records = replay.report.records;
    if records > 0 {
        tracing::info!(records, "replaying the journal into the ledger");
        let inserted = write_replay(store, &journal, &replay, REPLAY_GIVE_UP_AFTER)
            .await
            .context("writing the journal's replay to the ledger (it stays in the journal; a journal belongs to its database: is this the database it was written for?)")?;
        tracing::info!(
            records,
            new = inserted,
            already_flushed = records as u64 - inserted,
            "journal replayed"
        );
    }
    Ok(Some(journal))
}

/// Warns when an existing journal directory can be read or written by group or others. A new
/// one is made 0700; an operator's own is left as it is, but said to be open.
fn warn_if_open_to_others(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(dir) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the journal directory is open to group or others; it should be 0700");
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// The admin API on a listener of its own (`admin.listen`): one worker, since operators'
/// calls are few, and no account actors on it.
fn admin_server(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(http::request_id::assign))
            .configure(http::admin_routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(SERVER_STOP_TIMEOUT.as_secs())
    .listen(listener)?
    .run())
}

impl Application {
    /// Connects, migrates, loads keys and binds the listener. Must run inside an actix
    /// `System` (`#[actix_web::main]`, `#[actix_web::test]`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        if settings.database.create_if_missing
            && PgStore::create_database_if_missing(&settings.database.url).await?
        {
            tracing::info!("created the database");
        }
        // Before anything is read or written: a second instance must not even migrate.
        let instance = InstanceLock::acquire(&settings.database.url).await?;
        let store = PgStore::connect(&settings.database.url, settings.database.pool_size)?
            .with_flush_spread(Duration::from_millis(settings.metering.flush_interval_ms) / 2)
            .with_referral_ratio(settings.payments.referral_ratio)
            .with_redemption_as_first_recharge(
                settings.payments.redemption_counts_as_first_recharge,
            );
        let applied = store.migrate().await.context("applying migrations")?;
        if applied > 0 {
            tracing::info!(applied, "applied migrations");
        }
        // Before the engine starts and before any request: what the journal holds is billed
        // first, so that the balances the actors load include it.
        let journal = open_journal(&settings.metering, &store).await?;
        let keys = KeyRing::new(
            &settings.auth.key_secret,
            settings.auth.failed_auth_per_minute,
        );
        let loaded = keys.load(store.active_keys().await?);
        tracing::info!(keys = loaded, "loaded API keys");

        // Everything that can still fail comes before the engine starts: a failed build then
        // leaves no arbiter or flusher behind.
        let card = RateCard::builtin().context("reading the built-in rate card")?;
        let metrics = metrics_handle()?;
        // Settings::validate demands at least one upstream; a Settings built in code may not
        // have been validated.
        let upstream_settings = settings
            .upstreams
            .first()
            .context("no upstream is configured")?
            .clone();
        // Checked once here, so that a bad upstream stops the start with its reason.
        let checked =
            Upstream::new(&upstream_settings).context("building the upstream HTTP client")?;
        tracing::info!(upstream = %checked.name, base_url = %without_credentials(&upstream_settings.base_url), "reaching the upstream {}", checked.route());

        let listener = TcpListener::bind(&settings.server.listen)
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();
        let admin_listener = match &settings.admin.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .with_context(|| format!("binding admin.listen {address}"))?,
            ),
            None => None,
        };
        let admin_port = match &admin_listener {
            Some(listener) => Some(listener.local_addr()?.port()),
            None => None,
        };
        let placement = match settings.metering.account_arbiters {
            0 => ActorPlacement::Workers,
            n => ActorPlacement::Dedicated(n),
        };
        let engine = Engine::start(
            EngineConfig {
                flush_interval: Duration::from_millis(settings.metering.flush_interval_ms),
                placement,
                hold_policy: settings.hold_policy(),
                max_unflushed: settings.metering.max_unflushed,
                journal,
                durable_before_reply: settings.metering.durable_before_reply,
            },
            Arc::new(store.clone()),
        );
        let mailer = crate::email::Mailer::new(&settings.email.smtp_url, &settings.email.from)?;
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            engine: engine.clone(),
            keys: keys.clone(),
            card: Arc::new(card),
            store: store.clone(),
            stream_drain: Drain {
                max_stream: Duration::from_millis(settings.metering.max_stream_ms),
                at_least: Duration::from_millis(settings.metering.stream_drain_ms),
            },
            bodies: BodyReader::new(&settings.server, engine.interrupted()),
            count_tokens_limiter: NonZeroU32::new(settings.limits.count_tokens_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            metrics,
            price_options: PriceOptions::new(&settings.metering.price_options),
            customers: http::customer::CustomerGuards::new(&settings.accounts, &settings.payments),
            mailer: mailer.clone(),
        });
        let pruned = state.clone();
        let admin_server = match admin_listener {
            Some(listener) => Some(admin_server(state.clone(), listener)?),
            None => None,
        };
        let separate_admin = admin_server.is_some();
        let workers = match settings.server.workers {
            0 => cpus(),
            n => n,
        };
        let server = HttpServer::new(move || {
            // Runs once on each worker's thread.
            state.engine.host_actors_here();
            // Each worker builds its own client, so that its connections are driven by the
            // worker that uses them. The same settings built `checked` above; should they fail
            // here all the same, the worker shares that client rather than stop the server.
            let upstream = Upstream::new(&upstream_settings).unwrap_or_else(|error| {
                tracing::error!(%error, "this worker's upstream client failed to build; sharing the first one");
                checked.clone()
            });
            App::new()
                .app_data(state.clone())
                .app_data(web::Data::new(UpstreamPool::new(vec![upstream])))
                .wrap(middleware::from_fn(http::request_id::assign))
                .configure(if separate_admin {
                    http::proxy_routes
                } else {
                    http::routes
                })
        })
        .workers(workers)
        // SSE events are small writes; with Nagle's algorithm on, one waits for the client's
        // delayed ACK of the one before (about 40 ms on a kept-alive connection).
        .tcp_nodelay(true)
        .backlog(4096)
        .max_connections(100_000)
        // Signals are handled in `run_until_stopped`: in-flight requests must settle while the
        // workers they run on are still up, before the server is stopped.
        .disable_signals()
        // Stopped only after every request has settled and been flushed (run_until_stopped).
        .shutdown_timeout(SERVER_STOP_TIMEOUT.as_secs())
        .listen(listener)?
        .run();
        // Started last, once nothing can fail: a failed build leaves no loop behind.
        let background = Background::new();
        if let Some(journal) = engine.journal().cloned() {
            background.spawn(|stop| watch_journal(journal, stop));
        }
        if mailer.is_configured() {
            let outbox = store.clone();
            background.spawn(move |stop| crate::email::send_loop(outbox, mailer, stop));
        }
        {
            // Asks the EPay gateway about pending orders (a lost notify still credits) and
            // expires the orders past their time.
            let (engine, store) = (engine.clone(), store.clone());
            let payments = settings.payments.clone();
            // The merchant key is in the query's URL: it goes to the gateway and nowhere else,
            // neither through a proxy from the environment nor after a redirect.
            let client = reqwest::Client::builder()
                .timeout(PAYMENT_QUERY_TIMEOUT)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default();
            background.spawn(move |stop| {
                crate::payments::requery_loop(engine, store, payments, client, stop)
            });
        }
        let pruned_keys = keys.clone();
        background.spawn(|stop| {
            prune_loop(
                move || {
                    pruned_keys.prune_failures();
                    pruned.bodies.prune_idle();
                    pruned.customers.prune();
                },
                stop,
            )
        });
        Ok(Application {
            port,
            admin_port,
            server,
            admin_server,
            shutdown: CancellationToken::new(),
            background,
            instance,
            engine,
            store,
            keys,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the admin API listens on: `admin.listen`'s, or the main one's when unset.
    pub fn admin_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.port)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &PgStore {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The HTTP server's handle. Stopping through it skips the drain; use
    /// [`Application::shutdown_trigger`] for a graceful stop.
    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Cancelling this token shuts down exactly as SIGTERM does.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown trigger. Then:
    /// 1. stops accepting connections, and refuses new requests on open ones (529);
    /// 2. waits up to `server.shutdown_drain_ms` for in-flight requests, then interrupts the
    ///    rest, which settle the usage they have seen;
    /// 3. flushes every settled debit;
    /// 4. stops the service's background tasks and waits for them;
    /// 5. stops the HTTP server;
    /// 6. gives back the database's instance lock.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // The handlers first: if one cannot be installed, the server was never spawned.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let admin = self.admin_server.map(|admin| {
            let handle = admin.handle();
            (handle, actix_web::rt::spawn(admin))
        });
        let server_ended = tokio::select! {
            _ = terminate.recv() => false,
            _ = interrupt.recv() => false,
            _ = self.shutdown.cancelled() => false,
            ended = &mut server => {
                if let Ok(Err(error)) = ended {
                    tracing::error!(%error, "HTTP server failed");
                }
                true
            }
        };
        tracing::info!("shutting down: draining in-flight requests, then flushing usage");
        if !server_ended {
            handle.pause().await;
        }
        if let Some((admin, _)) = &admin {
            admin.pause().await;
        }
        // Sized to fit an orchestrator's grace period (Settings::worst_case_shutdown).
        let drain = Duration::from_millis(self.settings.server.shutdown_drain_ms);
        let flush = Duration::from_millis(self.settings.server.shutdown_flush_ms);
        let clean = self.engine.shutdown(drain, flush).await;
        let stats = self.engine.flusher_stats();
        if clean {
            tracing::info!(
                flushed = stats.flushed_records,
                "shutdown complete; all usage flushed"
            );
        } else {
            tracing::error!(
                unflushed = stats.backlog,
                kept_in_journal = self.engine.journal().is_some(),
                "shutdown incomplete: usage left unflushed"
            );
        }
        self.background.stop().await;
        // Both listeners stop together, so that the admin one adds nothing to the worst case.
        let main_stopped = async {
            if !server_ended {
                handle.stop(true).await;
                let _ = server.await;
            }
        };
        let admin_stopped = async {
            if let Some((handle, server)) = admin {
                handle.stop(true).await;
                let _ = server.await;
            }
        };
        // The journal stops with them: the final flush has told it what the ledger holds, so
        // it leaves nothing to replay unless something was left unflushed.
        let journal_stopped = async {
            if let Some(journal) = self.engine.journal() {
                if tokio::time::timeout(SERVER_STOP_TIMEOUT, journal.shutdown())
                    .await
                    .is_err()
                {
                    tracing::error!("the journal's writer did not stop in time; what it holds is replayed at the next start");
                }
            }
        };
        tokio::join!(main_stopped, admin_stopped, journal_stopped);
        // Last, once nothing more is written: the next instance may start at once.
        if tokio::time::timeout(INSTANCE_RELEASE_TIMEOUT, self.instance.release())
            .await
            .is_err()
        {
            tracing::warn!("the instance lock was not released in time; it ends with the session");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_the_background_ends_the_prune_loop_and_waits_for_it() {
        let background = Background::new();
        let keys = KeyRing::new("a-test-secret-of-enough-length", 3);
        background.spawn(|stop| prune_loop(move || keys.prune_failures(), stop));
        let tasks = background.tasks.clone();
        assert_eq!(tasks.len(), 1);
        tokio::time::timeout(Duration::from_secs(5), background.stop())
            .await
            .expect("the loop returns once stopped");
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn dropping_the_background_stops_its_tasks() {
        let background = Background::new();
        let keys = KeyRing::new("a-test-secret-of-enough-length", 3);
        background.spawn(|stop| prune_loop(move || keys.prune_failures(), stop));
        let tasks = background.tasks.clone();
        tasks.close();
        drop(background);
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("the loop returns once its background is dropped");
    }
}
