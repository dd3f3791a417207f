//! Preflight checks and tenant provisioning through tollgate's admin API.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use rust_decimal::Decimal;
use serde_json::json;

use super::reconcile::TenantRecord;
use super::scenario::{Limits, Scenario};

/// One provisioned key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key: String,
    pub account_id: String,
}

/// Everything provisioned for a run.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub tenants: Vec<TenantRecord>,
    pub well_behaved: Vec<KeyInfo>,
    pub abusers: Vec<KeyInfo>,
}

/// Checks that tollgate answers `/healthz`, that the admin token is accepted, and that the
/// reference targets answer at all, and, when reconciliation will run, that `database_url`
/// accepts a connection and a query, before anything is provisioned.
pub async fn preflight(
    http: &reqwest::Client,
    tollgate: &str,
    admin_token: &str,
    references: &[(String, String)],
    database_url: Option<&str>,
) -> anyhow::Result<()> {
    let quick = Duration::from_secs(5);
    let health = http
        .get(format!("{tollgate}/healthz"))
        .timeout(quick)
        .send()
        .await
        .with_context(|| format!("tollgate: {tollgate}/healthz is unreachable"))?;
    if !health.status().is_success() {
        bail!("tollgate: {tollgate}/healthz answered {}", health.status());
    }
    // An account that cannot exist: a valid token gets 404, a wrong one 401.
    let probe = http
        .get(format!(
            "{tollgate}/admin/v1/accounts/00000000-0000-0000-0000-000000000000"
        ))
        .bearer_auth(admin_token)
        .timeout(quick)
        .send()
        .await
        .context("tollgate: the admin API is unreachable")?;
    match probe.status().as_u16() {
        404 => {}
        401 | 403 => bail!("admin token: tollgate refused it ({})", probe.status()),
        other => bail!("admin token: checking it, tollgate answered {other}"),
    }
    for (name, url) in references {
        http.head(format!("{url}/"))
            .timeout(quick)
            .send()
            .await
            .with_context(|| format!("{name}: {url} is unreachable"))?;
    }
    if let Some(database_url) = database_url {
        preflight_database(database_url).await?;
    }
    Ok(())
}

/// Connects to tollgate's database and runs `SELECT 1`, within a few seconds.
async fn preflight_database(database_url: &str) -> anyhow::Result<()> {
    let check = async {
        let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .context("connecting")?;
        let driver = tokio::spawn(connection);
        let result = db.simple_query("SELECT 1").await.context("SELECT 1");
        drop(db);
        driver.abort();
        result.map(|_| ())
    };
    match tokio::time::timeout(Duration::from_secs(10), check).await {
        Ok(result) => result.context(
            "--database-url: tollgate's database, needed for reconciliation, is not usable",
        ),
        Err(_) => bail!(
            "--database-url: tollgate's database, needed for reconciliation, did not answer \
             within 10 s"
        ),
    }
}

async fn admin_post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response = http
        .post(format!("{base}/admin/v1/{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST /admin/v1/{path}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST /admin/v1/{path} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("POST /admin/v1/{path}: not JSON: {text}"))
}

fn string_field(value: &serde_json::Value, field: &str, path: &str) -> anyhow::Result<String> {
    value
        .get(field)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .with_context(|| format!("POST /admin/v1/{path}: no {field:?} in {value}"))
}

struct Batch<'a> {
    label: &'a str,
    accounts: usize,
    keys_per_account: usize,
    balance: Decimal,
    limits: Limits,
}

async fn provision_batch(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    run_id: &str,
    batch: &Batch<'_>,
    tenants: &mut Vec<TenantRecord>,
) -> anyhow::Result<Vec<KeyInfo>> {
    let mut keys = Vec::new();
    for i in 0..batch.accounts {
        let email = format!("loadgen-{run_id}-{}{i}@example.com", batch.label);
        let limits = json!({
            "requests_per_minute": batch.limits.requests_per_minute,
            "tokens_per_minute": batch.limits.tokens_per_minute,
            "max_concurrent": batch.limits.max_concurrent,
        });
        let account = admin_post(
            http,
            base,
            token,
            "accounts",
            json!({"email": email, "limits": limits}),
        )
        .await?;
        let id = string_field(&account, "id", "accounts")?;
        if !batch.balance.is_zero() {
            admin_post(
                http,
                base,
                token,
                &format!("accounts/{id}/credit"),
                json!({"amount_usd": batch.balance.to_string(), "reason": "loadgen"}),
            )
            .await?;
        }
        for k in 0..batch.keys_per_account {
            let path = format!("accounts/{id}/keys");
            let created = admin_post(
                http,
                base,
                token,
                &path,
                json!({"name": format!("loadgen-{}-{k}", batch.label)}),
            )
            .await?;
            keys.push(KeyInfo {
                key: string_field(&created, "key", &path)?,
                account_id: id.clone(),
            });
        }
        tenants.push(TenantRecord {
            account_id: id,
            initial_balance: batch.balance,
        });
    }
    Ok(keys)
}

/// Creates the scenario's accounts, credits and keys. `run_id` makes the emails unique.
pub async fn provision(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    scenario: &Scenario,
    run_id: &str,
) -> anyhow::Result<Provisioned> {
    let mut provisioned = Provisioned::default();
    let tenants = &scenario.tenants;
    provisioned.well_behaved = provision_batch(
        http,
        base,
        token,
        run_id,
        &Batch {
            label: "t",
            accounts: tenants.accounts,
            keys_per_account: tenants.keys_per_account,
            balance: Decimal::from_str(tenants.balance_usd.trim())?,
            limits: tenants.limits,
        },
        &mut provisioned.tenants,
    )
    .await?;
    if let Some(abusers) = scenario.abusers() {
        provisioned.abusers = provision_batch(
            http,
            base,
            token,
            run_id,
            &Batch {
                label: "abuser",
                accounts: abusers.accounts,
                keys_per_account: abusers.keys_per_account,
                balance: Decimal::from_str(abusers.balance_usd.trim())?,
                limits: Limits {
                    requests_per_minute: abusers.requests_per_minute,
                    ..tenants.limits
                },
            },
            &mut provisioned.tenants,
        )
        .await?;
    }
    Ok(provisioned)
}
