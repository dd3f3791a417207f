//! The customer API under `/api/v1`: registration, verification, sessions and `/me`.

use mock_anthropic::MockConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate::accounts::TokenHash;

use crate::helpers::*;
use crate::smtp_sink::{Received, SmtpSink};

const PASSWORD: &str = "correct horse 42";

impl TestApp {
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{}", self.base, path))
    }

    pub async fn register(&self, email: &str) -> Value {
        let response = self
            .api(reqwest::Method::POST, "/auth/register")
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.api(reqwest::Method::POST, "/auth/login")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn session(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.api(reqwest::Method::GET, "/me")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Stores an emailed token for the account as the service would, since this test cannot
    /// read the email: the service keeps only the token's hash.
    async fn plant_token(&self, account: &str, purpose: &str, token: &str) {
        let hash = TokenHash::of(token);
        let id: uuid::Uuid = account.parse().unwrap();
        self.db()
            .await
            .execute(
                "INSERT INTO account_tokens (token_hash, account_id, purpose, expires_at)
                 VALUES ($1, $2, $3, now() + interval '10 minutes')",
                &[&hash.as_bytes(), &id, &purpose],
            )
            .await
            .unwrap();
    }
}

async fn spawn_customers(tweak: impl FnOnce(&mut tollgate::config::Settings)) -> TestApp {
    spawn_app_with(MockConfig::default(), |settings| {
        settings.accounts.signups_per_ip_per_hour = 1_000;
        settings.accounts.signups_per_block_per_hour = 1_000;
        tweak(settings);
    })
    .await
}

#[actix_web::test]
async fn a_customer_registers_verifies_logs_in_and_sees_the_live_balance() {
    let app = spawn_customers(|_| {}).await;
    let created = app.register("  New.Buyer@Example.COM ").await;
    assert_eq!(created["email"], "new.buyer@example.com");
    assert_eq!(created["status"], "active");
    assert_eq!(created["email_verified"], false);
    let id = created["id"].as_str().unwrap();
    // The id is the admin API's account id.
    assert_eq!(app.view(id).await["email"], "new.buyer@example.com");

    let token = app.session("NEW.buyer@example.com", PASSWORD).await;
    let me: Value = app.me(&token).await.json().await.unwrap();
    assert_eq!(
        me["email_verified"], false,
        "an unverified account can see /me"
    );
    assert_eq!(me["balance"], "0");
    assert_eq!(me["available"], "0");
    assert!(me["invite_code"].as_str().is_some_and(|c| c.len() >= 8));
    assert!(me["created_at"].is_string());

    app.plant_token(id, "verify_email", "verification-token-1")
        .await;
    let verified = app
        .api(reqwest::Method::POST, "/auth/verify-email")
        .json(&json!({"token": "verification-token-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let again = app
        .api(reqwest::Method::POST, "/auth/verify-email")
        .json(&json!({"token": "verification-token-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "a token is single use");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["field"], "token");

    app.credit(id, "12.5").await;
    let me: Value = app.me(&token).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["balance"], "12.5");
    assert_eq!(me["held"], "0");
    assert_eq!(me["available"], "12.5");
    assert_eq!(me["id"], id);
    let stored: String = app
        .db()
        .await
        .query_one(
            "SELECT password_hash FROM accounts WHERE id = $1",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
}

#[actix_web::test]
async fn an_email_taken_in_another_case_is_a_conflict_that_says_only_that() {
    let app = spawn_customers(|_| {}).await;
    app.register("taken@example.com").await;
    let response = app
        .api(reqwest::Method::POST, "/auth/register")
        .json(&json!({"email": "TAKEN@Example.com", "password": "another pass 9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(
        body["error"]["message"],
        "an account with this email already exists"
    );
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[actix_web::test]
async fn bad_registrations_name_the_field_and_store_nothing() {
    let app = spawn_customers(|settings| {
        settings.accounts.blocked_email_domains = vec!["spam.example".into()];
    })
    .await;
    let long = "x".repeat(2_000);
    for (body, field) in [
        (
            json!({"email": "nope", "password": PASSWORD}),
            Some("email"),
        ),
        (
            json!({"email": "a@b.co", "password": "short1"}),
            Some("password"),
        ),
        (
            json!({"email": "a@b.co", "password": "lettersonly"}),
            Some("password"),
        ),
        (
            json!({"email": "a@b.co", "password": 12345678}),
            Some("password"),
        ),
        (
            json!({"email": ["a@b.co"], "password": PASSWORD}),
            Some("email"),
        ),
        (json!({"email": "a@b.co"}), Some("password")),
        (
            json!({"email": "a@b.co", "password": PASSWORD, "admin": true}),
            Some("admin"),
        ),
        (
            json!({"email": "a@b.co", "password": long}),
            Some("password"),
        ),
        (
            json!({"email": "a@b.co", "password": PASSWORD, "invite_code": "NOSUCHCODE"}),
            Some("invite_code"),
        ),
        (
            json!({"email": "a@b.co", "password": PASSWORD, "language": "fr"}),
            Some("language"),
        ),
        (
            json!({"email": "a@x.spam.example", "password": PASSWORD}),
            Some("email"),
        ),
        (json!("a string"), None),
    ] {
        let response = app
            .api(reqwest::Method::POST, "/auth/register")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "invalid_request");
        assert_eq!(answer["error"]["field"].as_str(), field, "{body}");
    }
    let not_json = app
        .api(reqwest::Method::POST, "/auth/register")
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let huge = app
        .api(reqwest::Method::POST, "/auth/register")
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let error: Value = huge.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[actix_web::test]
async fn an_invite_code_from_me_registers_an_invitee() {
    let app = spawn_customers(|_| {}).await;
    app.register("inviter@example.com").await;
    let token = app.session("inviter@example.com", PASSWORD).await;
    let me: Value = app.me(&token).await.json().await.unwrap();
    let code = me["invite_code"].as_str().unwrap();
    let response = app
        .api(reqwest::Method::POST, "/auth/register")
        .json(&json!({"email": "invitee@example.com", "password": PASSWORD, "invite_code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let invitee: Value = response.json().await.unwrap();
    let inviter: uuid::Uuid = app
        .db()
        .await
        .query_one(
            "SELECT invited_by FROM accounts WHERE id = $1",
            &[&invitee["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(inviter.to_string(), me["id"].as_str().unwrap());
}

#[actix_web::test]
async fn signups_are_throttled_per_address_with_retry_after() {
    let app = spawn_app_with(MockConfig::default(), |settings| {
        settings.accounts.signups_per_ip_per_hour = 2;
    })
    .await;
    app.register("one@example.com").await;
    app.register("two@example.com").await;
    let response = app
        .api(reqwest::Method::POST, "/auth/register")
        .json(&json!({"email": "three@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[actix_web::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_customers(|_| {}).await;
    app.register("known@example.com").await;
    let wrong = app.login("known@example.com", "not the password 1").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"]["code"], "unauthorized");
}

#[actix_web::test]
async fn failed_logins_are_throttled_per_account_with_retry_after() {
    let app = spawn_customers(|settings| {
        settings.accounts.login_failures_per_account_per_minute = 3;
        settings.accounts.login_failures_per_ip_per_minute = 100;
    })
    .await;
    app.register("target@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            app.login("target@example.com", "wrong guess 1")
                .await
                .status(),
        );
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    // Even the right password is refused while the account is throttled.
    let right = app.login("target@example.com", PASSWORD).await;
    assert_eq!(right.status(), 429);
    let wait: u64 = right.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
}

#[actix_web::test]
async fn logout_revokes_the_session() {
    let app = spawn_customers(|_| {}).await;
    app.register("leaving@example.com").await;
    let token = app.session("leaving@example.com", PASSWORD).await;
    assert_eq!(app.me(&token).await.status(), 200);
    let out = app
        .api(reqwest::Method::POST, "/auth/logout")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = app.me(&token).await;
    assert_eq!(after.status(), 401);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    for bad in ["", "tgs_unknown", "garbage"] {
        assert_eq!(app.me(bad).await.status(), 401);
    }
    let no_header = app.api(reqwest::Method::GET, "/me").send().await.unwrap();
    assert_eq!(no_header.status(), 401);
}

#[actix_web::test]
async fn an_expired_session_is_refused() {
    let app = spawn_customers(|_| {}).await;
    app.register("late@example.com").await;
    let token = app.session("late@example.com", PASSWORD).await;
    app.db()
        .await
        .execute(
            "UPDATE sessions SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app.me(&token).await.status(), 401);
}

#[actix_web::test]
async fn changing_the_password_revokes_every_other_session() {
    let app = spawn_customers(|_| {}).await;
    app.register("mover@example.com").await;
    let kept = app.session("mover@example.com", PASSWORD).await;
    let other = app.session("mover@example.com", PASSWORD).await;
    let wrong = app
        .api(reqwest::Method::PUT, "/me/password")
        .bearer_auth(&kept)
        .json(&json!({"current_password": "not it 123", "new_password": "brand new 77"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["error"]["field"], "current_password");
    assert_eq!(
        app.me(&other).await.status(),
        200,
        "a refused change revokes nothing"
    );
    let changed = app
        .api(reqwest::Method::PUT, "/me/password")
        .bearer_auth(&kept)
        .json(&json!({"current_password": PASSWORD, "new_password": "brand new 77"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    assert_eq!(app.me(&kept).await.status(), 200);
    assert_eq!(app.me(&other).await.status(), 401);
    assert_eq!(app.login("mover@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("mover@example.com", "brand new 77")
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn a_password_reset_sets_the_new_password_once_and_ends_every_session() {
    let app = spawn_customers(|_| {}).await;
    let created = app.register("forgetful@example.com").await;
    let old = app.session("forgetful@example.com", PASSWORD).await;
    for email in ["forgetful@example.com", "nobody@example.com"] {
        let asked = app
            .api(reqwest::Method::POST, "/auth/password-reset")
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), 202, "{email}");
    }
    let issued: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM account_tokens WHERE purpose = 'password_reset' AND expires_at < now() + interval '31 minutes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        issued, 1,
        "one token, for the account that exists, for 30 minutes"
    );
    app.plant_token(
        created["id"].as_str().unwrap(),
        "password_reset",
        "reset-token-1",
    )
    .await;
    let confirm = |password: &'static str| {
        app.api(reqwest::Method::POST, "/auth/password-reset/confirm")
            .json(&json!({"token": "reset-token-1", "password": password}))
            .send()
    };
    assert_eq!(confirm("reset pass 55").await.unwrap().status(), 200);
    assert_eq!(app.me(&old).await.status(), 401, "the old sessions end");
    assert_eq!(
        confirm("second try 66").await.unwrap().status(),
        400,
        "single use"
    );
    assert_eq!(
        app.login("forgetful@example.com", PASSWORD).await.status(),
        401
    );
    assert_eq!(
        app.login("forgetful@example.com", "reset pass 55")
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn sessions_and_api_keys_never_stand_in_for_each_other() {
    // The account needs a key without following its link.
    let app =
        spawn_customers(|settings| settings.accounts.require_email_verification = false).await;
    let created = app.register("both@example.com").await;
    let id = created["id"].as_str().unwrap();
    app.credit(id, "5").await;
    let (key, _) = app.create_key(id).await;
    let token = app.session("both@example.com", PASSWORD).await;
    let body = message_body("claude-opus-5-5", 16, false, json!({}));
    let with_session = app.messages(&token, &body).send().await.unwrap();
    assert_eq!(with_session.status(), 401);
    let with_key = app.me(&key).await;
    assert_eq!(with_key.status(), 401);
    let admin_with_session = app
        .http
        .get(format!("{}/admin/v1/accounts/{id}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin_with_session.status(), 401);
}

#[actix_web::test]
async fn one_customers_session_only_ever_reads_its_own_account() {
    let app = spawn_customers(|_| {}).await;
    let a = app.register("a@example.com").await;
    let b = app.register("b@example.com").await;
    app.credit(b["id"].as_str().unwrap(), "7").await;
    let token_a = app.session("a@example.com", PASSWORD).await;
    let token_b = app.session("b@example.com", PASSWORD).await;
    let me_a: Value = app.me(&token_a).await.json().await.unwrap();
    let me_b: Value = app.me(&token_b).await.json().await.unwrap();
    assert_eq!(me_a["id"], a["id"]);
    assert_eq!(me_a["balance"], "0");
    assert_eq!(me_b["id"], b["id"]);
    assert_eq!(me_b["balance"], "7");
    // A's logout ends only A's session.
    app.api(reqwest::Method::POST, "/auth/logout")
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(app.me(&token_b).await.status(), 200);
}

#[actix_web::test]
async fn no_answer_or_stored_row_holds_a_password_or_a_token() {
    let app = spawn_customers(|_| {}).await;
    let created = app.register("secretive@example.com").await;
    let login: Value = app
        .login("secretive@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    assert!(token.starts_with("tgs_") && token.len() >= 36);
    assert!(login["expires_at"].is_string());
    let me = app.me(token).await.text().await.unwrap();
    for text in [created.to_string(), me] {
        assert!(!text.contains(PASSWORD) && !text.contains(token) && !text.contains("argon2"));
    }
    let stored: Vec<u8> = app
        .db()
        .await
        .query_one("SELECT token_hash FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, TokenHash::of(token).as_bytes());
}

async fn spawn_with_mail(sink: &SmtpSink) -> TestApp {
    let url = sink.url();
    spawn_customers(move |settings| {
        settings.email.smtp_url = url;
        settings.email.from = "tollgate <noreply@example.com>".into();
        settings.server.public_url = "https://tollgate.example".into();
    })
    .await
}

#[actix_web::test]
async fn the_verification_link_arrives_by_smtp_and_verifies_the_account() {
    let sink = SmtpSink::start().await;
    let app = spawn_with_mail(&sink).await;
    let created = app.register("mailed@example.com").await;
    let mail = sink.wait_for("mailed@example.com").await;
    assert!(mail
        .text()
        .contains("https://tollgate.example/verify-email?token="));
    assert!(mail.data.contains("Verify your email"));
    let token = mail.token_of("/verify-email");
    assert_eq!(token.len(), 64);
    let session = app.session("mailed@example.com", PASSWORD).await;
    let verified = app
        .api(reqwest::Method::POST, "/auth/verify-email")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    app.credit(created["id"].as_str().unwrap(), "3.25").await;
    let me: Value = app.me(&session).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["balance"], "3.25");
    // A sent email's body, which carried the token, is erased from the outbox.
    let body: String = app
        .db()
        .await
        .query_one(
            "SELECT body FROM email_outbox WHERE sent_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "");
}

#[actix_web::test]
async fn a_password_reset_by_email_in_chinese_ends_the_old_sessions() {
    let sink = SmtpSink::start().await;
    let app = spawn_with_mail(&sink).await;
    let response = app
        .api(reqwest::Method::POST, "/auth/register")
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")
        .json(&json!({"email": "zhong@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    sink.wait_for("zhong@example.com").await;
    let old = app.session("zhong@example.com", PASSWORD).await;
    let asked = app
        .api(reqwest::Method::POST, "/auth/password-reset")
        .json(&json!({"email": "zhong@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    for _ in 0..400 {
        if sink.count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(sink.count(), 2);
    let reset: Received = sink.last();
    assert!(reset.text().contains("重置"), "{}", reset.text());
    let token = reset.token_of("/reset-password");
    let confirmed = app
        .api(reqwest::Method::POST, "/auth/password-reset/confirm")
        .json(&json!({"token": token, "password": "new secret 88"}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(app.me(&old).await.status(), 401);
    assert_eq!(
        app.login("zhong@example.com", "new secret 88")
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn a_mail_server_that_is_down_loses_no_registration_and_is_counted() {
    let closed = free_port();
    let app = spawn_customers(move |settings| {
        settings.email.smtp_url = format!("smtp://127.0.0.1:{closed}");
        settings.email.from = "noreply@example.com".into();
    })
    .await;
    app.register("patient@example.com").await;
    for _ in 0..400 {
        if app
            .metrics_text()
            .await
            .contains("tollgate_email_send_failures_total")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(app.metric("tollgate_email_send_failures_total").await >= 1.0);
    // The failure is counted before its attempt is written back: wait for the write.
    let db = app.db().await;
    let mut row = None;
    for _ in 0..200 {
        let read = db
            .query_one("SELECT attempts, sent_at IS NULL FROM email_outbox", &[])
            .await
            .unwrap();
        if read.get::<_, i32>(0) >= 1 {
            row = Some(read);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let row = row.expect("the failed attempt is recorded");
    assert!(row.get::<_, bool>(1), "still queued for a retry");
    assert_eq!(
        app.login("patient@example.com", PASSWORD).await.status(),
        200
    );
}

/// Medians of the login time for a wrong password and for an unknown email, over a hundred
/// tries each, interleaved: the bound is generous, a factor of two, since a missing dummy
/// hash would make the unknown email many times faster (about 30 ms against 1 ms here).
#[actix_web::test]
async fn an_unknown_email_takes_as_long_to_refuse_as_a_wrong_password() {
    let app = spawn_customers(|settings| {
        settings.accounts.login_failures_per_ip_per_minute = 0;
        settings.accounts.login_failures_per_account_per_minute = 0;
    })
    .await;
    app.register("timed@example.com").await;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..100 {
        for (email, times) in [
            ("timed@example.com", &mut wrong),
            ("nobody@example.com", &mut unknown),
        ] {
            let started = std::time::Instant::now();
            let response = app.login(email, &format!("guess number {i}")).await;
            times.push(started.elapsed());
            assert_eq!(response.status(), 401);
        }
    }
    let median = |times: &mut Vec<std::time::Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (wrong, unknown) = (median(&mut wrong), median(&mut unknown));
    eprintln!("median login refusal: wrong password {wrong:?}, unknown email {unknown:?}");
    assert!(
        unknown * 2 > wrong && wrong * 2 > unknown,
        "wrong password {wrong:?}, unknown email {unknown:?}"
    );
}
