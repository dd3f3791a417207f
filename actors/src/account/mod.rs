//! Accounts as the engine sees them: who spends, whether they may, and what they hold.
//!
//! The account actor (`actor`) is the one writer of an account's money while the account is
//! active; the types here are what the rest of the service reads and stores about it.

use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{AccountLimits, Throttle};

pub(crate) mod actor;
pub(crate) mod gate;
mod key_limits;
pub(crate) mod key_spend;
mod uncertain;

/// An account's identity.
pub type AccountId = Uuid;

/// Whether an account may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    /// Suspended by an operator: the balance stays on the books but cannot be spent.
    Suspended,
    /// Deleted by its owner: its balance was forfeited and nothing can be spent or credited
    /// again. Final.
    Deleted,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<AccountStatus> {
        match s {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            "deleted" => Some(AccountStatus::Deleted),
            _ => None,
        }
    }
}

/// What the engine needs to bring an account's actor to life: the stored balance (credits
/// minus flushed debits), its status and its throttles.
#[derive(Debug, Clone)]
pub struct AccountRecord {
    pub id: AccountId,
    pub status: AccountStatus,
    pub balance: Decimal,
    pub limits: AccountLimits,
    /// What each of the account's keys with a spend cap has spent, summed from its usage rows.
    pub key_spent: Vec<KeySpent>,
}

/// A key's spend caps in USD, carried by each of its requests' holds: the HTTP side keeps the
/// key's policy, and the actor needs only the two amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendCaps {
    /// Most the key may spend per UTC day.
    pub daily: Option<Decimal>,
    /// Most the key may spend over its life.
    pub total: Option<Decimal>,
}

impl SpendCaps {
    /// `None` when neither cap is set, so an uncapped key costs the actor nothing.
    pub fn of(daily: Option<Decimal>, total: Option<Decimal>) -> Option<SpendCaps> {
        (daily.is_some() || total.is_some()).then_some(SpendCaps { daily, total })
    }
}

/// What a capped key had spent, as the store summed it from the key's usage rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpent {
    pub key_id: Uuid,
    /// Over the key's life.
    pub total: Decimal,
    /// By requests that started on `day`.
    pub today: Decimal,
    /// The UTC day `today` is for.
    pub day: NaiveDate,
}

/// Which of a key's spend caps refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendCap {
    Daily,
    Total,
}

impl SpendCap {
    /// The policy field that set it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpendCap::Daily => "daily_spend_usd",
            SpendCap::Total => "total_spend_usd",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the account is suspended")]
    Suspended,
    #[error("insufficient balance: the request needs a hold of {required} USD, {available} USD is available")]
    InsufficientBalance {
        required: Decimal,
        available: Decimal,
    },
    /// Found before the body was read, when the hold is not known yet: the balance is at or
    /// below zero, or all of it is held by requests in flight.
    #[error("insufficient balance: nothing is available to spend")]
    NothingAvailable,
    /// The key's spend cap less what the key spent and holds does not cover the hold.
    #[error("the key's {} cap of {limit} USD does not cover a hold of {required} USD ({available} USD is left under it)", cap.as_str())]
    SpendCapReached {
        cap: SpendCap,
        limit: Decimal,
        required: Decimal,
        available: Decimal,
    },
    #[error("{} limit exceeded", which.as_str())]
    Throttled {
        which: Throttle,
        retry_after: Duration,
    },
    /// One of the key's own limits, tighter than the account's, refused the request.
    #[error("{} limit of the key exceeded", which.as_str())]
    KeyThrottled {
        which: Throttle,
        retry_after: Duration,
    },
}

/// The live view of an account, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub id: AccountId,
    pub status: AccountStatus,
    /// Credits minus every settled debit, flushed or not.
    pub balance: Decimal,
    /// Sum of active holds.
    pub held: Decimal,
    pub active_requests: u32,
    pub limits: AccountLimits,
}
