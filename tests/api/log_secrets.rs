//! No log line holds a secret: the real binary, logging its own crates at `trace`, is taken
//! through every step that handles one (registration, the verification link, login, a key,
//! a proxied call, a password change, a reset, a deletion), and its whole log is then
//! searched for each password, key, session token, emailed token and hash it saw.

use std::io::Read;

use reqwest::Method;
use serde_json::{json, Value};

use crate::customer_keys::{small_message, spawn, PASSWORD};
use crate::helpers::*;
use crate::smtp_sink::SmtpSink;

const NEW_PASSWORD: &str = "second 2 password";
const RESET_PASSWORD: &str = "third 3 password";

#[actix_web::test]
async fn no_log_line_holds_a_password_a_key_a_token_or_a_hash() {
    let sink = SmtpSink::start().await;
    let mut app = spawn(|_| {}).await;
    let log_path = app.db.journal_dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let smtp = sink.url();
    let (child, base) = app
        .serve_binary_instead_with(move |command| {
            command
                .env("TOLLGATE__EMAIL__SMTP_URL", &smtp)
                .env("TOLLGATE__EMAIL__FROM", "noreply@example.com")
                .env("TOLLGATE__ACCOUNTS__SIGNUPS_PER_IP_PER_HOUR", "1000")
                .env("TOLLGATE__ACCOUNTS__SIGNUPS_PER_BLOCK_PER_HOUR", "1000")
                .env("RUST_LOG", "warn,tollgate=trace,tollgate_actors=trace")
                .stderr(log);
        })
        .await;
    app.base = base.clone();
    app.admin_base = base;
    let email = "quiet@example.com";
    let mut secrets: Vec<String> =
        vec![PASSWORD.into(), NEW_PASSWORD.into(), RESET_PASSWORD.into()];

    let registered = app
        .api(Method::POST, "/auth/register")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let id = registered.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let verification = sink.wait_for(email).await.token_of("/verify-email");
    let verified = app
        .api(Method::POST, "/auth/verify-email")
        .json(&json!({ "token": verification }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    secrets.push(verification);
    let session = app.session(email, PASSWORD).await;
    secrets.push(session.clone());
    app.credit(&id, "1").await;
    let (status, key) = app.customer_key(&session, json!({"name": "k"})).await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    secrets.push(secret.clone());
    assert_eq!(
        app.messages(&secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A wrong key and a wrong session are logged as failures, never as themselves.
    let wrong_key = format!("{}X", &secret[..secret.len() - 1]);
    app.messages(&wrong_key, &small_message())
        .send()
        .await
        .unwrap();
    secrets.push(wrong_key);

    let changed = app
        .api(Method::PUT, "/me/password")
        .bearer_auth(&session)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    let asked = app
        .api(Method::POST, "/auth/password-reset")
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    for _ in 0..400 {
        if sink.count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let reset = sink.last().token_of("/reset-password");
    let confirmed = app
        .api(Method::POST, "/auth/password-reset/confirm")
        .json(&json!({"token": reset, "password": RESET_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    secrets.push(reset);
    let last_session = app.session(email, RESET_PASSWORD).await;
    secrets.push(last_session.clone());
    let deleted = app
        .api(Method::DELETE, "/me")
        .bearer_auth(&last_session)
        .json(&json!({ "password": RESET_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    sigterm_and_wait(child).await;
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("customer deleted the account") && text.contains("settled"),
        "the log was captured at the levels asked (info, and the actor's debug)"
    );
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret is in the log");
    }
    assert!(!text.contains("$argon2"), "a password hash is in the log");
}
