//! Money in (issue 12): recharge orders, the signed webhook, EPay through the simulated
//! gateway (`mock-epay`, over loopback HTTP), confirmations by hand and the exchange rate.
//! Every credit is checked against the balance, the live view and the ledger.

use std::time::Duration;

use mock_anthropic::MockConfig;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate::config::Settings;
use tollgate::payments::webhook::signature_header;

use crate::helpers::*;

pub const WEBHOOK_SECRET: &str = "webhook-secret-for-the-integration-tests";
const PASSWORD: &str = "correct horse 42";

/// A customer with a session, and the account id.
pub struct Payer {
    pub id: String,
    pub token: String,
}

impl TestApp {
    pub async fn payer(&self, email: &str) -> Payer {
        let registered = self.register(email).await;
        let token = self.session(email, PASSWORD).await;
        Payer {
            id: registered["id"].as_str().unwrap().to_owned(),
            token,
        }
    }

    /// A customer route's JSON answer, read with the payer's session.
    pub async fn get_as(&self, payer: &Payer, path: &str) -> Value {
        self.api(Method::GET, path)
            .bearer_auth(&payer.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An admin route's JSON answer.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.admin(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn create_recharge(&self, payer: &Payer, body: Value) -> reqwest::Response {
        self.api(Method::POST, "/recharges")
            .bearer_auth(&payer.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn recharge(&self, payer: &Payer, body: Value) -> Value {
        let response = self.create_recharge(payer, body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn order(&self, payer: &Payer, id: &str) -> Value {
        let response = self
            .api(Method::GET, &format!("/recharges/{id}"))
            .bearer_auth(&payer.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn send_webhook(&self, body: &Value, time: i64) -> reqwest::Response {
        let raw = serde_json::to_vec(body).unwrap();
        self.http
            .post(format!("{}/api/v1/payments/webhook", self.base))
            .header("content-type", "application/json")
            .header(
                "tollgate-signature",
                signature_header(WEBHOOK_SECRET, time, &raw),
            )
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    pub async fn set_rate(&self, rate: &str) -> reqwest::Response {
        self.admin(Method::PUT, "/exchange-rate")
            .json(&json!({"cny_per_usd": rate}))
            .send()
            .await
            .unwrap()
    }

    /// The account's `recharge` ledger rows, from Postgres: amount and change id.
    pub async fn recharge_rows(&self, account: &str) -> Vec<(Decimal, Option<uuid::Uuid>)> {
        let id: uuid::Uuid = account.parse().unwrap();
        self.db()
            .await
            .query(
                "SELECT amount, change_id FROM ledger WHERE account_id = $1 AND kind = 'recharge' ORDER BY id",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

pub fn with_webhook(settings: &mut Settings) {
    settings.accounts.require_email_verification = false;
    settings.payments.webhook.secret = WEBHOOK_SECRET.into();
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn paid(order: &Value, provider_ref: &str) -> Value {
    json!({
        "order_id": order["id"],
        "provider": "stripe",
        "provider_ref": provider_ref,
        "amount_cny": order["amount_cny"],
        "status": "paid",
    })
}

#[actix_web::test]
async fn an_order_locks_the_rate_and_shows_the_usd_it_will_credit() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("rate@example.com").await;
    // The configuration's rate until an operator sets one.
    let rate: Value = app.admin_get("/exchange-rate").await;
    assert_eq!(rate["cny_per_usd"], "7.2");
    assert_eq!(rate["source"], "config");

    assert_eq!(app.set_rate("7.123456").await.status(), 200);
    let order = app
        .recharge(&payer, json!({"amount_cny": "100.00", "method": "webhook"}))
        .await;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["cny_per_usd"], "7.123456");
    // 100 / 7.123456 = 14.03813..., half-even to 6 decimals.
    assert_eq!(order["amount_usd"], "14.03813");
    assert!(
        order["pay_url"].is_null(),
        "a webhook order has no gateway page"
    );

    // A later rate never alters the pending order, nor what it credits.
    assert_eq!(app.set_rate("8").await.status(), 200);
    let again = app.order(&payer, order["id"].as_str().unwrap()).await;
    assert_eq!(again["cny_per_usd"], "7.123456");
    let answer = app.send_webhook(&paid(&order, "pi_rate_1"), now()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(app.balance(&payer.id).await, dec("14.03813"));

    let history: Value = app.admin_get("/exchange-rate/history").await;
    let rates: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["cny_per_usd"].as_str().unwrap())
        .collect();
    assert_eq!(rates, ["8", "7.123456"], "newest first");
}

#[actix_web::test]
async fn bad_amounts_methods_and_rates_get_a_400_that_names_the_field_and_change_nothing() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("bad-input@example.com").await;
    for (amount, why) in [
        (json!("10.001"), "3 decimals"),
        (json!("-5"), "negative"),
        (json!("0"), "zero"),
        (json!("abc"), "not a number"),
        (json!("1e3"), "exponent"),
        (json!(10), "a JSON number"),
        (json!("0.50"), "below the minimum of 1"),
        (json!("1000000.01"), "above the maximum"),
    ] {
        let response = app
            .create_recharge(&payer, json!({"amount_cny": amount, "method": "webhook"}))
            .await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], "amount_cny", "{why}: {body}");
    }
    let response = app
        .create_recharge(&payer, json!({"amount_cny": "10", "method": "paypal"}))
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "method");
    // EPay is not set up on this instance.
    let response = app
        .create_recharge(&payer, json!({"amount_cny": "10", "method": "epay"}))
        .await;
    assert_eq!(response.status(), 503);
    let listed: Value = app.get_as(&payer, "/recharges").await;
    assert_eq!(listed["data"], json!([]), "no order was made");

    for rate in ["0", "-1", "7.1234567", "x", ""] {
        let response = app.set_rate(rate).await;
        assert_eq!(response.status(), 400, "{rate:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], "cny_per_usd");
    }
    let rate: Value = app.admin_get("/exchange-rate").await;
    assert_eq!(rate["source"], "config", "no bad rate was stored");
}

#[actix_web::test]
async fn a_webhook_replayed_ten_times_at_once_credits_once_and_so_does_a_confirmation_after_it() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("replay@example.com").await;
    let order = app
        .recharge(&payer, json!({"amount_cny": "72.00", "method": "webhook"}))
        .await;
    let body = paid(&order, "pi_replayed");
    let time = now();
    let answers =
        futures_util::future::join_all((0..10).map(|_| app.send_webhook(&body, time))).await;
    let mut credited = 0;
    for answer in answers {
        assert_eq!(answer.status(), 200, "every repeat answers as a success");
        let answer: Value = answer.json().await.unwrap();
        credited += usize::from(answer["credited"] == true);
    }
    assert_eq!(credited, 1);
    assert_eq!(app.balance(&payer.id).await, dec("10"));
    let id = order["id"].as_str().unwrap();
    let rows = app.recharge_rows(&payer.id).await;
    assert_eq!(rows, [(dec("10"), Some(id.parse().unwrap()))]);

    // An operator confirming it afterwards with the same reference repeats it; with another
    // it is refused. Neither credits.
    let confirm = |reference: &'static str| {
        app.admin(Method::POST, &format!("/recharges/{id}/confirm"))
            .json(&json!({"provider_ref": reference, "reason": "bank statement"}))
            .send()
    };
    let same = confirm("pi_replayed").await.unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(same.json::<Value>().await.unwrap()["credited"], false);
    assert_eq!(confirm("another-ref").await.unwrap().status(), 409);
    assert_eq!(app.balance(&payer.id).await, dec("10"));
    assert_eq!(app.recharge_rows(&payer.id).await.len(), 1);
    let shown = app.order(&payer, id).await;
    assert_eq!(shown["status"], "paid");
    // The customer's ledger shows the recharge.
    let ledger: Value = app.get_as(&payer, "/ledger").await;
    assert_eq!(ledger["data"][0]["kind"], "recharge");
    assert_eq!(ledger["data"][0]["amount_usd"], "10");
}

#[actix_web::test]
async fn a_forged_stale_or_tampered_webhook_credits_nothing() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("forged@example.com").await;
    let order = app
        .recharge(&payer, json!({"amount_cny": "10.00", "method": "webhook"}))
        .await;
    let body = paid(&order, "pi_forged");
    let raw = serde_json::to_vec(&body).unwrap();
    let post = |signature: String, raw: Vec<u8>| {
        app.http
            .post(format!("{}/api/v1/payments/webhook", app.base))
            .header("content-type", "application/json")
            .header("tollgate-signature", signature)
            .body(raw)
            .send()
    };
    // Signed with another secret.
    let forged = signature_header("not-the-secret-but-just-as-long-xxxxx", now(), &raw);
    assert_eq!(post(forged, raw.clone()).await.unwrap().status(), 401);
    // Signed, then the amount changed.
    let signed = signature_header(WEBHOOK_SECRET, now(), &raw);
    let mut tampered = body.clone();
    tampered["amount_cny"] = json!("1000.00");
    let tampered = serde_json::to_vec(&tampered).unwrap();
    assert_eq!(post(signed, tampered).await.unwrap().status(), 401);
    // A real signature from six minutes ago: a replay past the window.
    assert_eq!(app.send_webhook(&body, now() - 360).await.status(), 401);
    // No signature at all.
    let unsigned = app
        .http
        .post(format!("{}/api/v1/payments/webhook", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // Signed correctly, but reporting another amount than the order's: held for review.
    let mut short = body.clone();
    short["amount_cny"] = json!("9.99");
    let answer = app.send_webhook(&short, now()).await;
    assert_eq!(answer.status(), 409);
    let shown = app.order(&payer, order["id"].as_str().unwrap()).await;
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["under_review"], true);
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
    assert!(app.recharge_rows(&payer.id).await.is_empty());
}

#[actix_web::test]
async fn a_million_yuan_top_up_credits_exactly() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("whale@example.com").await;
    let order = app
        .recharge(
            &payer,
            json!({"amount_cny": "1000000.00", "method": "webhook"}),
        )
        .await;
    // 1,000,000 / 7.2 = 138,888.888888..., half-even to 6 decimals.
    assert_eq!(order["amount_usd"], "138888.888889");
    assert_eq!(
        app.send_webhook(&paid(&order, "wire-1"), now())
            .await
            .status(),
        200
    );
    assert_eq!(app.balance(&payer.id).await, dec("138888.888889"));
    app.flush().await;
    let id: uuid::Uuid = payer.id.parse().unwrap();
    let stored: Decimal = app
        .db()
        .await
        .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, dec("138888.888889"));
}

#[actix_web::test]
async fn another_customers_order_is_unknown_and_an_expired_order_is_confirmed_only_by_hand() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("owner@example.com").await;
    let other = app.payer("other@example.com").await;
    let order = app
        .recharge(&payer, json!({"amount_cny": "36.00", "method": "webhook"}))
        .await;
    let id = order["id"].as_str().unwrap();
    let peek = app
        .api(Method::GET, &format!("/recharges/{id}"))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(peek.status(), 404);

    // The order's time runs out.
    let order_id: uuid::Uuid = id.parse().unwrap();
    app.db()
        .await
        .execute(
            "UPDATE recharge_orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    app.store().expire_orders().await.unwrap();
    assert_eq!(app.order(&payer, id).await["status"], "expired");
    // A payment reported after the expiry credits nothing and is held for review ...
    assert_eq!(
        app.send_webhook(&paid(&order, "late-1"), now())
            .await
            .status(),
        409
    );
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
    let shown = app.order(&payer, id).await;
    assert_eq!(shown["under_review"], true);
    // ... until an operator confirms it.
    let confirmed = app
        .admin(Method::POST, &format!("/recharges/{id}/confirm"))
        .json(&json!({"provider_ref": "late-1", "reason": "paid two minutes late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(app.balance(&payer.id).await, dec("5"));
    assert_eq!(app.order(&payer, id).await["status"], "paid");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// tollgate in front of the simulated EPay gateway, on a port chosen first so that the notify
/// URL it signs into each order is its own.
pub async fn spawn_with_epay(
    knobs: mock_epay::Knobs,
    tweak: impl Fn(&mut Settings),
) -> (TestApp, mock_epay::MockEpay) {
    let epay = mock_epay::MockEpay::start(
        mock_epay::Config {
            knobs,
            ..Default::default()
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let (gateway, pid, key) = (
        epay.base_url(),
        epay.pid().to_owned(),
        epay.key().to_owned(),
    );
    // The notify URL must name tollgate's port before it binds it: a port picked free may be
    // taken by another test meanwhile, so a lost race picks another.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let (gateway, pid, key) = (gateway.clone(), pid.clone(), key.clone());
        let started = try_spawn_app_with(MockConfig::default(), |settings| {
            with_webhook(settings);
            settings.server.listen = format!("127.0.0.1:{port}");
            settings.server.public_url = format!("http://127.0.0.1:{port}");
            settings.payments.epay.gateway_url = gateway;
            settings.payments.epay.pid = pid;
            settings.payments.epay.key = key;
            // The re-query stays off unless a test turns it on.
            settings.payments.epay.requery_secs = 0;
            tweak(settings);
        })
        .await;
        match started {
            Ok(app) => return (app, epay),
            Err(error) if attempt < 5 => {
                eprintln!("tollgate did not start on port {port} ({error}); trying another");
            }
            Err(error) => panic!("tollgate did not start: {error}"),
        }
    }
}

/// Knobs for tests: quick retries.
fn knobs() -> mock_epay::Knobs {
    mock_epay::Knobs {
        notify_retry_ms: 20,
        notify_attempts: 3,
        ..Default::default()
    }
}

/// Makes an EPay order, opens its payment page as the customer's browser would, and presses
/// Pay at the gateway; the gateway's trade.
async fn pay_by_epay(
    app: &TestApp,
    epay: &mock_epay::MockEpay,
    payer: &Payer,
    cny: &str,
) -> (Value, mock_epay::Order) {
    let order = app
        .recharge(
            payer,
            json!({"amount_cny": cny, "method": "epay", "channel": "alipay"}),
        )
        .await;
    let pay_url = order["pay_url"].as_str().unwrap();
    assert!(
        pay_url.starts_with(&format!("{}/submit.php?", epay.base_url())),
        "{pay_url}"
    );
    let page = app.http.get(pay_url).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "the gateway accepts tollgate's signature"
    );
    let out_trade_no = order["id"].as_str().unwrap().replace('-', "");
    let trade = epay.order_by_out_trade_no(&out_trade_no).unwrap();
    let paid = app
        .http
        .post(format!("{}/orders/{}/pay", epay.base_url(), trade.trade_no))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    (order, trade)
}

async fn wait_for_status(app: &TestApp, payer: &Payer, id: &str, status: &str) -> Value {
    for _ in 0..400 {
        let order = app.order(payer, id).await;
        if order["status"] == status {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("order {id} never became {status}");
}

/// Waits until the gateway has finished sending the trade's notifies.
async fn wait_for_notifies(
    epay: &mock_epay::MockEpay,
    trade_no: &str,
    attempts: u32,
) -> mock_epay::Order {
    for _ in 0..400 {
        let trade = epay.order(trade_no).unwrap();
        if trade.notify_attempts >= attempts {
            return trade;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the gateway never sent {attempts} notifies for {trade_no}");
}

#[actix_web::test]
async fn the_same_epay_notify_sent_ten_times_at_once_credits_once() {
    let (app, epay) = spawn_with_epay(
        mock_epay::Knobs {
            duplicate_notify: 10,
            ..knobs()
        },
        |_| {},
    )
    .await;
    let payer = app.payer("epay-ten@example.com").await;
    let (order, trade) = pay_by_epay(&app, &epay, &payer, "72.00").await;
    let id = order["id"].as_str().unwrap();
    wait_for_status(&app, &payer, id, "paid").await;
    let trade = wait_for_notifies(&epay, &trade.trade_no, 10).await;
    assert!(trade.notified_ok, "tollgate answered `success`");
    assert_eq!(
        trade.notify_attempts, 10,
        "no copy needed a retry: {:?}",
        trade.last_notify_error
    );
    assert_eq!(app.balance(&payer.id).await, dec("10"));
    assert_eq!(
        app.recharge_rows(&payer.id).await,
        [(dec("10"), Some(id.parse().unwrap()))]
    );
    // A notify resent later is answered `success` and credits nothing.
    let resent: Value = app
        .http
        .post(format!(
            "{}/orders/{}/notify",
            epay.base_url(),
            trade.trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resent["delivered"], true);
    assert_eq!(app.balance(&payer.id).await, dec("10"));
}

#[actix_web::test]
async fn forged_and_tampered_epay_notifies_credit_nothing() {
    let (app, epay) = spawn_with_epay(knobs(), |_| {}).await;
    let payer = app.payer("epay-tamper@example.com").await;
    for tamper in [
        mock_epay::Tamper::Sign,
        mock_epay::Tamper::Pid,
        mock_epay::Tamper::Status,
        mock_epay::Tamper::OutTradeNo,
        mock_epay::Tamper::Money,
    ] {
        epay.patch_knobs(&mock_epay::KnobsPatch {
            tamper: Some(tamper),
            ..Default::default()
        })
        .unwrap();
        let (order, trade) = pay_by_epay(&app, &epay, &payer, "36.00").await;
        // The gateway records an attempt once tollgate has answered it, so what it did is done.
        let trade = wait_for_notifies(&epay, &trade.trade_no, 1).await;
        let shown = app.order(&payer, order["id"].as_str().unwrap()).await;
        assert_eq!(shown["status"], "pending", "{tamper:?}");
        // Nothing credited: never `success`.
        assert!(!trade.notified_ok, "{tamper:?}");
        // A genuine report of a different amount is held for review; the others change
        // nothing.
        let held = tamper == mock_epay::Tamper::Money;
        assert_eq!(shown["under_review"], held, "{tamper:?}");
    }
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
    assert!(app.recharge_rows(&payer.id).await.is_empty());
}

#[actix_web::test]
async fn a_notify_for_an_order_of_another_path_credits_nothing() {
    let (app, epay) = spawn_with_epay(knobs(), |_| {}).await;
    let payer = app.payer("cross@example.com").await;
    // A webhook order, and a genuine EPay notify naming it.
    let order = app
        .recharge(&payer, json!({"amount_cny": "10.00", "method": "webhook"}))
        .await;
    let out_trade_no = order["id"].as_str().unwrap().replace('-', "");
    let query = mock_epay::signed_query(
        &[
            ("pid", epay.pid()),
            ("trade_no", "2026120600000001"),
            ("out_trade_no", &out_trade_no),
            ("type", "alipay"),
            ("name", "tollgate balance"),
            ("money", "10.00"),
            ("trade_status", "TRADE_SUCCESS"),
        ],
        epay.key(),
    );
    let answer = app
        .http
        .get(format!("{}/api/v1/payments/epay/notify?{query}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "verified: a retry would change nothing"
    );
    assert_eq!(answer.text().await.unwrap(), "fail", "nothing was credited");
    assert_eq!(
        app.order(&payer, order["id"].as_str().unwrap()).await["status"],
        "pending"
    );
    // And a webhook naming an EPay order.
    let (epay_order, _) = {
        epay.patch_knobs(&mock_epay::KnobsPatch {
            drop_notify: Some(true),
            ..Default::default()
        })
        .unwrap();
        pay_by_epay(&app, &epay, &payer, "20.00").await
    };
    let answer = app
        .send_webhook(&paid(&epay_order, "pi_cross"), now())
        .await;
    assert_eq!(answer.status(), 409);
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
}

#[actix_web::test]
async fn a_dropped_notify_is_credited_by_the_requery() {
    let (app, epay) = spawn_with_epay(
        mock_epay::Knobs {
            drop_notify: true,
            ..knobs()
        },
        |settings| {
            settings.payments.epay.requery_secs = 1;
            settings.payments.epay.requery_min_age_secs = 0;
        },
    )
    .await;
    let payer = app.payer("dropped@example.com").await;
    let (order, trade) = pay_by_epay(&app, &epay, &payer, "7.20").await;
    assert_eq!(
        epay.order(&trade.trade_no).unwrap().notify_attempts,
        0,
        "no notify was sent"
    );
    let paid = wait_for_status(&app, &payer, order["id"].as_str().unwrap(), "paid").await;
    assert!(paid["paid_at"].is_string());
    assert_eq!(app.balance(&payer.id).await, dec("1"));
    assert_eq!(app.recharge_rows(&payer.id).await.len(), 1);
}

#[actix_web::test]
async fn one_payment_pays_one_order_and_a_paid_order_cannot_be_changed_even_by_hand_written_sql() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("constraints@example.com").await;
    let first = app
        .recharge(&payer, json!({"amount_cny": "7.20", "method": "webhook"}))
        .await;
    let second = app
        .recharge(&payer, json!({"amount_cny": "7.20", "method": "webhook"}))
        .await;
    assert_eq!(
        app.send_webhook(&paid(&first, "pi_once"), now())
            .await
            .status(),
        200
    );
    // The same provider reference reported for another order: one payment, one order.
    assert_eq!(
        app.send_webhook(&paid(&second, "pi_once"), now())
            .await
            .status(),
        409
    );
    assert_eq!(app.balance(&payer.id).await, dec("1"));

    let db = app.db().await;
    let first_id: uuid::Uuid = first["id"].as_str().unwrap().parse().unwrap();
    let second_id: uuid::Uuid = second["id"].as_str().unwrap().parse().unwrap();
    for statement in [
        "UPDATE recharge_orders SET status = 'pending', provider = NULL, provider_ref = NULL, paid_at = NULL WHERE id = $1",
        "UPDATE recharge_orders SET amount_usd = amount_usd * 2 WHERE id = $1",
        "UPDATE recharge_orders SET provider_ref = 'pi_other' WHERE id = $1",
    ] {
        let error = db_message(db.execute(statement, &[&first_id]).await.unwrap_err());
        assert!(
            error.contains("is paid") || error.contains("keeps its terms"),
            "{statement}: {error}"
        );
    }
    // A pending order keeps its terms too.
    let error = db
        .execute(
            "UPDATE recharge_orders SET cny_per_usd = 1 WHERE id = $1",
            &[&second_id],
        )
        .await
        .unwrap_err();
    assert!(db_message(error).contains("keeps its terms"));
    // And no two orders are paid under one reference, whatever the code does.
    let error = db
        .execute(
            "UPDATE recharge_orders SET status = 'paid', provider = 'webhook:stripe', provider_ref = 'pi_once', paid_at = now() WHERE id = $1",
            &[&second_id],
        )
        .await
        .unwrap_err();
    let constraint = error.as_db_error().and_then(|db| db.constraint());
    assert_eq!(
        constraint,
        Some("recharge_orders_provider_ref"),
        "{error:?}"
    );
}

#[actix_web::test]
async fn public_pricing_shows_the_billing_rate_card_in_usd_and_in_cny_at_the_current_rate() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let pricing = |app: &TestApp| {
        let request = app.http.get(format!("{}/api/v1/pricing", app.base)).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };
    let shown = pricing(&app).await;
    assert_eq!(shown["cny_per_usd"], "7.2");
    let models = shown["models"].as_array().unwrap();
    assert!(!models.is_empty());
    for model in models {
        for price in [
            "input",
            "output",
            "cache_read",
            "cache_write_5m",
            "cache_write_1h",
        ] {
            let usd = dec(model["usd_per_mtok"][price].as_str().unwrap());
            let cny = dec(model["cny_per_mtok"][price].as_str().unwrap());
            assert_eq!(cny, usd * dec("7.2"), "{} {price}", model["id"]);
        }
    }
    // The prices are the ones that bill: haiku's input, as the built-in card has it.
    let haiku = models
        .iter()
        .find(|model| model["id"] == "claude-haiku-5-5")
        .unwrap();
    let card = tollgate_actors::pricing::RateCard::builtin().unwrap();
    let version = card
        .price_at("claude-haiku-5-5", chrono::Utc::now())
        .unwrap();
    assert_eq!(
        dec(haiku["usd_per_mtok"]["input"].as_str().unwrap()),
        version.base.input
    );
    // A new rate shows at once.
    assert_eq!(app.set_rate("7.5").await.status(), 200);
    let shown = pricing(&app).await;
    assert_eq!(shown["cny_per_usd"], "7.5");
    let haiku = shown["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["id"] == "claude-haiku-5-5")
        .unwrap()
        .clone();
    assert_eq!(
        dec(haiku["cny_per_mtok"]["input"].as_str().unwrap()),
        version.base.input * dec("7.5")
    );
}

/// What Postgres said, for an error the test expects.
fn db_message(error: tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

#[actix_web::test]
async fn a_notify_after_a_confirmation_by_hand_under_its_trade_number_repeats_it() {
    let (app, epay) = spawn_with_epay(
        mock_epay::Knobs {
            drop_notify: true,
            ..knobs()
        },
        |_| {},
    )
    .await;
    let payer = app.payer("hand-then-notify@example.com").await;
    let (order, trade) = pay_by_epay(&app, &epay, &payer, "14.40").await;
    let id = order["id"].as_str().unwrap();
    // The operator sees the payment at the gateway and confirms it under its trade number.
    let confirmed = app
        .admin(Method::POST, &format!("/recharges/{id}/confirm"))
        .json(
            &json!({"provider_ref": trade.trade_no, "reason": "seen in the gateway's back office"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(app.balance(&payer.id).await, dec("2"));
    // Then the late notify arrives: the same payment, acknowledged, not credited again.
    let resent: Value = app
        .http
        .post(format!(
            "{}/orders/{}/notify",
            epay.base_url(),
            trade.trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resent["delivered"], true);
    assert_eq!(app.balance(&payer.id).await, dec("2"));
    assert_eq!(app.recharge_rows(&payer.id).await.len(), 1);
    let shown = app.order(&payer, id).await;
    assert_eq!(
        shown["under_review"], false,
        "a repeat, not a second payment"
    );
}

#[actix_web::test]
async fn a_notify_after_the_expiry_credits_nothing_even_before_the_job_marks_it() {
    let (app, epay) = spawn_with_epay(
        mock_epay::Knobs {
            drop_notify: true,
            ..knobs()
        },
        |_| {},
    )
    .await;
    let payer = app.payer("late-notify@example.com").await;
    let (order, trade) = pay_by_epay(&app, &epay, &payer, "7.20").await;
    let order_id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    app.db()
        .await
        .execute(
            "UPDATE recharge_orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    let resent: Value = app
        .http
        .post(format!(
            "{}/orders/{}/notify",
            epay.base_url(),
            trade.trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Not credited: `fail` (with 200: a retry cannot change it), so never `success`.
    assert_eq!(resent["delivered"], false);
    let shown = app.order(&payer, order["id"].as_str().unwrap()).await;
    assert_eq!(shown["status"], "pending", "not yet marked by the job");
    assert_eq!(shown["under_review"], true);
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
}

#[actix_web::test]
async fn a_payment_for_a_deleted_account_is_held_for_review_and_credits_nothing() {
    let (app, epay) = spawn_with_epay(
        mock_epay::Knobs {
            drop_notify: true,
            ..knobs()
        },
        |_| {},
    )
    .await;
    let payer = app.payer("gone-before-notify@example.com").await;
    let (order, trade) = pay_by_epay(&app, &epay, &payer, "7.20").await;
    let deleted = app
        .api(Method::DELETE, "/me")
        .bearer_auth(&payer.token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let resent: Value = app
        .http
        .post(format!(
            "{}/orders/{}/notify",
            epay.base_url(),
            trade.trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resent["delivered"], false, "not credited, so not `success`");
    let order_id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let row = app
        .db()
        .await
        .query_one(
            "SELECT status, review_reason FROM recharge_orders WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    let status: String = row.get(0);
    let reason: Option<String> = row.get(1);
    assert_eq!(status, "pending");
    assert!(reason.unwrap().contains("deleted"));
    assert!(app.recharge_rows(&payer.id).await.is_empty());
}

#[actix_web::test]
async fn an_account_has_at_most_ten_pending_orders() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("many-orders@example.com").await;
    for _ in 0..10 {
        app.recharge(&payer, json!({"amount_cny": "1", "method": "webhook"}))
            .await;
    }
    let eleventh = app
        .create_recharge(&payer, json!({"amount_cny": "1", "method": "webhook"}))
        .await;
    assert_eq!(eleventh.status(), 409);
    assert_eq!(
        app.get_as(&payer, "/recharges").await["data"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[actix_web::test]
async fn the_credit_itself_refuses_a_path_that_did_not_make_the_order() {
    // The handlers check an order's path before they credit it; the transaction checks it
    // again, so that no caller can pay a webhook order as EPay, or the reverse.
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("path-check@example.com").await;
    let order = app
        .recharge(&payer, json!({"amount_cny": "7.20", "method": "webhook"}))
        .await;
    let id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let account: uuid::Uuid = payer.id.parse().unwrap();
    let change = |path, provider: &str| tollgate_actors::BalanceChange {
        id,
        account_id: account,
        kind: tollgate_actors::CreditKind::Recharge,
        amount: dec("1"),
        reason: "a test".into(),
        idempotency: None,
        settles: Some(tollgate_actors::Settles::RechargeOrder {
            path,
            provider: provider.into(),
            provider_ref: "T1".into(),
            reason: None,
        }),
    };
    let refused = app
        .engine
        .apply_change(change(tollgate_actors::PaymentPath::Epay, "epay"))
        .await
        .unwrap();
    assert_eq!(refused.applied, tollgate_actors::ChangeApplied::Refused);
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
    let paid = app
        .engine
        .apply_change(change(
            tollgate_actors::PaymentPath::Webhook,
            "webhook:bank",
        ))
        .await
        .unwrap();
    assert_eq!(paid.applied, tollgate_actors::ChangeApplied::Applied);
    assert_eq!(paid.balance, dec("1"));
}
