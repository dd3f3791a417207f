//! Referral rewards (issue 12): an inviter is rewarded once, when the invitee's first paid
//! recharge commits; a reward from the inviter's own network is held for review.

use mock_anthropic::MockConfig;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate::config::Settings;

use crate::helpers::*;
use crate::payments::{with_webhook, Payer};

const PASSWORD: &str = "correct horse 42";

fn behind_a_proxy(settings: &mut Settings) {
    with_webhook(settings);
    settings.server.trusted_proxies = vec!["127.0.0.0/8".to_string().try_into().unwrap()];
    settings.accounts.signups_per_ip_per_hour = 1_000;
    settings.accounts.signups_per_block_per_hour = 1_000;
}

impl TestApp {
    /// Registers `email` from `ip` (through the trusted proxy), with an invitation code.
    async fn invitee(&self, email: &str, ip: &str, invite_code: &str) -> Payer {
        let response = self
            .api(Method::POST, "/auth/register")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": PASSWORD, "invite_code": invite_code}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = self.session(email, PASSWORD).await;
        Payer { id, token }
    }

    async fn inviter(&self, email: &str, ip: &str) -> (Payer, String) {
        let response = self
            .api(Method::POST, "/auth/register")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = self.session(email, PASSWORD).await;
        let payer = Payer { id, token };
        let code = self.get_as(&payer, "/referrals").await["invite_code"]
            .as_str()
            .unwrap()
            .to_owned();
        (payer, code)
    }

    /// Makes and pays a webhook order of `cny` for `payer`.
    async fn pay(&self, payer: &Payer, cny: &str, reference: &str) {
        let order = self
            .recharge(payer, json!({"amount_cny": cny, "method": "webhook"}))
            .await;
        let paid = json!({"order_id": order["id"], "provider": "bank", "provider_ref": reference,
            "amount_cny": order["amount_cny"], "status": "paid"});
        let answer = self
            .send_webhook(&paid, chrono::Utc::now().timestamp())
            .await;
        assert_eq!(answer.status(), 200);
    }
}

#[actix_web::test]
async fn the_first_paid_recharge_rewards_the_inviter_once_at_the_exact_ratio() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (inviter, code) = app.inviter("inviter@example.com", "198.51.100.7").await;
    let invitee = app
        .invitee("invitee@example.com", "203.0.113.9", &code)
        .await;
    // 100 CNY at 7.2 = 13.888889 USD; 5 % of it, half-even to 6 decimals: 0.694444.
    app.pay(&invitee, "100.00", "first").await;
    app.pay(&invitee, "50.00", "second").await;
    assert_eq!(app.balance(&inviter.id).await, dec("0.694444"));
    let shown = app.get_as(&inviter, "/referrals").await;
    assert_eq!(shown["invitees"], 1);
    assert_eq!(shown["earned_usd"], "0.694444");
    assert_eq!(shown["rewards"].as_array().unwrap().len(), 1);
    assert_eq!(shown["rewards"][0]["status"], "paid");
    assert!(shown["invite_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/register?invite={code}")));
    let id: uuid::Uuid = inviter.id.parse().unwrap();
    let rows = app
        .db()
        .await
        .query(
            "SELECT amount FROM ledger WHERE account_id = $1 AND kind = 'referral_reward'",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Decimal>(0), dec("0.694444"));
}

#[actix_web::test]
async fn two_first_recharges_racing_pay_one_reward() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (inviter, code) = app
        .inviter("race-inviter@example.com", "198.51.100.7")
        .await;
    let invitee = app
        .invitee("race-invitee@example.com", "203.0.113.9", &code)
        .await;
    let first = app
        .recharge(
            &invitee,
            json!({"amount_cny": "72.00", "method": "webhook"}),
        )
        .await;
    let second = app
        .recharge(
            &invitee,
            json!({"amount_cny": "72.00", "method": "webhook"}),
        )
        .await;
    let now = chrono::Utc::now().timestamp();
    let report = |order: &Value, reference: &str| {
        json!({"order_id": order["id"], "provider": "bank", "provider_ref": reference,
            "amount_cny": order["amount_cny"], "status": "paid"})
    };
    let (a, b) = (report(&first, "race-a"), report(&second, "race-b"));
    let (one, two) = futures_util::join!(app.send_webhook(&a, now), app.send_webhook(&b, now));
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    assert_eq!(app.balance(&invitee.id).await, dec("20"));
    // 5 % of one 10 USD recharge, not of both.
    assert_eq!(app.balance(&inviter.id).await, dec("0.5"));
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM referral_rewards", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[actix_web::test]
async fn a_reward_from_the_inviters_own_network_is_held_not_paid() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (inviter, code) = app.inviter("neighbour@example.com", "198.51.100.7").await;
    // Another address of the same /24.
    let invitee = app
        .invitee("sock-puppet@example.com", "198.51.100.200", &code)
        .await;
    app.pay(&invitee, "72.00", "puppet").await;
    assert_eq!(app.balance(&inviter.id).await, Decimal::ZERO);
    let shown = app.get_as(&inviter, "/referrals").await;
    assert_eq!(shown["rewards"][0]["status"], "held");
    assert_eq!(shown["held_usd"], "0.5");
    assert_eq!(shown["earned_usd"], "0");
}

#[actix_web::test]
async fn an_account_invited_by_no_one_earns_nobody_a_reward() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (loner, _) = app.inviter("loner@example.com", "198.51.100.7").await;
    app.pay(&loner, "72.00", "solo").await;
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM referral_rewards", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    // And the database refuses a reward to oneself, whatever the code does.
    let id: uuid::Uuid = loner.id.parse().unwrap();
    let order: uuid::Uuid = app
        .db()
        .await
        .query_one(
            "SELECT id FROM recharge_orders WHERE account_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let refused = app
        .db()
        .await
        .execute(
            "INSERT INTO referral_rewards (id, inviter_id, invitee_id, order_id, amount_usd, status) \
             VALUES (gen_random_uuid(), $1, $1, $2, 1, 'pending')",
            &[&id, &order],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().and_then(|db| db.constraint()),
        Some("referral_rewards_not_self")
    );
}

#[actix_web::test]
async fn an_operator_approves_a_held_reward_and_reverses_a_spent_one_into_debt() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (inviter, code) = app.inviter("reviewed@example.com", "198.51.100.7").await;
    let invitee = app
        .invitee("same-office@example.com", "198.51.100.8", &code)
        .await;
    app.pay(&invitee, "72.00", "office").await;
    let held = app.admin_get("/referral-rewards?status=held").await;
    let rows = held["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["inviter_id"], inviter.id.as_str());
    assert_eq!(rows[0]["invitee_id"], invitee.id.as_str());
    assert_eq!(rows[0]["amount_usd"], "0.5");
    let id = rows[0]["id"].as_str().unwrap().to_owned();

    // Approved twice (a double click): credited once.
    for _ in 0..2 {
        let approved = app
            .admin(Method::POST, &format!("/referral-rewards/{id}/approve"))
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 200);
        assert_eq!(approved.json::<Value>().await.unwrap()["status"], "paid");
    }
    assert_eq!(app.balance(&inviter.id).await, dec("0.5"));

    // The inviter spends most of it; then the reward is found to be fake and reversed.
    let spent = app
        .admin(Method::POST, &format!("/accounts/{}/adjust", inviter.id))
        .json(&json!({"amount_usd": "-0.4", "reason": "stands for spending"}))
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
    for _ in 0..2 {
        let reversed = app
            .admin(Method::POST, &format!("/referral-rewards/{id}/reverse"))
            .json(&json!({"reason": "a fake registration"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reversed.status(), 200);
        assert_eq!(
            reversed.json::<Value>().await.unwrap()["status"],
            "reversed"
        );
    }
    assert_eq!(
        app.balance(&inviter.id).await,
        dec("-0.4"),
        "reversed once, into debt"
    );
    let shown = app.get_as(&inviter, "/referrals").await;
    assert_eq!(shown["reversed_usd"], "0.5");
    assert_eq!(shown["earned_usd"], "0");
    let inviter_id: uuid::Uuid = inviter.id.parse().unwrap();
    let kinds: Vec<(String, Decimal)> = app
        .db()
        .await
        .query(
            "SELECT kind, amount FROM ledger WHERE account_id = $1 ORDER BY id",
            &[&inviter_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("referral_reward".to_owned(), dec("0.5")),
            ("adjustment".to_owned(), dec("-0.4")),
            ("referral_reversal".to_owned(), dec("-0.5")),
        ]
    );
    // In debt, the account admits nothing: a key of its own is refused with 402.
    let key: Value = app
        .api(Method::POST, "/keys")
        .bearer_auth(&inviter.token)
        .json(&json!({"name": "after the reversal"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = message_body("claude-haiku-5-5", 16, false, json!({}));
    let refused = app
        .messages(key["key"].as_str().unwrap(), &body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    // Bad input changes nothing.
    let bad = app
        .admin(Method::POST, &format!("/referral-rewards/{id}/reverse"))
        .json(&json!({"reason": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = app
        .admin(
            Method::POST,
            &format!("/referral-rewards/{}/approve", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        app.admin(Method::GET, "/referral-rewards?status=lost")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}
