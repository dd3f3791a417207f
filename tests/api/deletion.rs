//! Account deletion (`DELETE /api/v1/me`): it needs the password, revokes every key and
//! session, forfeits the balance through the actor with a `forfeiture` ledger entry, frees
//! the email for a new account, keeps the usage and ledger rows, and waits for requests
//! still running so that what they used is billed before the balance is written off.

use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::customer_keys::{small_message, spawn, MODEL, PASSWORD};
use crate::helpers::*;

impl TestApp {
    async fn delete_me(&self, session: &str, body: Value) -> (u16, Value) {
        let response = self
            .api(Method::DELETE, "/me")
            .bearer_auth(session)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The account's ledger rows, oldest first: (kind, amount, balance after).
    async fn ledger_rows(&self, account: &str) -> Vec<(String, Decimal, Decimal)> {
        self.db()
            .await
            .query(
                "SELECT kind, amount, balance_after FROM ledger WHERE account_id = $1 ORDER BY id",
                &[&account.parse::<uuid::Uuid>().unwrap()],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }
}

#[actix_web::test]
async fn deletion_forfeits_the_balance_revokes_everything_and_frees_the_email() {
    let app = spawn(|_| {}).await;
    let email = "leaving@example.com";
    let (id, session) = app.verified_customer(email).await;
    app.credit(&id, "2").await;
    let (_, key) = app.customer_key(&session, json!({"name": "last"})).await;
    let secret = key["key"].as_str().unwrap().to_string();
    assert_eq!(
        app.messages(&secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A wrong password, or none, changes nothing.
    let (status, error) = app
        .delete_me(&session, json!({"password": "not it 123"}))
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["field"], "password");
    let (status, error) = app.delete_me(&session, json!({})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["field"], "password");
    assert_eq!(
        app.messages(&secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "a refused deletion revokes nothing"
    );

    let before = app.wait_settled(&id).await;
    let balance: Decimal = before["balance"].as_str().unwrap().parse().unwrap();
    assert!(balance > Decimal::ZERO);
    let (status, body) = app
        .delete_me(&session, json!({ "password": PASSWORD }))
        .await;
    assert_eq!(status, 204, "{body}");

    assert_eq!(
        app.messages(&secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the key is revoked"
    );
    let me = app
        .api(Method::GET, "/me")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "the session is revoked");
    let login = app
        .api(Method::POST, "/auth/login")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401, "nothing can log in");

    let view = app.view(&id).await;
    assert_eq!(view["status"], "deleted");
    assert_eq!(view["balance"], "0");
    assert!(
        !view["email"].as_str().unwrap().contains("leaving"),
        "{view}"
    );
    let ledger = app.ledger_rows(&id).await;
    let (kind, amount, after) = ledger.last().unwrap().clone();
    assert_eq!(kind, "forfeiture");
    assert_eq!(amount, -balance);
    assert_eq!(after, Decimal::ZERO);
    let books = app.books(&id).await;
    assert_eq!(books.usage_rows, 2, "usage rows stay for the books");
    assert_eq!(books.stored_balance, Decimal::ZERO);

    // The operator cannot bring it back or credit it.
    for path in ["credit", "unsuspend"] {
        let body = if path == "credit" {
            json!({"amount_usd": "1", "reason": "oops"})
        } else {
            json!({})
        };
        let response = app
            .admin(Method::POST, &format!("/accounts/{id}/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 409, "{path}");
    }
    let db = app.db().await;
    let credited = db
        .execute(
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await;
    assert!(credited.is_err(), "the database refuses to credit it too");

    // The address registers again, as a new account.
    let again = app
        .api(Method::POST, "/auth/register")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["id"].as_str().unwrap(), id);
}

#[actix_web::test]
async fn deletion_waits_for_a_running_request_and_bills_it_before_the_forfeiture() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("patient@example.com").await;
    app.credit(&id, "2").await;
    let (_, key) = app.customer_key(&session, json!({})).await;
    let secret = key["key"].as_str().unwrap().to_string();
    let slow = message_body(
        MODEL,
        16,
        false,
        json!({"output_tokens": 4, "ttft_ms": 1500}),
    );
    let running = app.messages(&secret, &slow).send();
    let deletion = async {
        // Let the request be admitted first.
        app.wait_view(&id, |view| view["held"] != "0").await;
        app.delete_me(&session, json!({ "password": PASSWORD }))
            .await
    };
    let (answered, (status, body)) = futures_util::future::join(running, deletion).await;
    assert_eq!(
        answered.unwrap().status(),
        200,
        "the running request is answered"
    );
    assert_eq!(status, 204, "{body}");
    let books = app.books(&id).await;
    assert_eq!(books.usage_rows, 1, "the running request is billed");
    assert_eq!(books.stored_balance, Decimal::ZERO);
    let ledger = app.ledger_rows(&id).await;
    let kinds: Vec<_> = ledger.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["credit", "usage", "forfeiture"]);
    let (_, forfeited, after) = &ledger[2];
    assert_eq!(*forfeited, -(Decimal::from(2) - books.usage_cost));
    assert_eq!(*after, Decimal::ZERO);
}

#[actix_web::test]
async fn an_account_that_owes_money_is_not_deleted_and_nothing_changes() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("debtor@example.com").await;
    app.credit(&id, "1").await;
    let (_, key) = app.customer_key(&session, json!({})).await;
    let adjusted = app
        .admin(Method::POST, &format!("/accounts/{id}/adjust"))
        .json(&json!({"amount_usd": "-3", "reason": "chargeback"}))
        .send()
        .await
        .unwrap();
    assert_eq!(adjusted.status(), 200);
    let (status, error) = app
        .delete_me(&session, json!({ "password": PASSWORD }))
        .await;
    assert_eq!(status, 409, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("owes 2 USD"));
    let view = app.view(&id).await;
    assert_eq!(view["status"], "active");
    let keys = app
        .api(Method::GET, "/keys")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    let keys: Value = keys.json().await.unwrap();
    assert!(keys["data"][0]["revoked_at"].is_null());
    assert_eq!(keys["data"][0]["id"], key["id"]);
}

#[actix_web::test]
async fn closing_an_account_twice_writes_one_forfeiture() {
    use tollgate_actors::{BalanceChange, CreditKind, LedgerStore};
    let app = spawn(|_| {}).await;
    let (id, _) = app.verified_customer("twice@example.com").await;
    app.credit(&id, "4").await;
    let account: uuid::Uuid = id.parse().unwrap();
    let store = app.store();
    // What a retry does when the first close committed but its answer was lost.
    let forfeiture = BalanceChange {
        id: account,
        account_id: account,
        kind: CreditKind::Forfeiture,
        amount: Decimal::from(-4),
        reason: "account deleted by its owner".into(),
        idempotency: None,
        settles: None,
    };
    for _ in 0..2 {
        store
            .close_account(account, Some(&forfeiture), "deleted by its owner")
            .await
            .unwrap();
    }
    let ledger = app.ledger_rows(&id).await;
    let forfeitures: Vec<_> = ledger
        .iter()
        .filter(|(kind, _, _)| kind == "forfeiture")
        .collect();
    assert_eq!(forfeitures.len(), 1, "{ledger:?}");
    assert_eq!(app.books(&id).await.stored_balance, Decimal::ZERO);
}

#[actix_web::test]
async fn two_deletions_at_once_close_the_account_once_and_neither_fails() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("hasty@example.com").await;
    app.credit(&id, "3").await;
    let body = json!({ "password": PASSWORD });
    let (first, second) = futures_util::future::join(
        app.delete_me(&session, body.clone()),
        app.delete_me(&session, body),
    )
    .await;
    // The one that finds the session already ended is 401; neither is a 500.
    for (status, answer) in [&first, &second] {
        assert!([204, 401].contains(status), "{status} {answer}");
    }
    assert!(first.0 == 204 || second.0 == 204, "{first:?} {second:?}");
    let forfeitures = app
        .ledger_rows(&id)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "forfeiture")
        .count();
    assert_eq!(forfeitures, 1);
    assert_eq!(app.view(&id).await["status"], "deleted");
    assert_eq!(app.books(&id).await.stored_balance, Decimal::ZERO);
}
