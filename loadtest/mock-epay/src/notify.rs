//! The asynchronous notify: the gateway telling the merchant's `notify_url` that an order
//! was paid, retried until the merchant answers `success`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Knobs, NotifyMethod, Tamper};
use crate::orders::{format_cents, parse_cents, Order};
use crate::sign::{encode_pairs, sign};
use crate::state::Shared;

/// Signed result parameters of a paid order, in the order they are sent: `pid, trade_no,
/// out_trade_no, type, name, money, trade_status, sign, sign_type`. `tamper` corrupts them as
/// [`Tamper`] describes.
pub(crate) fn result_params(order: &Order, key: &str, tamper: Tamper) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("pid".into(), order.pid.clone()),
        ("trade_no".into(), order.trade_no.clone()),
        ("out_trade_no".into(), order.out_trade_no.clone()),
        ("type".into(), order.pay_type.clone()),
        ("name".into(), order.name.clone()),
        ("money".into(), order.money.clone()),
        ("trade_status".into(), "TRADE_SUCCESS".into()),
    ];
    match tamper {
        Tamper::None | Tamper::Sign => {}
        Tamper::Money => set(&mut params, "money", tampered_money(&order.money)),
        Tamper::Pid => set(&mut params, "pid", other_pid(&order.pid)),
        Tamper::Status => set(&mut params, "trade_status", "TRADE_CLOSED".into()),
        Tamper::OutTradeNo => set(
            &mut params,
            "out_trade_no",
            format!("FORGED{:016x}", rand::random::<u64>()),
        ),
    }
    let mut signature = sign(params.iter().map(|(k, v)| (k, v)), key);
    if tamper == Tamper::Sign {
        if let Some(last) = signature.pop() {
            signature.push(if last == '0' { '1' } else { '0' });
        }
    }
    params.push(("sign".into(), signature));
    params.push(("sign_type".into(), "MD5".into()));
    params
}

/// The amount plus 0.01, as `units.cc`.
pub(crate) fn tampered_money(money: &str) -> String {
    match parse_cents(money).and_then(|cents| cents.checked_add(1)) {
        Some(cents) => format_cents(cents),
        // Orders only hold valid amounts; keep a differing value all the same.
        None => format!("{money}1"),
    }
}

fn other_pid(pid: &str) -> String {
    match pid.parse::<u64>() {
        Ok(n) => n.wrapping_add(1).to_string(),
        Err(_) => format!("{pid}9"),
    }
}

fn set(params: &mut [(String, String)], name: &str, value: String) {
    if let Some(slot) = params.iter_mut().find(|(k, _)| k == name) {
        slot.1 = value;
    }
}

/// `url` with `query` appended (before any `#fragment`).
pub(crate) fn append_query(url: &str, query: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    match fragment {
        Some(fragment) => format!("{base}{separator}{query}#{fragment}"),
        None => format!("{base}{separator}{query}"),
    }
}

/// Schedules the notify of a just-paid order under `knobs`, on the current (actix) runtime.
pub(crate) fn schedule(shared: Arc<Shared>, order: Order, knobs: Knobs) {
    if knobs.drop_notify {
        tracing::info!(trade_no = %order.trade_no, "notify dropped (drop_notify)");
        return;
    }
    let params = Arc::new(result_params(&order, &shared.key, knobs.tamper));
    actix_rt::spawn(async move {
        if knobs.notify_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(knobs.notify_delay_ms)).await;
        }
        let copies = knobs.duplicate_notify.max(1);
        let mut sends = Vec::new();
        for _ in 0..copies {
            let shared = Arc::clone(&shared);
            let params = Arc::clone(&params);
            let order = order.clone();
            let knobs = knobs.clone();
            sends.push(actix_rt::spawn(async move {
                deliver(&shared, &order, &params, &knobs).await
            }));
        }
        for send in sends {
            let _ = send.await;
        }
    });
}

/// Sends one notify with its retries: whether the merchant acknowledged it, and after how
/// many attempts. Every attempt is recorded on the order.
pub(crate) async fn deliver(
    shared: &Shared,
    order: &Order,
    params: &[(String, String)],
    knobs: &Knobs,
) -> (bool, u32) {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let encoded = encode_pairs(&pairs);
    let attempts = knobs.notify_attempts.max(1);
    for attempt in 1..=attempts {
        let outcome = send_once(shared, &order.notify_url, knobs.notify_method, &encoded).await;
        match &outcome {
            Ok(()) => tracing::info!(trade_no = %order.trade_no, attempt, "notify acknowledged"),
            Err(error) => {
                tracing::info!(trade_no = %order.trade_no, attempt, %error, "notify not acknowledged")
            }
        }
        let acknowledged = outcome.is_ok();
        shared.orders.record_attempt(&order.trade_no, outcome);
        if acknowledged {
            return (true, attempt);
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(knobs.notify_retry_ms)).await;
        }
    }
    (false, attempts)
}

async fn send_once(
    shared: &Shared,
    url: &str,
    method: NotifyMethod,
    encoded: &str,
) -> Result<(), String> {
    let request = match method {
        NotifyMethod::Get => shared.http.get(append_query(url, encoded)),
        NotifyMethod::Post => shared
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(encoded.to_owned()),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    if !status.is_success() {
        return Err(format!("answered status {}", status.as_u16()));
    }
    if body.trim() != "success" {
        let shown: String = body.trim().chars().take(64).collect();
        return Err(format!("answered {shown:?}, not \"success\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_appended_before_the_fragment() {
        assert_eq!(append_query("http://m/r", "a=1"), "http://m/r?a=1");
        assert_eq!(append_query("http://m/r?x=2", "a=1"), "http://m/r?x=2&a=1");
        assert_eq!(append_query("http://m/r?", "a=1"), "http://m/r?a=1");
        assert_eq!(append_query("http://m/r#top", "a=1"), "http://m/r?a=1#top");
    }

    #[test]
    fn tampered_money_adds_a_cent() {
        assert_eq!(tampered_money("10.00"), "10.01");
        assert_eq!(tampered_money("9.99"), "10.00");
        assert_eq!(tampered_money("3"), "3.01");
    }
}
