//! EPay (易支付), as most Chinese payment aggregators speak it (docs/PAYMENTS.md): the signed
//! `submit.php` redirect, the notify's checks, and the merchant's order query.
//!
//! The signature is the lowercase hex MD5 of the non-empty parameters other than `sign` and
//! `sign_type`, sorted by name, joined as `k=v&k=v`, with the merchant key appended. MD5 is
//! the protocol's, not a choice: what it protects is a shared-secret MAC, and the comparison
//! is in constant time.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use rust_decimal::Decimal;
use subtle::ConstantTimeEq;

use crate::config::EpaySettings;

/// The status EPay gives a paid trade.
pub const TRADE_SUCCESS: &str = "TRADE_SUCCESS";
/// What the merchant answers a notify it has handled: the gateway retries until it sees it.
pub const ACKNOWLEDGED: &str = "success";
/// What it answers a notify it could not handle now (the gateway retries) or will never
/// accept (a forgery).
pub const NOT_ACKNOWLEDGED: &str = "fail";

/// The signature of `params` under `key`.
pub fn sign<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>, key: &str) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(name, value)| !value.is_empty() && *name != "sign" && *name != "sign_type")
        .collect();
    let mut hasher = Md5::new();
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            hasher.update(b"&");
        }
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
    }
    hasher.update(key.as_bytes());
    super::hex(&hasher.finalize())
}

/// Whether `given` is the signature of `params` under `key`, compared in constant time
/// (case-insensitively: some gateways send upper case).
pub fn verify(params: &BTreeMap<String, String>, key: &str, given: &str) -> bool {
    let expected = sign(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), key);
    let given = given.to_ascii_lowercase();
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// An amount as EPay writes it: yuan with exactly two decimals.
pub fn money(amount_cny: Decimal) -> String {
    let mut rounded = amount_cny.round_dp(2);
    rounded.rescale(2);
    rounded.to_string()
}

/// The merchant's out_trade_no for an order: its id's 32 hex digits (EPay gateways take
/// letters and digits, up to 64).
pub fn trade_no_of(order_id: uuid::Uuid) -> String {
    order_id.simple().to_string()
}

/// The order an out_trade_no names, if it is one of ours.
pub fn order_of(out_trade_no: &str) -> Option<uuid::Uuid> {
    if out_trade_no.len() != 32 {
        return None;
    }
    uuid::Uuid::try_parse(out_trade_no).ok()
}

/// What an order's payment page needs.
pub struct PayRequest<'a> {
    pub order_id: uuid::Uuid,
    /// `alipay` or `wxpay`.
    pub channel: &'a str,
    pub amount_cny: Decimal,
    pub notify_url: &'a str,
    pub return_url: &'a str,
}

/// `<gateway_url>/submit.php?<the signed parameters>`.
pub fn pay_url(settings: &EpaySettings, request: &PayRequest<'_>) -> String {
    let out_trade_no = trade_no_of(request.order_id);
    let money = money(request.amount_cny);
    let mut params: Vec<(&str, &str)> = vec![
        ("pid", settings.pid.as_str()),
        ("type", request.channel),
        ("out_trade_no", &out_trade_no),
        ("notify_url", request.notify_url),
        ("return_url", request.return_url),
        ("name", settings.product_name.as_str()),
        ("money", &money),
    ];
    let signature = sign(params.iter().copied(), &settings.key);
    params.push(("sign", &signature));
    params.push(("sign_type", "MD5"));
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!(
        "{}/submit.php?{query}",
        settings.gateway_url.trim_end_matches('/')
    )
}

/// Why a notify is not credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not signed by the merchant key (or no signature): not from the gateway. Answered
    /// `fail`, changes nothing.
    Unsigned,
    /// Signed, but for another merchant id.
    WrongMerchant,
    /// A field is missing or unreadable.
    Malformed(&'static str),
}

/// A verified notify: signed by the merchant key, for this merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub out_trade_no: String,
    /// The gateway's own number for the trade: the payment's provider reference.
    pub trade_no: String,
    pub trade_status: String,
    /// The amount paid, as a decimal.
    pub money: Decimal,
}

/// Checks a notify's signature and merchant, and reads its fields. The amount and the
/// status are the caller's to judge against the order.
pub fn verify_notify(
    params: &BTreeMap<String, String>,
    settings: &EpaySettings,
) -> Result<Notify, Rejected> {
    let given = params.get("sign").ok_or(Rejected::Unsigned)?;
    if let Some(kind) = params.get("sign_type") {
        if !kind.eq_ignore_ascii_case("MD5") {
            return Err(Rejected::Unsigned);
        }
    }
    if settings.key.is_empty() || !verify(params, &settings.key, given) {
        return Err(Rejected::Unsigned);
    }
    if params.get("pid").map(String::as_str) != Some(settings.pid.as_str()) {
        return Err(Rejected::WrongMerchant);
    }
    let field = |name: &'static str| {
        params
            .get(name)
            .filter(|value| !value.is_empty())
            .cloned()
            .ok_or(Rejected::Malformed(name))
    };
    let money = field("money")?;
    let money = plain_decimal(&money).ok_or(Rejected::Malformed("money"))?;
    Ok(Notify {
        out_trade_no: field("out_trade_no")?,
        trade_no: field("trade_no")?,
        trade_status: field("trade_status")?,
        money,
    })
}

/// A decimal in plain notation (digits and one point), as EPay writes money.
pub fn plain_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    text.parse().ok()
}

/// What the gateway says of an order (`api.php?act=order`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queried {
    pub paid: bool,
    pub trade_no: String,
    pub money: Option<Decimal>,
}

/// Asks the gateway about an order. The merchant key travels in the query string, as the
/// protocol has it, so the URL is never logged.
pub async fn query_order(
    client: &reqwest::Client,
    settings: &EpaySettings,
    order_id: uuid::Uuid,
) -> Result<Option<Queried>, String> {
    let url = format!("{}/api.php", settings.gateway_url.trim_end_matches('/'));
    let out_trade_no = trade_no_of(order_id);
    let answer = client
        .get(url)
        .query(&[
            ("act", "order"),
            ("pid", settings.pid.as_str()),
            ("key", settings.key.as_str()),
            ("out_trade_no", out_trade_no.as_str()),
        ])
        .send()
        .await
        .map_err(|error| format!("asking the gateway: {}", error.without_url()))?;
    if !answer.status().is_success() {
        return Err(format!("the gateway answered {}", answer.status()));
    }
    let body: serde_json::Value = answer
        .json()
        .await
        .map_err(|error| format!("the gateway's answer: {}", error.without_url()))?;
    // code 1: found; anything else: not found (or refused), which credits nothing.
    if body.get("code").and_then(number_or_text) != Some(1) {
        return Ok(None);
    }
    // An answer about another order, or of another merchant, is no answer about this one.
    let text = |name: &str| body.get(name).and_then(text_of);
    if text("out_trade_no").is_some_and(|asked| asked != out_trade_no)
        || text("pid").is_some_and(|pid| pid != settings.pid)
    {
        return Err("the gateway answered about another order or merchant".into());
    }
    let paid = body.get("status").and_then(number_or_text) == Some(1);
    let trade_no = text("trade_no").unwrap_or_default();
    let money = text("money").as_deref().and_then(plain_decimal);
    Ok(Some(Queried {
        paid,
        trade_no,
        money,
    }))
}

/// A JSON string, or a number written out (gateways differ).
fn text_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A JSON integer, or one written as a string (gateways differ).
fn number_or_text(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_md5_of_the_sorted_non_empty_parameters_and_the_key() {
        let params = [
            ("pid", "1001"),
            ("type", "alipay"),
            ("out_trade_no", "abc"),
            ("money", "10.00"),
            ("name", ""),
            ("sign_type", "MD5"),
        ];
        // printf 'money=10.00&out_trade_no=abc&pid=1001&type=alipaySECRET' | md5sum
        assert_eq!(sign(params, "SECRET"), "c69b9639a3abfe397931e1ea0fbb0983");
    }

    #[test]
    fn a_signature_is_checked_whole_and_in_either_case() {
        let mut params = BTreeMap::new();
        params.insert("pid".to_owned(), "1001".to_owned());
        params.insert("money".to_owned(), "1.00".to_owned());
        let good = sign(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), "k");
        assert!(verify(&params, "k", &good));
        assert!(verify(&params, "k", &good.to_ascii_uppercase()));
        assert!(!verify(&params, "k", &good[..31]));
        assert!(!verify(&params, "other", &good));
        params.insert("money".to_owned(), "1.01".to_owned());
        assert!(!verify(&params, "k", &good));
    }

    #[test]
    fn money_has_two_decimals_and_order_numbers_round_trip() {
        assert_eq!(money(Decimal::new(1, 0)), "1.00");
        assert_eq!(money(Decimal::new(123_456, 2)), "1234.56");
        let id = uuid::Uuid::now_v7();
        assert_eq!(order_of(&trade_no_of(id)), Some(id));
        assert_eq!(order_of("not-an-order"), None);
        assert_eq!(order_of(&id.to_string()), None, "only the 32-digit form");
    }
}
