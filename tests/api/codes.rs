//! Redemption codes (issue 12): made in batches by an operator, shown once, stored hashed,
//! redeemed once, throttled on failure.

use mock_anthropic::MockConfig;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::payments::{with_webhook, Payer};

impl TestApp {
    async fn make_codes(&self, body: Value) -> reqwest::Response {
        self.admin(Method::POST, "/redemption-codes")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn codes(&self, count: u32, amount: &str) -> Vec<String> {
        let response = self
            .make_codes(json!({"count": count, "amount_usd": amount}))
            .await;
        assert_eq!(response.status(), 201);
        let made: Value = response.json().await.unwrap();
        made["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|code| code.as_str().unwrap().to_owned())
            .collect()
    }

    async fn redeem(&self, payer: &Payer, code: &str) -> reqwest::Response {
        self.api(Method::POST, "/redeem")
            .bearer_auth(&payer.token)
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
    }
}

#[actix_web::test]
async fn a_code_credits_once_is_stored_hashed_and_shows_in_the_ledger() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let payer = app.payer("card-shop-buyer@example.com").await;
    let codes = app.codes(3, "10").await;
    assert_eq!(codes.len(), 3);
    // Typed as a person would: lower case, spaces instead of dashes.
    let typed = codes[0].to_lowercase().replace('-', " ");
    let redeemed = app.redeem(&payer, &typed).await;
    assert_eq!(redeemed.status(), 200);
    let redeemed: Value = redeemed.json().await.unwrap();
    assert_eq!(redeemed["amount_usd"], "10");
    assert_eq!(redeemed["balance"], "10");
    assert_eq!(app.balance(&payer.id).await, dec("10"));
    // Used: 400, and nothing more is credited.
    let again = app.redeem(&payer, &codes[0]).await;
    assert_eq!(again.status(), 400);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["field"], "code");
    assert_eq!(app.balance(&payer.id).await, dec("10"));

    let listed = app.admin_get("/redemption-codes").await;
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let used: Vec<&Value> = rows
        .iter()
        .filter(|row| !row["redeemed_by"].is_null())
        .collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["redeemed_by"], payer.id.as_str());
    assert!(codes[0].starts_with(used[0]["prefix"].as_str().unwrap()));
    // Nothing stored holds a code.
    let db = app.db().await;
    let stored = db
        .query("SELECT row_to_json(c)::text FROM redemption_codes c", &[])
        .await
        .unwrap();
    for row in stored {
        let text: String = row.get(0);
        for code in &codes {
            let canonical = code.replace('-', "");
            assert!(!text.contains(&canonical[2..]), "{text}");
        }
    }
    let ledger = db
        .query(
            "SELECT amount, change_id FROM ledger WHERE kind = 'redemption'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1);
    let amount: Decimal = ledger[0].get(0);
    let change_id: uuid::Uuid = ledger[0].get(1);
    assert_eq!(amount, dec("10"));
    assert_eq!(change_id.to_string(), used[0]["id"].as_str().unwrap());
}

#[actix_web::test]
async fn two_accounts_redeeming_one_code_at_once_credit_exactly_one() {
    // Every loser's attempt counts as a failure, and the racers share one address.
    let app = spawn_app_with(MockConfig::default(), |settings| {
        with_webhook(settings);
        settings.payments.redeem_failures_per_ip_per_minute = 1_000;
    })
    .await;
    let payers = [
        app.payer("racer-a@example.com").await,
        app.payer("racer-b@example.com").await,
        app.payer("racer-c@example.com").await,
        app.payer("racer-d@example.com").await,
    ];
    for round in 0..5 {
        let code = app.codes(1, "2.5").await.remove(0);
        let answers =
            futures_util::future::join_all(payers.iter().map(|payer| app.redeem(payer, &code)))
                .await;
        let won = answers
            .iter()
            .filter(|answer| answer.status() == 200)
            .count();
        assert_eq!(won, 1, "round {round}");
        let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "round {round}: {statuses:?}"
        );
        assert_eq!(won, 1, "round {round}: {statuses:?}");
    }
    let mut total = Decimal::ZERO;
    for payer in &payers {
        total += app.balance(&payer.id).await;
    }
    assert_eq!(total, dec("12.5"), "five codes of 2.5, each credited once");
}

#[actix_web::test]
async fn an_expired_code_a_typo_and_an_unknown_code_credit_nothing_and_failures_are_throttled() {
    let app = spawn_app_with(MockConfig::default(), |settings| {
        with_webhook(settings);
        settings.payments.redeem_failures_per_account_per_minute = 3;
    })
    .await;
    let payer = app.payer("guesser@example.com").await;
    let codes = app.codes(2, "1").await;
    app.db()
        .await
        .execute(
            "UPDATE redemption_codes SET expires_at = now() - interval '1 second' \
             WHERE id = (SELECT id FROM redemption_codes ORDER BY created_at LIMIT 1)",
            &[],
        )
        .await
        .unwrap();
    let listed = app.admin_get("/redemption-codes").await;
    let expired_prefix = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| !row["expires_at"].is_null())
        .unwrap()["prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let (expired, good) = if codes[0].starts_with(&expired_prefix) {
        (&codes[0], &codes[1])
    } else {
        (&codes[1], &codes[0])
    };
    let mut typo = good.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    for (code, why) in [
        (expired.as_str(), "expired"),
        (typo.as_str(), "a typo"),
        ("TG-00000-00000-00000-00000-0000", "unknown"),
    ] {
        let answer = app.redeem(&payer, code).await;
        assert_eq!(answer.status(), 400, "{why}");
    }
    // A fourth failure is one past the account's limit of three a minute: 429, and then even
    // the good code is refused until the limiter recovers.
    let over = app.redeem(&payer, "TG-00000-00000-00000-00000-0000").await;
    assert_eq!(over.status(), 429);
    let blocked = app.redeem(&payer, good).await;
    assert_eq!(blocked.status(), 429);
    assert!(blocked.headers().get("retry-after").is_some());
    assert_eq!(app.balance(&payer.id).await, Decimal::ZERO);
    // Another account is not blocked by this one's failures.
    let other = app.payer("honest@example.com").await;
    assert_eq!(app.redeem(&other, good).await.status(), 200);
}

#[actix_web::test]
async fn bad_batches_get_a_400_that_names_the_field_and_make_nothing() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    for (body, field) in [
        (json!({"count": 0, "amount_usd": "1"}), "count"),
        (json!({"count": 1001, "amount_usd": "1"}), "count"),
        (json!({"count": 1, "amount_usd": "0"}), "amount_usd"),
        (json!({"count": 1, "amount_usd": "-1"}), "amount_usd"),
        (json!({"count": 1, "amount_usd": 1}), "amount_usd"),
        (json!({"count": 1, "amount_usd": "1.0000001"}), "amount_usd"),
        (json!({"count": 1, "amount_usd": "100000.01"}), "amount_usd"),
        (
            json!({"count": 1, "amount_usd": "1", "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let response = app.make_codes(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(app.admin_get("/redemption-codes").await["data"], json!([]));
}

/// The books after a mixed run: recharges, redemptions, referral rewards and a reversal, an
/// operator's credit and adjustment, and metered usage. Over all accounts, the credits of
/// every kind less the usage equal the balances, each kind of credit equals what paid it,
/// and every account's balance is the sum of its ledger.
#[actix_web::test]
async fn the_books_balance_after_a_mixed_run_of_recharges_codes_rewards_reversals_and_usage() {
    let app = spawn_app_with(MockConfig::default(), with_webhook).await;
    let mut payers = vec![app.payer("books-0@example.com").await];
    // The others are invitees of the first: their first recharges earn it rewards (held, as
    // they all register from this host's network, then approved, and one reversed).
    let code = app.get_as(&payers[0], "/referrals").await["invite_code"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..3 {
        let email = format!("books-{n}@example.com");
        let registered = app
            .api(Method::POST, "/auth/register")
            .json(&json!({"email": email, "password": "correct horse 42", "invite_code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
        let id = registered.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = app.session(&email, "correct horse 42").await;
        payers.push(Payer { id, token });
    }
    let codes = app.codes(3, "2.5").await;
    for (n, payer) in payers.iter().enumerate() {
        let order = app
            .recharge(
                payer,
                json!({"amount_cny": format!("{}.00", 10 * (n + 1)), "method": "webhook"}),
            )
            .await;
        let paid = json!({"order_id": order["id"], "provider": "bank", "provider_ref": format!("ref-{n}"),
            "amount_cny": order["amount_cny"], "status": "paid"});
        let raw = serde_json::to_vec(&paid).unwrap();
        let signed = tollgate::payments::webhook::signature_header(
            crate::payments::WEBHOOK_SECRET,
            chrono::Utc::now().timestamp(),
            &raw,
        );
        let answer = app
            .http
            .post(format!("{}/api/v1/payments/webhook", app.base))
            .header("content-type", "application/json")
            .header("tollgate-signature", signed)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(app.redeem(payer, &codes[n]).await.status(), 200);
    }
    app.credit(&payers[0].id, "1.25").await;
    let adjusted = app
        .admin(Method::POST, &format!("/accounts/{}/adjust", payers[1].id))
        .json(&json!({"amount_usd": "-0.5", "reason": "a correction"}))
        .send()
        .await
        .unwrap();
    assert_eq!(adjusted.status(), 200);
    // Usage: each payer makes a key and a few metered requests.
    for payer in &payers {
        let created: Value = app
            .api(Method::POST, "/keys")
            .bearer_auth(&payer.token)
            .json(&json!({"name": "books"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = created["key"].as_str().unwrap();
        for _ in 0..3 {
            let body = message_body("claude-haiku-5-5", 32, false, json!({"output_tokens": 20}));
            let answer = app.messages(key, &body).send().await.unwrap();
            assert_eq!(answer.status(), 200);
        }
    }
    let held = app.admin_get("/referral-rewards?status=held").await;
    let rewards: Vec<String> = held["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rewards.len(), 2, "one per invitee");
    for id in &rewards {
        let approved = app
            .admin(Method::POST, &format!("/referral-rewards/{id}/approve"))
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 200);
    }
    let reversed = app
        .admin(
            Method::POST,
            &format!("/referral-rewards/{}/reverse", rewards[0]),
        )
        .json(&json!({"reason": "books test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reversed.status(), 200);
    app.flush().await;

    let db = app.db().await;
    let sum = |sql: &'static str| {
        let db = &db;
        async move {
            let row = db.query_one(sql, &[]).await.unwrap();
            row.get::<_, Option<Decimal>>(0).unwrap_or_default()
        }
    };
    let balances = sum("SELECT sum(balance) FROM accounts").await;
    let ledger = sum("SELECT sum(amount) FROM ledger").await;
    let usage = sum("SELECT sum(cost) FROM usage").await;
    let credits = sum("SELECT sum(amount) FROM ledger WHERE kind <> 'usage'").await;
    assert!(usage > Decimal::ZERO);
    assert_eq!(
        credits - usage,
        balances,
        "credits of every kind less usage"
    );
    assert_eq!(ledger, balances);
    assert_eq!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'recharge'").await,
        sum("SELECT sum(amount_usd) FROM recharge_orders WHERE status = 'paid'").await
    );
    assert_eq!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'redemption'").await,
        sum("SELECT sum(amount_usd) FROM redemption_codes WHERE redeemed_by IS NOT NULL").await
    );
    assert_eq!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'usage'").await,
        -usage
    );
    assert_eq!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'referral_reward'").await,
        sum("SELECT sum(amount_usd) FROM referral_rewards WHERE paid_at IS NOT NULL").await
    );
    assert_eq!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'referral_reversal'").await,
        -sum("SELECT sum(amount_usd) FROM referral_rewards WHERE status = 'reversed'").await
    );
    assert!(
        sum("SELECT sum(amount) FROM ledger WHERE kind = 'referral_reversal'").await
            < Decimal::ZERO
    );
    let per_account = db
        .query(
            "SELECT a.id FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id \
             GROUP BY a.id, a.balance HAVING a.balance <> COALESCE(sum(l.amount), 0)",
            &[],
        )
        .await
        .unwrap();
    assert!(
        per_account.is_empty(),
        "an account's balance is the sum of its ledger"
    );
    for payer in &payers {
        let live = app.balance(&payer.id).await;
        let id: uuid::Uuid = payer.id.parse().unwrap();
        let stored: Decimal = db
            .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            live, stored,
            "the actor's balance is the stored one once flushed"
        );
    }
}
