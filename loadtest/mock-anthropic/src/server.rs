//! [`MockServer`]: runs the mock on its own thread, with its own actix system.
//!
//! Callers start the mock from very different places: `#[actix_web::test]` (a single-threaded
//! actix system), `#[tokio::test]` of either flavour (no actix system at all), and from inside
//! a running actix-web application (`tollgate demo`). Giving the mock a dedicated thread and
//! actix system makes all of them work the same way, and keeps the mock's timers and workers
//! independent of whatever the caller's runtime is busy with. The only things that cross
//! threads are runtime-agnostic channels and the server handle.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::config::MockConfig;
use crate::routes::{self, Shared};
use crate::stats::MockStats;

/// Pending connections the listening socket queues; benchmarks open many at once.
const LISTEN_BACKLOG: u32 = 4096;

/// A running mock Anthropic upstream. Dropping it stops the server too, without waiting.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    /// Fires when the server thread has shut its actix system down.
    finished: Option<oneshot::Receiver<()>>,
}

impl MockServer {
    /// Binds `listen` (for example `"127.0.0.1:0"`), starts serving in the background, and
    /// returns once the socket is listening. Fails first if [`MockConfig::validate`] does.
    pub async fn start(config: MockConfig, listen: &str) -> anyhow::Result<MockServer> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid mock-anthropic config: {e}"))?;
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared::new(config));
        let app_state = web::Data::from(Arc::clone(&shared));
        let listen = listen.to_owned();
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<(SocketAddr, ServerHandle)>>();
        let (finished_tx, finished_rx) = oneshot::channel();

        std::thread::Builder::new()
            .name("mock-anthropic".to_owned())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let bound = bind(&listen).and_then(|addr| {
                        let server = HttpServer::new(move || {
                            App::new()
                                .app_data(app_state.clone())
                                .configure(routes::configure)
                        })
                        .workers(workers)
                        .backlog(LISTEN_BACKLOG)
                        // SSE events are small writes: without this, Nagle's algorithm holds
                        // each one until the previous is acknowledged.
                        .tcp_nodelay(true)
                        // A client that closes its side is gone (HTTP clients do not half-close
                        // while awaiting a response). Dropping its request at once is what
                        // lets a stream abandoned during the time to first token count as
                        // cancelled rather than completed into a dead socket.
                        .h1_allow_half_closed(false)
                        // The caller owns process signals: the binary stops the mock itself,
                        // and tests must not have a mock swallow their Ctrl-C.
                        .disable_signals()
                        .bind(addr)
                        .with_context(|| format!("binding mock-anthropic to {addr}"))?;
                        let local = server.addrs().first().copied().unwrap_or(addr);
                        Ok((local, server.run()))
                    });
                    match bound {
                        Ok((local, server)) => {
                            let _ = ready_tx.send(Ok((local, server.handle())));
                            if let Err(e) = server.await {
                                tracing::error!(error = %e, "mock-anthropic server failed");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                let _ = finished_tx.send(());
            })
            .context("spawning the mock-anthropic thread")?;

        let (addr, handle) = ready_rx
            .await
            .context("the mock-anthropic thread ended before listening")??;
        tracing::info!(%addr, "mock-anthropic listening");
        Ok(MockServer {
            addr,
            shared,
            handle,
            finished: Some(finished_rx),
        })
    }

    /// The bound address, with the real port when `:0` was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, with a wildcard bind address replaced by loopback so the URL is
    /// always one a client can connect to.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, drops open connections (streams in flight count as cancelled), and
    /// waits for the server thread to finish.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if self.finished.is_some() {
            // The stop command is sent when `stop` is called; the returned future only waits
            // for its completion, which a drop cannot do.
            drop(self.handle.stop(false));
        }
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Resolves `listen` to the one address the server binds. A name such as `localhost` may
/// resolve to several; the mock has a single address, so it takes the first.
fn bind(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("resolving listen address {listen:?}"))?
        .next()
        .with_context(|| format!("listen address {listen:?} resolves to nothing"))
}
