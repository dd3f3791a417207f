//! The test harness: every test gets its own database (a random name, dropped afterwards),
//! its own simulated upstream and its own tollgate, all real, on loopback ports.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use mock_anthropic::{MockConfig, MockServer, MockStats};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate::config::{Settings, UpstreamSettings};
use tollgate::startup::Application;
use tollgate::store::PgStore;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "integration-test-admin-token-of-32-plus-chars";
pub const UPSTREAM_KEY: &str = "operator-upstream-key";

/// `TEST_LOG=1` shows the service's logs (tracing) in the tests' output, filtered by
/// `RUST_LOG` (default `info`). The subscriber is process-wide and every test of this binary
/// runs in the one process, so it is installed once. The test writer prints through the
/// test harness, which shows a test's lines when it fails (all of them with `--nocapture`).
fn init_test_log() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let wanted =
            std::env::var("TEST_LOG").is_ok_and(|value| !matches!(value.as_str(), "" | "0"));
        if wanted {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Fails only if another subscriber is installed already; then that one logs.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn postgres_base() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database with a unique name, and the journal directory that goes with it, both dropped
/// when this value is dropped. An instance restarted on the same database gets the same
/// journal, as a restarted service would.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub journal_dir: std::path::PathBuf,
}

impl TestDatabase {
    pub fn new() -> TestDatabase {
        let name = format!("tollgate_test_{}", Uuid::new_v4().simple());
        let url = format!("{}/{}", postgres_base(), name);
        let journal_dir = std::env::temp_dir().join(format!("{name}_journal"));
        TestDatabase {
            name,
            url,
            journal_dir,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.journal_dir);
        let admin_url = format!("{}/postgres", postgres_base());
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow, so use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// Where the admin API answers: `base`, unless `admin.listen` gives it its own address.
    pub admin_base: String,
    pub http: reqwest::Client,
    pub mock: MockServer,
    pub server: ServerHandle,
    /// Shuts the instance down as SIGTERM would.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Ends when the instance has shut down (drained and flushed).
    pub stopped: actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
    pub db: TestDatabase,
    pub settings: Settings,
    /// The instance's metering engine, for tests that settle more requests than HTTP could
    /// carry in their time (a million-row backlog).
    pub engine: tollgate_actors::Engine,
}

/// Settings for a test instance; `tweak` adjusts them before start.
pub fn test_settings(db: &TestDatabase, mock: &MockServer) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.server.max_body_bytes = 1024 * 1024;
    settings.server.shutdown_drain_ms = 10_000;
    settings.database.url = db.url.clone();
    settings.database.create_if_missing = true;
    settings.database.pool_size = 4;
    settings.admin.token = ADMIN_TOKEN.into();
    settings.auth.key_secret = "integration-test-key-secret".into();
    settings.auth.failed_auth_per_minute = 1_000;
    settings.upstreams = vec![UpstreamSettings {
        name: "mock".into(),
        base_url: mock.base_url(),
        api_key: UPSTREAM_KEY.into(),
        timeout_secs: 30,
        proxy: Some(String::new()),
    }];
    settings.metering.flush_interval_ms = 50;
    settings.metering.stream_drain_ms = 10_000;
    settings.metering.journal_dir = Some(db.journal_dir.clone());
    settings
}

/// Sends SIGTERM to a `tollgate serve` process and waits for it to exit cleanly.
pub async fn sigterm_and_wait(mut child: std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "tollgate exited with {exit}");
}

/// The output bytes of the content deltas in an SSE text, as tollgate measures them: each
/// complete `content_block_delta` event's data, less the envelope of an empty text delta.
pub fn relayed_output_bytes(sse: &str) -> u64 {
    const ENVELOPE: usize =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#.len();
    // Only whole events: a trailing partial one was never an event for the client either.
    let whole = sse.rfind("\n\n").map_or("", |end| &sse[..end]);
    whole
        .split("\n\n")
        .filter(|event| event.starts_with("event: content_block_delta\ndata: "))
        .map(|event| (event.len() - "event: content_block_delta\ndata: ".len() - ENVELOPE) as u64)
        .sum()
}

/// Polls the simulated upstream's counters until `done` holds.
pub async fn wait_for_mock(app: &TestApp, done: impl Fn(&mock_anthropic::MockStats) -> bool) {
    for _ in 0..400 {
        if done(&app.mock_stats().await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "mock never reached the expected state: {:?}",
        app.mock_stats().await
    );
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(MockConfig::default(), |_| {}).await
}

pub async fn spawn_app_with(mock_config: MockConfig, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    try_spawn_app_with(mock_config, tweak)
        .await
        .expect("tollgate starts")
}

/// [`spawn_app_with`], with tollgate's start-up failure returned: for a test that picks its
/// own port and may lose it to another test before tollgate binds it.
pub async fn try_spawn_app_with(
    mock_config: MockConfig,
    tweak: impl FnOnce(&mut Settings),
) -> anyhow::Result<TestApp> {
    init_test_log();
    let db = TestDatabase::new();
    let mock = MockServer::start(mock_config, "127.0.0.1:0")
        .await
        .expect("mock upstream starts");
    let mut settings = test_settings(&db, &mock);
    tweak(&mut settings);
    let app = Application::build(settings.clone()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let server = app.server_handle();
    let shutdown = app.shutdown_trigger();
    let engine = app.engine().clone();
    let stopped = actix_web::rt::spawn(app.run_until_stopped());
    Ok(TestApp {
        base,
        admin_base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()
            .expect("client"),
        mock,
        server,
        shutdown,
        stopped,
        db,
        settings,
        engine,
    })
}

/// A port free on loopback now, for a process that binds it itself (`serve_command`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A funded account with one key.
pub struct Customer {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

/// A minimal Messages body for `model`, with the mock's per-request overrides.
///
/// The prompt is padded to as many bytes as the mock is told to report prompt tokens: a prompt
/// count past the body's length is an upstream fault that billing caps (ADR 0010).
pub fn message_body(model: &str, max_tokens: u64, stream: bool, mock: Value) -> Value {
    let prompt: u64 = [
        "input_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
    ]
    .iter()
    .filter_map(|class| mock.get(class)?.as_u64())
    .sum();
    let content = format!("Say hello.{}", " ".repeat(prompt as usize));
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
        "mock": mock,
    })
}

impl TestApp {
    /// Triggers a graceful shutdown and waits for it to finish.
    pub async fn shut_down(self) -> TestDatabase {
        self.shutdown.cancel();
        self.stopped
            .await
            .expect("shutdown task")
            .expect("clean shutdown");
        self.db
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/admin/v1{}", self.admin_base, path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn create_account(&self, email: &str) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/accounts")
            .json(&json!({ "email": email, "limits": {
                "requests_per_minute": 100000, "tokens_per_minute": 0, "max_concurrent": 0 } }))
            .send()
            .await
            .expect("create account");
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn credit(&self, account: &str, amount: &str) -> Value {
        let response = self
            .admin(
                reqwest::Method::POST,
                &format!("/accounts/{account}/credit"),
            )
            .json(&json!({ "amount_usd": amount, "reason": "test" }))
            .send()
            .await
            .expect("credit");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// A credit sent on its own (for a test that races it); answers its status.
    pub fn credit_request(
        &self,
        account: &str,
        amount: &str,
    ) -> impl std::future::Future<Output = u16> + 'static {
        let request = self
            .admin(
                reqwest::Method::POST,
                &format!("/accounts/{account}/credit"),
            )
            .json(&json!({ "amount_usd": amount, "reason": "test" }));
        async move { request.send().await.expect("credit").status().as_u16() }
    }

    pub async fn create_key(&self, account: &str) -> (String, String) {
        let response = self
            .admin(reqwest::Method::POST, &format!("/accounts/{account}/keys"))
            .json(&json!({ "name": "test" }))
            .send()
            .await
            .expect("create key");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        (
            body["key"].as_str().expect("key").to_string(),
            body["id"].as_str().expect("key id").to_string(),
        )
    }

    pub async fn customer(&self, balance: &str) -> Customer {
        let id = self
            .create_account(&format!("{}@example.com", Uuid::new_v4().simple()))
            .await;
        if dec(balance) > Decimal::ZERO {
            self.credit(&id, balance).await;
        }
        let (key, key_id) = self.create_key(&id).await;
        Customer { id, key, key_id }
    }

    pub async fn view(&self, account: &str) -> Value {
        let response = self
            .admin(reqwest::Method::GET, &format!("/accounts/{account}"))
            .send()
            .await
            .expect("view");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    pub async fn balance(&self, account: &str) -> Decimal {
        dec(self.view(account).await["balance"]
            .as_str()
            .expect("balance"))
    }

    /// Waits until the account has no active holds (every request settled or released).
    pub async fn wait_settled(&self, account: &str) -> Value {
        for _ in 0..400 {
            let view = self.view(account).await;
            if view["held"] == "0" && view["active_requests"] == 0 {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "account {account} still has holds: {}",
            self.view(account).await
        );
    }

    /// Polls the account's live view until `done` holds, and returns that view.
    pub async fn wait_view(&self, account: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            let view = self.view(account).await;
            if done(&view) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "account {account} never reached the expected state: {}",
            self.view(account).await
        );
    }

    pub async fn flush(&self) {
        let response = self
            .admin(reqwest::Method::POST, "/flush")
            .send()
            .await
            .expect("flush");
        assert_eq!(response.status(), 200);
    }

    /// Sends a Messages request and reads its whole body as text.
    pub async fn message_text(&self, key: &str, body: &Value) -> String {
        let response = self.messages(key, body).send().await.expect("request sent");
        response.text().await.expect("whole body read")
    }

    pub fn messages(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.messages_at(&self.base, key, body)
    }

    /// A Messages request to the tollgate at `base`: one served apart from this instance,
    /// such as [`TestApp::serve_binary_instead`]'s.
    pub fn messages_at(&self, base: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
    }

    /// Suspends an account through the admin API.
    pub async fn suspend(&self, account: &str) {
        let response = self
            .admin(
                reqwest::Method::POST,
                &format!("/accounts/{account}/suspend"),
            )
            .json(&json!({"reason": "abuse"}))
            .send()
            .await
            .expect("suspend sent");
        assert_eq!(response.status(), 200);
    }

    /// Lifts an account's suspension through the admin API.
    pub async fn unsuspend(&self, account: &str) {
        let response = self
            .admin(
                reqwest::Method::POST,
                &format!("/accounts/{account}/unsuspend"),
            )
            .send()
            .await
            .expect("unsuspend sent");
        assert_eq!(response.status(), 200);
    }

    pub fn count_tokens(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/messages/count_tokens", self.base))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
    }

    /// Starts a stream at `base` and reads it up to its first content delta, so that it is
    /// under way; the rest is read on a task of its own, which returns the whole text
    /// received. Returns the response's `request-id` too.
    pub async fn stream_under_way(
        &self,
        base: &str,
        key: &str,
        body: &Value,
    ) -> (String, actix_web::rt::task::JoinHandle<String>) {
        use futures_util::StreamExt;
        let response = self.messages_at(base, key, body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        while !text.contains("event: content_block_delta") {
            text.push_str(&String::from_utf8_lossy(
                &stream.next().await.unwrap().unwrap(),
            ));
        }
        let reader = actix_web::rt::spawn(async move {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        });
        (request_id, reader)
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.db.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        actix_web::rt::spawn(connection);
        client
    }

    /// `tollgate serve` as an operator starts it, on this instance's database, upstream and
    /// secrets, listening on `listen`; the caller adds what its test needs.
    pub fn serve_command(&self, listen: &str) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .args(["serve", "--config", "/dev/null"])
            .env("TOLLGATE__SERVER__LISTEN", listen)
            .env("TOLLGATE__DATABASE__URL", &self.db.url)
            .env("TOLLGATE__METERING__JOURNAL_DIR", &self.db.journal_dir)
            .env("TOLLGATE__ADMIN__TOKEN", ADMIN_TOKEN)
            .env("TOLLGATE__AUTH__KEY_SECRET", &self.settings.auth.key_secret)
            .env(
                "TOLLGATE__UPSTREAMS",
                format!(
                    "[{{name=\"mock\",base_url=\"{}\",api_key=\"k\",proxy=\"\"}}]",
                    self.mock.base_url()
                ),
            )
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        command
    }

    /// Stops this in-process instance, which gives back the database, and serves the same
    /// database from the real `tollgate serve` binary instead, with `envs` added. Returns the
    /// process, once it answers `/healthz`, and its base URL.
    pub async fn serve_binary_instead(
        &mut self,
        envs: &[(&str, &str)],
    ) -> (std::process::Child, String) {
        self.serve_binary_instead_with(|command| {
            command.envs(envs.iter().copied());
        })
        .await
    }

    /// [`TestApp::serve_binary_instead`], with the command adjusted by `configure` (its
    /// environment, or where its logs go) before it starts.
    pub async fn serve_binary_instead_with(
        &mut self,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> (std::process::Child, String) {
        self.server.stop(true).await;
        (&mut self.stopped).await.unwrap().unwrap();
        self.serve_binary(configure).await
    }

    /// Starts the real `tollgate serve` binary on this test's database and journal, with the
    /// command adjusted by `configure`; the in-process instance must be stopped already.
    /// Returns the process, once it answers `/healthz`, and its base URL.
    pub async fn serve_binary(
        &self,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> (std::process::Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = self.serve_command(&format!("127.0.0.1:{port}"));
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut respawns = 0;
        for _ in 0..400 {
            if self
                .http
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
            {
                return (child, base);
            }
            // The instance before may still be letting go of the journal's lock (its writer's
            // last sync on a loaded disk): a start refused for it is tried again.
            if let Ok(Some(status)) = child.try_wait() {
                assert!(respawns < 5, "tollgate serve exited at start: {status}");
                respawns += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                child = command.spawn().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tollgate serve did not start");
    }

    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.db.url, 2).expect("store")
    }

    /// `/metrics`, the Prometheus text.
    pub async fn metrics_text(&self) -> String {
        self.metrics_text_at(&self.base).await
    }

    /// `/metrics` of the tollgate at `base` ([`TestApp::messages_at`]).
    pub async fn metrics_text_at(&self, base: &str) -> String {
        self.http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A gauge or counter without labels, read from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_at(&self.base, name).await
    }

    /// A gauge or counter without labels, read from the `/metrics` of the tollgate at `base`.
    pub async fn metric_at(&self, base: &str, name: &str) -> f64 {
        self.metrics_text_at(base)
            .await
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    pub async fn mock_stats(&self) -> MockStats {
        self.mock.stats()
    }

    /// (sum of usage costs, number of usage rows, sum of usage ledger entries, stored balance)
    pub async fn books(&self, account: &str) -> Books {
        let db = self.db().await;
        let id = Uuid::parse_str(account).expect("uuid");
        let usage = db
            .query_one(
                "SELECT coalesce(sum(cost), 0), count(*) FROM usage WHERE account_id = $1",
                &[&id],
            )
            .await
            .expect("usage sum");
        let ledger = db
            .query_one(
                "SELECT coalesce(sum(amount), 0) FROM ledger WHERE account_id = $1 AND kind = 'usage'",
                &[&id],
            )
            .await
            .expect("ledger sum");
        let credits = db
            .query_one(
                "SELECT coalesce(sum(amount), 0) FROM ledger WHERE account_id = $1 AND kind <> 'usage'",
                &[&id],
            )
            .await
            .expect("credit sum");
        let balance = db
            .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
            .await
            .expect("balance");
        Books {
            usage_cost: usage.get(0),
            usage_rows: usage.get(1),
            ledger_usage: ledger.get(0),
            credits: credits.get(0),
            stored_balance: balance.get(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Books {
    pub usage_cost: Decimal,
    pub usage_rows: i64,
    /// Negative: debits.
    pub ledger_usage: Decimal,
    pub credits: Decimal,
    pub stored_balance: Decimal,
}

impl Books {
    /// The reconciliation every test of money ends with.
    pub fn assert_reconciled(&self) {
        assert_eq!(
            self.usage_cost, -self.ledger_usage,
            "usage rows vs usage debits: {self:?}"
        );
        assert_eq!(
            self.stored_balance,
            self.credits + self.ledger_usage,
            "stored balance vs ledger: {self:?}"
        );
    }
}

/// Usage as a client reads it from what it received: the test's own reading of the wire,
/// independent of tollgate's parser.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_5m: u64,
    pub cache_1h: u64,
    pub web_search: u64,
}

fn apply_usage(seen: &mut SeenUsage, usage: &Value, with_breakdown: bool) {
    let n = |v: &Value| v.as_u64();
    if let Some(v) = n(&usage["input_tokens"]) {
        seen.input = v;
    }
    if let Some(v) = n(&usage["output_tokens"]) {
        seen.output = v;
    }
    if let Some(v) = n(&usage["cache_read_input_tokens"]) {
        seen.cache_read = v;
    }
    if let Some(v) = n(&usage["server_tool_use"]["web_search_requests"]) {
        seen.web_search = v;
    }
    let total = n(&usage["cache_creation_input_tokens"]);
    if with_breakdown {
        if let Some(b) = usage.get("cache_creation").filter(|b| b.is_object()) {
            seen.cache_5m = n(&b["ephemeral_5m_input_tokens"]).unwrap_or(0);
            seen.cache_1h = n(&b["ephemeral_1h_input_tokens"]).unwrap_or(0);
            return;
        }
    }
    if let Some(total) = total {
        seen.cache_5m = total.saturating_sub(seen.cache_1h);
    }
}

pub fn usage_of_message(message: &Value) -> SeenUsage {
    let mut seen = SeenUsage::default();
    apply_usage(&mut seen, &message["usage"], true);
    seen
}

/// Reads usage out of a complete SSE body.
pub fn usage_of_stream(body: &str) -> SeenUsage {
    let mut seen = SeenUsage::default();
    for event in body.split("\n\n") {
        let data = event
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        let Some(data) = data else { continue };
        match data["type"].as_str() {
            Some("message_start") => apply_usage(&mut seen, &data["message"]["usage"], true),
            Some("message_delta") => apply_usage(&mut seen, &data["usage"], false),
            _ => {}
        }
    }
    seen
}

/// Prices per million tokens, typed in from the reference's rate card: the tests' own copy,
/// so that a wrong built-in card fails them.
pub struct TestPrices {
    pub input: &'static str,
    pub cache_5m: &'static str,
    pub cache_1h: &'static str,
    pub cache_read: &'static str,
    pub output: &'static str,
}

pub const OPUS_5_5: TestPrices = TestPrices {
    input: "4",
    cache_5m: "5",
    cache_1h: "8",
    cache_read: "0.20",
    output: "20",
};
pub const HAIKU_5_5: TestPrices = TestPrices {
    input: "0.10",
    cache_5m: "0.125",
    cache_1h: "0.20",
    cache_read: "0.01",
    output: "0.50",
};
pub const HAIKU_5_5_LONG: TestPrices = TestPrices {
    input: "0.50",
    cache_5m: "0.625",
    cache_1h: "1.00",
    cache_read: "0.05",
    output: "2.50",
};
pub const SONNET_4_5: TestPrices = TestPrices {
    input: "3",
    cache_5m: "3.75",
    cache_1h: "6",
    cache_read: "0.30",
    output: "15",
};

pub fn expected_cost(prices: &TestPrices, usage: &SeenUsage) -> Decimal {
    let million = Decimal::from(1_000_000u32);
    let class = |tokens: u64, price: &str| Decimal::from(tokens) * dec(price) / million;
    class(usage.input, prices.input)
        + class(usage.output, prices.output)
        + class(usage.cache_read, prices.cache_read)
        + class(usage.cache_5m, prices.cache_5m)
        + class(usage.cache_1h, prices.cache_1h)
        + Decimal::from(usage.web_search) * dec("0.01")
}
