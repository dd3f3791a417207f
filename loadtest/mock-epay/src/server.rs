//! [`MockEpay`]: runs the gateway on its own thread, with its own actix system.
//!
//! As with mock-anthropic's `MockServer`, callers start it from `#[actix_web::test]`,
//! `#[tokio::test]` of either flavour, or from inside a running actix-web application
//! (`tollgate demo`); a dedicated thread and actix system make all of them work the same way,
//! and keep the notify timers independent of the caller's runtime.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::config::{Config, Knobs, KnobsPatch};
use crate::orders::Order;
use crate::routes;
use crate::state::Shared;

/// A running mock EPay gateway. Dropping it stops the server too, without waiting.
pub struct MockEpay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    /// Fires when the server thread has shut its actix system down.
    finished: Option<oneshot::Receiver<()>>,
}

impl MockEpay {
    /// Binds `listen` (for example `"127.0.0.1:0"`), starts serving in the background, and
    /// returns once the socket is listening. Fails first if [`Config::validate`] does.
    pub async fn start(config: Config, listen: &str) -> anyhow::Result<MockEpay> {
        let addr = resolve(listen)?;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding mock-epay to {addr}"))?;
        MockEpay::start_on(config, listener).await
    }

    /// Serves on an already bound `listener` (a test that must know the port before the
    /// gateway starts binds it itself).
    pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<MockEpay> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid mock-epay config: {e}"))?;
        let addr = listener
            .local_addr()
            .context("reading the mock-epay listener's address")?;
        listener
            .set_nonblocking(true)
            .context("making the mock-epay listener non-blocking")?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| connectable_url(addr));
        let shared = Arc::new(Shared::new(config, public_url)?);
        let app_state = web::Data::from(Arc::clone(&shared));
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<ServerHandle>>();
        let (finished_tx, finished_rx) = oneshot::channel();

        std::thread::Builder::new()
            .name("mock-epay".to_owned())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(app_state.clone())
                            .configure(routes::configure)
                    })
                    // One worker: the orders are behind one lock anyway, and the notify tasks
                    // and their HTTP client then live on a single runtime.
                    .workers(1)
                    // The caller owns process signals: the binary stops the mock itself, and
                    // tests must not have a mock swallow their Ctrl-C.
                    .disable_signals()
                    .listen(listener)
                    .context("serving mock-epay on its listener");
                    match server {
                        Ok(server) => {
                            let server = server.run();
                            let _ = ready_tx.send(Ok(server.handle()));
                            if let Err(e) = server.await {
                                tracing::error!(error = %e, "mock-epay server failed");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                let _ = finished_tx.send(());
            })
            .context("spawning the mock-epay thread")?;

        let handle = ready_rx
            .await
            .context("the mock-epay thread ended before listening")??;
        tracing::info!(%addr, public_url = %shared.public_url, "mock-epay listening");
        Ok(MockEpay {
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
        connectable_url(self.addr)
    }

    /// The URL the gateway names in its pages ([`Config::public_url`], else
    /// [`MockEpay::base_url`]), without a trailing slash.
    pub fn public_url(&self) -> &str {
        &self.shared.public_url
    }

    /// `{public_url}/submit.php`, where a merchant sends its payers.
    pub fn submit_url(&self) -> String {
        format!("{}/submit.php", self.shared.public_url)
    }

    /// `{base_url}/api.php`, the merchant's order query.
    pub fn api_url(&self) -> String {
        format!("{}/api.php", self.base_url())
    }

    /// The merchant id the gateway accepts.
    pub fn pid(&self) -> &str {
        &self.shared.pid
    }

    /// The merchant key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        self.shared.knobs()
    }

    /// Replaces the knobs (orders paid from now on follow them). Refuses invalid knobs.
    pub fn set_knobs(&self, knobs: Knobs) -> Result<(), String> {
        self.shared.set_knobs(knobs)
    }

    /// Changes the knobs `patch` names, as `PUT /knobs` does; returns the result.
    pub fn patch_knobs(&self, patch: &KnobsPatch) -> Result<Knobs, String> {
        self.shared.patch_knobs(patch)
    }

    /// Every order, in creation order.
    pub fn orders(&self) -> Vec<Order> {
        self.shared.orders.list()
    }

    /// The order with this gateway `trade_no`.
    pub fn order(&self, trade_no: &str) -> Option<Order> {
        self.shared.orders.get(trade_no)
    }

    /// The order of the configured merchant with this `out_trade_no`.
    pub fn order_by_out_trade_no(&self, out_trade_no: &str) -> Option<Order> {
        self.shared
            .orders
            .by_out_trade_no(&self.shared.pid, out_trade_no)
    }

    /// Stops accepting, drops open connections and pending notifies, and waits for the
    /// server thread to finish.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for MockEpay {
    fn drop(&mut self) {
        if self.finished.is_some() {
            // The stop command is sent when `stop` is called; the returned future only waits
            // for its completion, which a drop cannot do.
            drop(self.handle.stop(false));
        }
    }
}

impl std::fmt::Debug for MockEpay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockEpay")
            .field("addr", &self.addr)
            .field("public_url", &self.shared.public_url)
            .finish_non_exhaustive()
    }
}

fn connectable_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Resolves `listen` to the one address the server binds (the first of several).
fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("resolving listen address {listen:?}"))?
        .next()
        .with_context(|| format!("listen address {listen:?} resolves to nothing"))
}
