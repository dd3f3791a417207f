//! Money in: the exchange rate, recharge orders and the paths that pay them
//! (docs/PAYMENTS.md, docs/adr/0022-recharge-orders.md).
//!
//! - [`epay`]: the EPay (易支付) protocol: the signed redirect, the notify, the order query.
//! - [`webhook`]: the signed webhook of any other provider.
//!
//! Every path ends in [`credit_order`]: one balance change through the account's actor whose
//! store transaction moves the order from `pending` to `paid`, conditionally, and writes the
//! `recharge` ledger entry and the balance. So an order credits once however many reports of
//! its payment arrive, at once or apart.

pub mod epay;
pub mod webhook;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use tokio_util::sync::CancellationToken;
use tollgate_actors::{
    BalanceChange, ChangeApplied, CreditKind, EngineError, PaymentPath, Settles,
};

use crate::config::PaymentSettings;
use crate::store::{DbError, OrderRow, PgStore, RewardRow};
use tollgate_actors::Engine;

/// Lowercase hex, as both providers' signatures are written.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Fractional digits of an order's USD: the rule customers are shown.
pub const USD_DECIMALS: u32 = 6;

/// The USD `amount_cny` credits at `cny_per_usd`: CNY ÷ rate, rounded half-even to 6
/// decimals. `None` if the rate is not positive.
pub fn usd_for(amount_cny: Decimal, cny_per_usd: Decimal) -> Option<Decimal> {
    if cny_per_usd <= Decimal::ZERO {
        return None;
    }
    amount_cny.checked_div(cny_per_usd).map(|usd| {
        usd.round_dp_with_strategy(USD_DECIMALS, RoundingStrategy::MidpointNearestEven)
            .normalize()
    })
}

/// The rate in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub cny_per_usd: Decimal,
    /// When an operator set it; `None` for the configuration's.
    pub set_at: Option<DateTime<Utc>>,
    /// `admin` (set through the API) or `config`.
    pub source: &'static str,
}

pub async fn current_rate(store: &PgStore, settings: &PaymentSettings) -> Result<Rate, DbError> {
    Ok(match store.current_rate().await? {
        Some(row) => Rate {
            cny_per_usd: row.cny_per_usd.normalize(),
            set_at: Some(row.set_at),
            source: "admin",
        },
        None => Rate {
            cny_per_usd: settings.cny_per_usd.normalize(),
            set_at: None,
            source: "config",
        },
    })
}

/// How a report of an order's payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credited {
    /// Credited now.
    Now,
    /// Paid before. `same` when under the same payer and reference: a repeat of the report
    /// that paid it.
    Before { same: bool },
    /// Not payable by this path: expired, made for another path, or the reference paid
    /// another order. Nothing changed.
    Refused,
}

/// Why a payment could not be credited now: a retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// Credits `order`'s USD to its account through the account's actor, paying the order under
/// `provider` and `provider_ref` in the same transaction.
pub async fn credit_order(
    engine: &Engine,
    store: &PgStore,
    order: &OrderRow,
    path: PaymentPath,
    provider: String,
    provider_ref: String,
    reason: Option<String>,
) -> Result<Credited, CreditError> {
    // A deleted account takes no credit (its actor and Postgres both refuse one): the money
    // is the operator's to return, so the order is held for review, and the provider is
    // told it was handled rather than retrying for ever.
    let deleted = store
        .account(order.account_id)
        .await?
        .is_none_or(|account| account.status == tollgate_actors::AccountStatus::Deleted);
    if deleted {
        flag(store, order, "paid for an account that was deleted", None).await?;
        return Ok(Credited::Refused);
    }
    let change = BalanceChange {
        id: order.id,
        account_id: order.account_id,
        kind: CreditKind::Recharge,
        amount: order.amount_usd,
        reason: format!(
            "recharge of {} CNY at {} CNY per USD",
            epay::money(order.amount_cny),
            order.cny_per_usd.normalize()
        ),
        idempotency: None,
        settles: Some(Settles::RechargeOrder {
            path,
            provider: provider.clone(),
            provider_ref: provider_ref.clone(),
            reason,
        }),
    };
    let changed = match engine.apply_change(change.clone()).await {
        Ok(changed) => changed,
        // The store may have committed and its answer been lost: the actor then remembers
        // the change unconfirmed, and a second try finds it paid and adds what it had not.
        // A retry of the report would do the same, but the re-query skips paid orders.
        Err(first) => {
            tracing::warn!(order_id = %order.id, error = %first, "crediting a recharge failed; trying once more");
            tokio::time::sleep(RETRY_AFTER).await;
            engine.apply_change(change).await?
        }
    };
    Ok(match changed.applied {
        ChangeApplied::Applied => {
            tracing::info!(
                order_id = %order.id,
                account_id = %order.account_id,
                amount_usd = %order.amount_usd,
                provider = %provider,
                "recharge order paid and credited"
            );
            metrics::counter!("tollgate_recharges_credited_total", "provider" => provider_label(&provider))
                .increment(1);
            // The inviter's reward, earned in the recharge's transaction, is credited now;
            // should this fail, the background job credits it.
            match store.reward_of_order(order.id).await {
                Ok(Some(reward)) if reward.status == "pending" => {
                    pay_reward(engine, &reward).await;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(order_id = %order.id, %error, "reading a recharge's referral reward failed; the background job credits it");
                }
            }
            Credited::Now
        }
        ChangeApplied::AlreadyApplied { .. } => {
            let paid = store.order(order.id).await?;
            // A confirmation by hand is idempotent by its reference alone, both ways: an
            // operator confirming what a provider reported under that reference, or a
            // provider reporting what an operator confirmed under it, repeats it.
            let same = paid.is_some_and(|paid| {
                paid.provider_ref.as_deref() == Some(provider_ref.as_str())
                    && (path == PaymentPath::Manual
                        || paid.provider.as_deref() == Some("manual")
                        || paid.provider.as_deref() == Some(provider.as_str()))
            });
            Credited::Before { same }
        }
        ChangeApplied::Refused => Credited::Refused,
    })
}

/// Credits a pending referral reward to its inviter through the inviter's actor; whether it
/// was credited now. Failures are logged: the background job tries again.
pub async fn pay_reward(engine: &Engine, reward: &RewardRow) -> bool {
    let change = BalanceChange {
        id: reward.id,
        account_id: reward.inviter_id,
        kind: CreditKind::ReferralReward,
        amount: reward.amount_usd,
        reason: "referral reward: an invitee's first recharge".into(),
        idempotency: None,
        settles: Some(Settles::ReferralReward),
    };
    match engine.apply_change(change).await {
        Ok(changed) => match changed.applied {
            ChangeApplied::Applied => {
                tracing::info!(reward_id = %reward.id, inviter_id = %reward.inviter_id, amount_usd = %reward.amount_usd, "referral reward credited");
                true
            }
            // Credited before (the actor settles an unconfirmed write of its own with it).
            ChangeApplied::AlreadyApplied { .. } => true,
            ChangeApplied::Refused => false,
        },
        Err(error) => {
            tracing::warn!(reward_id = %reward.id, %error, "crediting a referral reward failed; the background job retries");
            false
        }
    }
}

/// The provider's kind, for a metric label of bounded cardinality.
fn provider_label(provider: &str) -> &'static str {
    match provider {
        "epay" => "epay",
        "manual" => "manual",
        _ => "webhook",
    }
}

/// How long a failed credit waits before its one retry.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Pending EPay orders asked about per round of [`requery_loop`].
const REQUERY_BATCH: i64 = 100;
/// How often pending orders past their expiry are expired when EPay is off.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// The background job that asks the EPay gateway about pending orders, so that a lost notify
/// still credits, and then expires pending orders past their time. Runs until `stop`.
pub async fn requery_loop(
    engine: Engine,
    store: PgStore,
    settings: PaymentSettings,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let every = match settings.epay.requery_secs {
        0 => EXPIRY_INTERVAL,
        secs => Duration::from_secs(secs),
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if settings.epay_enabled() && settings.epay.requery_secs > 0 {
            requery_once(&engine, &store, &settings, &client).await;
        }
        // Rewards a crash (or a failed credit) left earned and not credited; those of a
        // deleted inviter can never be, and are cancelled.
        if let Err(error) = store.cancel_rewards_of_deleted_inviters().await {
            tracing::warn!(%error, "cancelling the rewards of deleted inviters failed");
        }
        match store.pending_rewards(REQUERY_BATCH).await {
            Ok(rewards) => {
                for reward in rewards {
                    pay_reward(&engine, &reward).await;
                }
            }
            Err(error) => tracing::warn!(%error, "reading pending referral rewards failed"),
        }
        match store.expire_orders().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "recharge orders expired unpaid"),
            Err(error) => tracing::warn!(%error, "expiring recharge orders failed"),
        }
    }
}

/// One round of the re-query: how many orders it credited.
pub async fn requery_once(
    engine: &Engine,
    store: &PgStore,
    settings: &PaymentSettings,
    client: &reqwest::Client,
) -> usize {
    let orders = match store
        .pending_epay_orders(
            i64::try_from(settings.epay.requery_min_age_secs).unwrap_or(i64::MAX),
            REQUERY_BATCH,
        )
        .await
    {
        Ok(orders) => orders,
        Err(error) => {
            tracing::warn!(%error, "reading pending recharge orders failed");
            return 0;
        }
    };
    let mut credited = 0;
    for order in orders {
        let queried = match epay::query_order(client, &settings.epay, order.id).await {
            Ok(Some(queried)) => queried,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(order_id = %order.id, %error, "asking the EPay gateway about an order failed");
                continue;
            }
        };
        if !queried.paid || queried.trade_no.is_empty() {
            continue;
        }
        if queried.money != Some(order.amount_cny) {
            flag(
                store,
                &order,
                "the gateway reports a different amount paid",
                queried.money,
            )
            .await
            .ok();
            continue;
        }
        match credit_order(
            engine,
            store,
            &order,
            PaymentPath::Epay,
            "epay".to_owned(),
            queried.trade_no,
            None,
        )
        .await
        {
            Ok(Credited::Now) => {
                credited += 1;
                tracing::info!(order_id = %order.id, "a recharge whose notify never came was credited by the re-query");
            }
            Ok(Credited::Before { .. }) => {}
            Ok(Credited::Refused) => {
                flag(store, &order, "paid at the gateway, but the order cannot be paid (expired, or its reference paid another order)", queried.money).await.ok();
            }
            Err(error) => {
                tracing::warn!(order_id = %order.id, %error, "crediting a re-queried order failed; the next round retries");
            }
        }
    }
    credited
}

/// Flags `order` for an operator, logging why. An error means the flag was not written: the
/// provider is to be told to retry.
pub async fn flag(
    store: &PgStore,
    order: &OrderRow,
    reason: &str,
    reported_cny: Option<Decimal>,
) -> Result<(), DbError> {
    tracing::warn!(
        order_id = %order.id,
        account_id = %order.account_id,
        amount_cny = %order.amount_cny,
        reported_cny = ?reported_cny,
        reason,
        "a recharge order needs an operator's review"
    );
    metrics::counter!("tollgate_recharges_flagged_total").increment(1);
    store
        .flag_order(order.id, reason, reported_cny)
        .await
        .inspect_err(|error| {
            tracing::error!(order_id = %order.id, %error, "flagging a recharge order failed");
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn usd_is_cny_over_the_rate_rounded_half_even_to_six_decimals() {
        assert_eq!(usd_for(dec!(72), dec!(7.2)), Some(dec!(10)));
        assert_eq!(usd_for(dec!(1), dec!(3)), Some(dec!(0.333333)));
        assert_eq!(usd_for(dec!(2), dec!(3)), Some(dec!(0.666667)));
        // Exactly half a unit of the 6th decimal: to the even neighbour.
        assert_eq!(usd_for(dec!(0.01), dec!(0.0016)), Some(dec!(6.25)));
        assert_eq!(usd_for(dec!(0.0000025), dec!(1)), Some(dec!(0.000002)));
        assert_eq!(usd_for(dec!(0.0000035), dec!(1)), Some(dec!(0.000004)));
        assert_eq!(
            usd_for(dec!(1000000), dec!(7.123456)),
            Some(dec!(140381.298067))
        );
        assert_eq!(usd_for(dec!(1), dec!(0)), None);
    }
}
