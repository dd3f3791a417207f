//! Reconciliation: after a run, compare per account what the clients were served, priced by
//! loadgen's own price table and arithmetic ([`crate::prices`]), with tollgate's books in
//! Postgres. The comparison is exact, to the last decimal: any difference is a billing bug,
//! in tollgate's prices, its arithmetic or its ledger.
//!
//! What each side is:
//! - **expected**: for every request tollgate answered with 200, the usage the client read
//!   from the response (or, for a client that hung up on purpose, the usage the simulated
//!   upstream reports for the whole response, which tollgate drains), priced at the table's
//!   prices, which must be the ones in force during the run. A stream whose final usage never
//!   came (an error event, a cut) is expected at one output token per byte of the content
//!   deltas tollgate relayed, up to `max_tokens`, as tollgate estimates it;
//! - **billed**: the sum of the account's usage rows; **ledger**: the sum of its `usage`
//!   ledger entries; **stored balance**: `accounts.balance`; **live balance**: the admin API's
//!   view, served by the account's actor.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::prices::PriceTable;
use crate::usage::Usage;

/// How long to wait for every hold to settle and for the ledger to catch up.
const SETTLE_WAIT: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// One request tollgate billed, as the client saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub account_id: String,
    pub model: String,
    pub usage: Usage,
}

/// A provisioned account and what it was credited before the run.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub account_id: String,
    pub initial_balance: Decimal,
}

/// tollgate's admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    pub base_url: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountReconciliation {
    pub account_id: String,
    pub requests: u64,
    pub usage_rows: i64,
    pub expected_cost: Decimal,
    pub billed_cost: Decimal,
    /// Sum of the account's `usage` ledger entries (negative: debits).
    pub ledger_usage: Decimal,
    pub expected_balance: Decimal,
    pub stored_balance: Decimal,
    pub live_balance: Decimal,
    pub negative: bool,
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    /// Every account matched on every measure.
    pub exact: bool,
    pub accounts: Vec<AccountReconciliation>,
}

impl Reconciliation {
    /// Console lines: a verdict, then every account that did not match (or all, if few).
    pub fn render(&self) -> String {
        let total_expected: Decimal = self.accounts.iter().map(|a| a.expected_cost).sum();
        let total_billed: Decimal = self.accounts.iter().map(|a| a.billed_cost).sum();
        let requests: u64 = self.accounts.iter().map(|a| a.requests).sum();
        let mut out = format!(
            "reconciliation: {} — {} accounts, {} billed requests, expected {} USD, billed {} USD\n",
            if self.exact { "EXACT" } else { "MISMATCH" },
            self.accounts.len(),
            requests,
            total_expected.normalize(),
            total_billed.normalize(),
        );
        let show_all = self.accounts.len() <= 5;
        for account in &self.accounts {
            if show_all || !account.exact {
                out.push_str(&format!(
                    "  {} {}: requests {} rows {} | expected {} billed {} ledger {} | balance expected {} stored {} live {}{}\n",
                    if account.exact { "ok  " } else { "DIFF" },
                    account.account_id,
                    account.requests,
                    account.usage_rows,
                    account.expected_cost.normalize(),
                    account.billed_cost.normalize(),
                    (-account.ledger_usage).normalize(),
                    account.expected_balance.normalize(),
                    account.stored_balance.normalize(),
                    account.live_balance.normalize(),
                    if account.negative { " NEGATIVE" } else { "" },
                ));
            }
        }
        out
    }
}

/// The exact expected cost per account of `requests`, and how many requests it billed.
pub fn expected_costs(
    prices: &PriceTable,
    requests: &[RequestRecord],
) -> anyhow::Result<HashMap<String, (Decimal, u64)>> {
    let mut per_account: HashMap<String, (Decimal, u64)> = HashMap::new();
    for request in requests {
        let cost = prices.cost(&request.model, &request.usage)?;
        let entry = per_account
            .entry(request.account_id.clone())
            .or_insert((Decimal::ZERO, 0));
        entry.0 = entry
            .0
            .checked_add(cost)
            .context("the expected cost of an account overflows")?;
        entry.1 += 1;
    }
    Ok(per_account)
}

async fn account_view(
    http: &reqwest::Client,
    admin: &Admin,
    account_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let response = http
        .get(format!("{}/admin/v1/accounts/{account_id}", admin.base_url))
        .bearer_auth(&admin.token)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("GET account {account_id}: HTTP {}", response.status());
    }
    Ok(response.json().await?)
}

fn decimal_field(view: &serde_json::Value, field: &str) -> anyhow::Result<Decimal> {
    view.get(field)
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("account view has no {field}"))?
        .parse()
        .with_context(|| format!("account view's {field} is not a decimal"))
}

/// Waits until no account has a hold left, so every request has settled.
async fn wait_settled(
    http: &reqwest::Client,
    admin: &Admin,
    tenants: &[TenantRecord],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    for tenant in tenants {
        loop {
            let view = account_view(http, admin, &tenant.account_id).await?;
            let active = view
                .get("active_requests")
                .and_then(serde_json::Value::as_i64);
            if decimal_field(&view, "held")?.is_zero() && active == Some(0) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "account {} still holds money after {SETTLE_WAIT:?}",
                    tenant.account_id
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    Ok(())
}

/// Asks tollgate to flush until everything settled before the call is written.
async fn flush(http: &reqwest::Client, admin: &Admin) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let response = http
            .post(format!("{}/admin/v1/flush", admin.base_url))
            .bearer_auth(&admin.token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("POST /admin/v1/flush: HTTP {}", response.status());
        }
        let body: serde_json::Value = response.json().await?;
        if body.get("flushed").and_then(serde_json::Value::as_bool) == Some(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("tollgate's ledger did not flush within {SETTLE_WAIT:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits for the run to settle and flush, then compares every tenant's books.
pub async fn reconcile(
    http: &reqwest::Client,
    admin: &Admin,
    database_url: &str,
    tenants: &[TenantRecord],
    requests: &[RequestRecord],
    prices: &PriceTable,
) -> anyhow::Result<Reconciliation> {
    let expected = expected_costs(prices, requests)?;
    wait_settled(http, admin, tenants).await?;
    flush(http, admin).await?;

    let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to tollgate's database for reconciliation")?;
    let driver = tokio::spawn(connection);
    let mut accounts = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let id = Uuid::parse_str(&tenant.account_id).context("account id is not a UUID")?;
        let usage = db
            .query_one(
                "SELECT coalesce(sum(cost), 0), count(*) FROM usage WHERE account_id = $1",
                &[&id],
            )
            .await?;
        let ledger = db
            .query_one(
                "SELECT coalesce(sum(amount), 0) FROM ledger WHERE account_id = $1 AND kind = 'usage'",
                &[&id],
            )
            .await?;
        let stored = db
            .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
            .await?;
        let live = decimal_field(
            &account_view(http, admin, &tenant.account_id).await?,
            "balance",
        )?;
        let (expected_cost, requests) = expected
            .get(&tenant.account_id)
            .copied()
            .unwrap_or((Decimal::ZERO, 0));
        let billed_cost: Decimal = usage.get(0);
        let usage_rows: i64 = usage.get(1);
        let ledger_usage: Decimal = ledger.get(0);
        let stored_balance: Decimal = stored.get(0);
        let expected_balance = tenant.initial_balance - expected_cost;
        let exact = billed_cost == expected_cost
            && ledger_usage == -billed_cost
            && stored_balance == expected_balance
            && live == stored_balance
            && u64::try_from(usage_rows).ok() == Some(requests);
        accounts.push(AccountReconciliation {
            account_id: tenant.account_id.clone(),
            requests,
            usage_rows,
            expected_cost,
            billed_cost,
            ledger_usage,
            expected_balance,
            stored_balance,
            live_balance: live,
            negative: stored_balance < Decimal::ZERO,
            exact,
        });
    }
    drop(db);
    let _ = driver.await;
    let unknown: Vec<_> = expected
        .keys()
        .filter(|id| !tenants.iter().any(|t| &&t.account_id == id))
        .collect();
    if !unknown.is_empty() {
        bail!("requests were recorded for accounts that are not tenants: {unknown:?}");
    }
    Ok(Reconciliation {
        exact: accounts.iter().all(|a| a.exact),
        accounts,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(account: &str, model: &str, input: u64, output: u64) -> RequestRecord {
        RequestRecord {
            account_id: account.into(),
            model: model.into(),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn expected_costs_are_summed_per_account_at_the_table_prices() {
        let prices = PriceTable::shipped().unwrap();
        let costs = expected_costs(
            &prices,
            &[
                record("a", "claude-opus-5-5", 1000, 100),
                record("a", "claude-opus-5-5", 0, 10),
                record("b", "claude-haiku-5-5", 2000, 0),
            ],
        )
        .unwrap();
        // opus-5-5: 1000*4 + 110*20 = 6200 per million; haiku-5-5: 2000*0.10 = 200 per million.
        assert_eq!(costs["a"], (Decimal::new(62, 4), 2));
        assert_eq!(costs["b"], (Decimal::new(2, 4), 1));
    }

    #[test]
    fn an_unknown_model_is_an_error_not_a_zero() {
        let prices = PriceTable::shipped().unwrap();
        assert!(expected_costs(&prices, &[record("a", "claude-nope", 1, 1)]).is_err());
    }
}
