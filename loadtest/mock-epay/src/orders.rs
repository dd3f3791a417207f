//! The gateway's orders, kept in memory, and the amounts they carry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created by `submit.php`, waiting for the payer.
    Unpaid,
    /// Paid: `api.php` reports status 1 and the notify was scheduled.
    Paid,
    /// The payer cancelled; never paid.
    Cancelled,
}

/// One order, as `GET /orders` and [`crate::MockEpay::orders`] show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The gateway's id: the creation time (`%Y%m%d%H%M%S`) followed by a counter.
    pub trade_no: String,
    /// The merchant's id, unique per `pid`.
    pub out_trade_no: String,
    pub pid: String,
    /// `alipay` or `wxpay`.
    #[serde(rename = "type")]
    pub pay_type: String,
    pub name: String,
    /// The amount exactly as the merchant submitted it (for example `"10.00"`).
    pub money: String,
    pub notify_url: String,
    pub return_url: String,
    pub status: OrderStatus,
    /// Creation time, `YYYY-MM-DD HH:MM:SS` local time.
    pub addtime: String,
    /// Payment time, same format; `None` until paid.
    pub endtime: Option<String>,
    /// Notify requests sent for this order so far (all copies and retries together).
    pub notify_attempts: u32,
    /// Whether one of them was acknowledged with `success`.
    pub notified_ok: bool,
    /// Why the last unacknowledged attempt failed.
    pub last_notify_error: Option<String>,
}

/// What `submit.php` asks for, once checked.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub out_trade_no: String,
    pub pid: String,
    pub pay_type: String,
    pub name: String,
    pub money: String,
    pub cents: u64,
    pub notify_url: String,
    pub return_url: String,
}

#[derive(Debug)]
pub(crate) enum PayError {
    NotFound,
    Cancelled,
}

#[derive(Default)]
struct Inner {
    by_trade_no: HashMap<String, Order>,
    /// (pid, out_trade_no) to trade_no.
    by_out_trade_no: HashMap<(String, String), String>,
    /// trade_no in creation order.
    created: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Orders {
    inner: Mutex<Inner>,
    counter: AtomicU64,
}

impl Orders {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: every update is one assignment.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The order of `new.pid` and `new.out_trade_no`: created, or the existing one when the
    /// merchant submits the same order again. Resubmitting with another amount is refused.
    pub fn create_or_reuse(&self, new: NewOrder) -> Result<Order, String> {
        let mut inner = self.lock();
        let key = (new.pid.clone(), new.out_trade_no.clone());
        if let Some(existing) = inner
            .by_out_trade_no
            .get(&key)
            .and_then(|trade_no| inner.by_trade_no.get(trade_no))
        {
            if parse_cents(&existing.money) != Some(new.cents) {
                return Err("out_trade_no was already submitted with a different amount".to_owned());
            }
            return Ok(existing.clone());
        }
        let now = chrono::Local::now();
        let serial = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let trade_no = format!("{}{serial:04}", now.format("%Y%m%d%H%M%S"));
        let order = Order {
            trade_no: trade_no.clone(),
            out_trade_no: new.out_trade_no,
            pid: new.pid,
            pay_type: new.pay_type,
            name: new.name,
            money: new.money,
            notify_url: new.notify_url,
            return_url: new.return_url,
            status: OrderStatus::Unpaid,
            addtime: timestamp(now),
            endtime: None,
            notify_attempts: 0,
            notified_ok: false,
            last_notify_error: None,
        };
        inner.by_out_trade_no.insert(key, trade_no.clone());
        inner.by_trade_no.insert(trade_no.clone(), order.clone());
        inner.created.push(trade_no);
        Ok(order)
    }

    pub fn get(&self, trade_no: &str) -> Option<Order> {
        self.lock().by_trade_no.get(trade_no).cloned()
    }

    pub fn by_out_trade_no(&self, pid: &str, out_trade_no: &str) -> Option<Order> {
        let inner = self.lock();
        inner
            .by_out_trade_no
            .get(&(pid.to_owned(), out_trade_no.to_owned()))
            .and_then(|trade_no| inner.by_trade_no.get(trade_no))
            .cloned()
    }

    pub fn list(&self) -> Vec<Order> {
        let inner = self.lock();
        inner
            .created
            .iter()
            .filter_map(|trade_no| inner.by_trade_no.get(trade_no))
            .cloned()
            .collect()
    }

    /// Marks the order paid; the flag says whether it was unpaid until now.
    pub fn pay(&self, trade_no: &str) -> Result<(Order, bool), PayError> {
        let mut inner = self.lock();
        let order = inner
            .by_trade_no
            .get_mut(trade_no)
            .ok_or(PayError::NotFound)?;
        match order.status {
            OrderStatus::Paid => Ok((order.clone(), false)),
            OrderStatus::Cancelled => Err(PayError::Cancelled),
            OrderStatus::Unpaid => {
                order.status = OrderStatus::Paid;
                order.endtime = Some(timestamp(chrono::Local::now()));
                Ok((order.clone(), true))
            }
        }
    }

    /// Marks an unpaid order cancelled; a paid or cancelled one stays as it is.
    pub fn cancel(&self, trade_no: &str) -> Option<Order> {
        let mut inner = self.lock();
        let order = inner.by_trade_no.get_mut(trade_no)?;
        if order.status == OrderStatus::Unpaid {
            order.status = OrderStatus::Cancelled;
        }
        Some(order.clone())
    }

    /// Records one notify attempt and its outcome.
    pub fn record_attempt(&self, trade_no: &str, outcome: Result<(), String>) {
        let mut inner = self.lock();
        if let Some(order) = inner.by_trade_no.get_mut(trade_no) {
            order.notify_attempts = order.notify_attempts.saturating_add(1);
            match outcome {
                Ok(()) => order.notified_ok = true,
                Err(error) => order.last_notify_error = Some(error),
            }
        }
    }
}

fn timestamp(at: chrono::DateTime<chrono::Local>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A positive amount with at most two decimals (`10`, `10.5`, `10.00`) in cents; `None` for
/// anything else (signs, exponents, `10.`, `.5`, zero, overflow).
pub(crate) fn parse_cents(money: &str) -> Option<u64> {
    let (units, fraction) = match money.split_once('.') {
        Some((_, "")) => return None,
        Some((units, fraction)) => (units, fraction),
        None => (money, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if units.is_empty() || !digits(units) || fraction.len() > 2 || !digits(fraction) {
        return None;
    }
    let units: u64 = units.parse().ok()?;
    let fraction: u64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<u64>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    let cents = units.checked_mul(100)?.checked_add(fraction)?;
    (cents > 0).then_some(cents)
}

/// Cents as `units.cc`.
pub(crate) fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_with_at_most_two_decimals() {
        assert_eq!(parse_cents("10.00"), Some(1000));
        assert_eq!(parse_cents("10.5"), Some(1050));
        assert_eq!(parse_cents("7"), Some(700));
        assert_eq!(parse_cents("0.01"), Some(1));
        for bad in [
            "",
            "0",
            "0.00",
            "-1",
            "+1",
            "1.234",
            "1.",
            ".5",
            "1e3",
            " 1",
            "1,00",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad:?}");
        }
        assert_eq!(format_cents(1001), "10.01");
        assert_eq!(format_cents(5), "0.05");
    }
}
