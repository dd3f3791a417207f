//! `tollgate demo`: the proxy against a simulated upstream, with a funded demo account and a
//! fresh key, ready for curl or Claude Code.

use std::path::Path;

use anyhow::Context;
use mock_anthropic::{MockConfig, MockServer};
use mock_epay::MockEpay;
use rust_decimal::Decimal;
use tollgate_actors::CreditKind;

use crate::accounts::KeyPolicy;
use crate::auth::KeyOwner;
use crate::config::{Settings, UpstreamSettings};
use crate::startup::Application;

const DEMO_EMAIL: &str = "demo@tollgate.local";
/// The demo account is topped up to this balance at every start.
const DEMO_BALANCE_USD: Decimal = Decimal::from_parts(20, 0, 0, false, 0);

pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let mut settings = Settings::load_unvalidated(config)?;
    let mock = MockServer::start(
        MockConfig {
            ttft_ms: 300,
            inter_token_ms: 15,
            output_tokens: 120,
            tokens_per_chunk: 2,
            cache_read_tokens: 2_048,
            cache_write_5m_tokens: 512,
            cache_write_1h_tokens: 256,
            ..MockConfig::default()
        },
        "127.0.0.1:0",
    )
    .await
    .context("starting the simulated upstream")?;
    settings.upstreams = vec![UpstreamSettings {
        name: "mock-anthropic".into(),
        base_url: mock.base_url(),
        api_key: "demo-upstream-key".into(),
        timeout_secs: 60,
        // The simulated upstream is on loopback: never through the environment's proxy.
        proxy: Some(String::new()),
    }];
    // A simulated EPay gateway, so that a recharge can be paid by hand in a browser.
    let epay = MockEpay::start(mock_epay::Config::default(), "127.0.0.1:0")
        .await
        .context("starting the simulated EPay gateway")?;
    settings.payments.epay.gateway_url = epay.base_url();
    settings.payments.epay.pid = epay.pid().to_owned();
    settings.payments.epay.key = epay.key().to_owned();
    settings.payments.epay.requery_secs = 10;
    if settings.server.public_url.is_empty() {
        // The gateway's notify comes back here.
        settings.server.public_url = format!("http://{}", settings.server.listen);
    }
    settings.database.create_if_missing = true;
    // A demo has no mail server to receive a verification link.
    settings.accounts.require_email_verification = false;
    if settings.auth.key_secret.len() < 16 {
        settings.auth.key_secret = "demo-key-secret-not-for-production".into();
    }
    if settings.admin.token.is_empty() {
        settings.admin.token = "demo-admin-token".into();
    }
    settings.validate()?;

    let app = Application::build(settings.clone())
        .await
        .context("starting tollgate (is PostgreSQL running at database.url?)")?;
    let store = app.store().clone();
    let account = match store.account_by_email(DEMO_EMAIL).await? {
        Some(account) => account,
        None => {
            store
                .create_account(DEMO_EMAIL, None, &settings.default_limits())
                .await?
        }
    };
    let view = app.engine().view(account.id).await?;
    if view.balance < DEMO_BALANCE_USD {
        app.engine()
            .change_balance(
                account.id,
                CreditKind::Credit,
                DEMO_BALANCE_USD - view.balance,
                "demo top-up".into(),
            )
            .await?;
    }
    let key = app.keys().generate();
    let row = store
        .create_key(
            account.id,
            "demo",
            &key.prefix,
            &key.digest,
            &KeyPolicy::default(),
        )
        .await?;
    app.keys().insert(
        key.digest,
        KeyOwner::new(row.id, account.id, KeyPolicy::default()),
    );

    let base = format!("http://127.0.0.1:{}", app.port());
    println!();
    println!(
        "tollgate demo is running at {base}, in front of a simulated Anthropic upstream at {}",
        mock.base_url()
    );
    println!(
        "Demo account {DEMO_EMAIL} ({}) holds {DEMO_BALANCE_USD} USD.",
        account.id
    );
    println!();
    println!("API key (shown once): {}", key.secret.expose());
    println!();
    println!("Try it:");
    println!(
        "  curl -sN {base}/v1/messages -H 'x-api-key: {}' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \\\n    -d '{{\"model\":\"claude-opus-5-5\",\"max_tokens\":256,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
        key.secret.expose()
    );
    println!();
    println!("Point Claude Code at it:");
    println!("  export ANTHROPIC_BASE_URL={base}");
    println!("  export ANTHROPIC_AUTH_TOKEN={}", key.secret.expose());
    println!();
    println!("See the balance:");
    println!(
        "  curl -s {base}/admin/v1/accounts/{} -H 'authorization: Bearer {}'",
        account.id, settings.admin.token
    );
    println!();
    println!(
        "Recharge in CNY through the simulated EPay gateway at {}:",
        epay.base_url()
    );
    println!(
        "  curl -s {base}/api/v1/auth/register -H 'content-type: application/json' -d '{{\"email\":\"me@example.com\",\"password\":\"a long password 42\"}}'"
    );
    println!(
        "  curl -s {base}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"me@example.com\",\"password\":\"a long password 42\"}}'"
    );
    println!("  TOKEN=<the token of that answer>");
    println!(
        "  curl -s {base}/api/v1/recharges -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"amount_cny\":\"72.00\",\"method\":\"epay\"}}'"
    );
    println!("  then open its pay_url in a browser and press Pay; GET {base}/api/v1/me shows the balance.");
    println!();
    println!("Ctrl-C stops it (in-flight streams finish and usage is flushed first).");
    app.run_until_stopped().await?;
    mock.stop().await;
    epay.stop().await;
    Ok(())
}
