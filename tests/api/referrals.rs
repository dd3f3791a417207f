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

#[actix_web::test]
async fn an_operators_invitation_code_sets_its_reward_and_runs_out_after_its_uses() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    let (affiliate, _) = app.inviter("affiliate@example.com", "198.51.100.7").await;
    let made = app
        .admin(Method::POST, "/invitations")
        .json(
            &json!({"code": "spring-2027", "reward": {"kind": "fixed", "amount_usd": "2"},
            "max_uses": 1, "inviter_id": affiliate.id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    assert_eq!(made["code"], "SPRING-2027");
    assert_eq!(made["reward"], json!({"kind": "fixed", "amount_usd": "2"}));
    // Typed in lower case; its one use taken.
    let invitee = app
        .invitee("spring@example.com", "203.0.113.9", "spring-2027")
        .await;
    let late = app
        .api(Method::POST, "/auth/register")
        .header("x-forwarded-for", "203.0.113.10")
        .json(&json!({"email": "too-late@example.com", "password": PASSWORD, "invite_code": "SPRING-2027"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
    assert_eq!(
        late.json::<Value>().await.unwrap()["error"]["field"],
        "invite_code"
    );
    app.pay(&invitee, "720.00", "spring-pay").await;
    assert_eq!(
        app.balance(&affiliate.id).await,
        dec("2"),
        "the code's fixed reward"
    );
    let listed = app.admin_get("/invitations").await;
    assert_eq!(listed["data"][0]["uses"], 1);

    // A ratio code: 10 % of 100 USD.
    let ratio = app
        .admin(Method::POST, "/invitations")
        .json(&json!({"reward": {"kind": "ratio", "ratio": "0.1"}, "inviter_id": affiliate.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(ratio.status(), 201);
    let code = ratio.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.invitee("ratio@example.com", "192.0.2.1", &code).await;
    app.pay(&second, "720.00", "ratio-pay").await;
    assert_eq!(app.balance(&affiliate.id).await, dec("12"));
    // A code without an inviter lets people register and rewards no one.
    let open = app
        .admin(Method::POST, "/invitations")
        .json(&json!({"code": "OPEN-DOOR", "reward": {"kind": "fixed", "amount_usd": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 201);
    let walk_in = app
        .invitee("walk-in@example.com", "192.0.2.50", "OPEN-DOOR")
        .await;
    app.pay(&walk_in, "72.00", "walk-in").await;
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM referral_rewards", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
}

#[actix_web::test]
async fn bad_invitations_get_a_400_that_names_the_field() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    for (body, field) in [
        (
            json!({"code": "ab", "reward": {"kind": "fixed", "amount_usd": "1"}}),
            "code",
        ),
        (
            json!({"code": "NO SPACES", "reward": {"kind": "fixed", "amount_usd": "1"}}),
            "code",
        ),
        (
            json!({"reward": {"kind": "ratio", "ratio": "1.5"}}),
            "reward.ratio",
        ),
        (
            json!({"reward": {"kind": "fixed", "amount_usd": "0"}}),
            "reward.amount_usd",
        ),
        (
            json!({"reward": {"kind": "fixed", "amount_usd": "1"}, "max_uses": 0}),
            "max_uses",
        ),
        (
            json!({"reward": {"kind": "fixed", "amount_usd": "1"}, "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let response = app
            .admin(Method::POST, "/invitations")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let unknown = app
        .admin(Method::POST, "/invitations")
        .json(&json!({"reward": {"kind": "fixed", "amount_usd": "1"}, "inviter_id": uuid::Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let first = app
        .admin(Method::POST, "/invitations")
        .json(&json!({"code": "TWICE", "reward": {"kind": "fixed", "amount_usd": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let again = app
        .admin(Method::POST, "/invitations")
        .json(&json!({"code": "twice", "reward": {"kind": "fixed", "amount_usd": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        app.admin_get("/invitations").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[actix_web::test]
async fn a_redemption_earns_the_reward_only_where_the_setting_says_so() {
    for counts in [false, true] {
        let app = spawn_app_with(MockConfig::default(), |settings| {
            behind_a_proxy(settings);
            settings.payments.redemption_counts_as_first_recharge = counts;
        })
        .await;
        let (inviter, code) = app
            .inviter("code-inviter@example.com", "198.51.100.7")
            .await;
        let invitee = app
            .invitee("code-invitee@example.com", "203.0.113.9", &code)
            .await;
        let made: Value = app
            .admin(Method::POST, "/redemption-codes")
            .json(&json!({"count": 1, "amount_usd": "20"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let redeemed = app
            .api(Method::POST, "/redeem")
            .bearer_auth(&invitee.token)
            .json(&json!({"code": made["codes"][0]}))
            .send()
            .await
            .unwrap();
        assert_eq!(redeemed.status(), 200);
        let expected = if counts { dec("1") } else { Decimal::ZERO };
        assert_eq!(app.balance(&inviter.id).await, expected, "counts: {counts}");
    }
}

#[actix_web::test]
async fn a_reward_is_held_when_an_address_is_unknown_and_a_pending_one_can_be_reversed() {
    let app = spawn_app_with(MockConfig::default(), behind_a_proxy).await;
    // An account an operator made has no signup address.
    let affiliate = app.create_account("made-by-hand@example.com").await;
    let affiliate_id: uuid::Uuid = affiliate.parse().unwrap();
    let code: String = app
        .db()
        .await
        .query_one(
            "SELECT invite_code FROM accounts WHERE id = $1",
            &[&affiliate_id],
        )
        .await
        .unwrap()
        .get(0);
    let invitee = app
        .invitee("far-away@example.com", "203.0.113.9", &code)
        .await;
    app.pay(&invitee, "72.00", "unknown-address").await;
    let held = app.admin_get("/referral-rewards?status=held").await;
    assert_eq!(
        held["data"].as_array().unwrap().len(),
        1,
        "held: the inviter's address is unknown"
    );
    assert_eq!(app.balance(&affiliate).await, Decimal::ZERO);
    // A reward that is pending (its credit under way) can be cancelled too.
    let id: uuid::Uuid = held["data"][0]["id"].as_str().unwrap().parse().unwrap();
    app.db()
        .await
        .execute(
            "UPDATE referral_rewards SET status = 'pending' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let reversed = app
        .admin(Method::POST, &format!("/referral-rewards/{id}/reverse"))
        .json(&json!({"reason": "not a real affiliate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reversed.status(), 200);
    assert_eq!(
        reversed.json::<Value>().await.unwrap()["status"],
        "reversed"
    );
    // Never paid: nothing debited, and nothing "taken back" in the totals.
    assert_eq!(app.balance(&affiliate).await, Decimal::ZERO);
    let approve = app
        .admin(Method::POST, &format!("/referral-rewards/{id}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status(), 409, "a reversed reward is not approved");
}

#[actix_web::test]
async fn a_later_recharge_earns_nothing_when_the_first_earned_nothing() {
    let app = spawn_app_with(MockConfig::default(), |settings| {
        behind_a_proxy(settings);
    })
    .await;
    let (inviter, code) = app
        .inviter("second-chance@example.com", "198.51.100.7")
        .await;
    let invitee = app
        .invitee("paid-before@example.com", "203.0.113.9", &code)
        .await;
    app.pay(&invitee, "72.00", "first").await;
    let invitee_id: uuid::Uuid = invitee.id.parse().unwrap();
    // As if the first recharge had earned nothing (the ratio was 0 then).
    app.db()
        .await
        .execute(
            "DELETE FROM referral_rewards WHERE invitee_id = $1",
            &[&invitee_id],
        )
        .await
        .unwrap();
    let before = app.balance(&inviter.id).await;
    app.pay(&invitee, "72.00", "second").await;
    assert_eq!(
        app.balance(&inviter.id).await,
        before,
        "only the first recharge counts"
    );
}
