//! U+0000 in any text input is refused with 400 naming the field, before it reaches Postgres,
//! which cannot store it in text (Schemathesis found these as 500s; docs/API.md).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use mock_anthropic::MockConfig;

async fn refused_naming(response: reqwest::Response, field: &str) {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
}

async fn session(app: &TestApp) -> String {
    let body = json!({"email": "nul@example.com", "password": "nul-pass-1"});
    let registered = app
        .http
        .post(format!("{}/api/v1/auth/register", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = app
        .http
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_nul_character_in_any_text_input_is_a_400_naming_its_field() {
    let app = spawn_app_with(MockConfig::default(), |settings| {
        settings.accounts.require_email_verification = false;
    })
    .await;
    let token = session(&app).await;
    let api = |method: Method, path: &str| {
        app.http
            .request(method, format!("{}/api/v1{path}", app.base))
            .bearer_auth(&token)
    };
    refused_naming(
        api(Method::POST, "/auth/register")
            .json(&json!({"email": "x@example.com", "password": "pass-word-1", "invite_code": "a\u{0}"}))
            .send()
            .await
            .unwrap(),
        "invite_code",
    )
    .await;
    refused_naming(
        api(Method::POST, "/keys")
            .json(&json!({"name": "a\u{0}"}))
            .send()
            .await
            .unwrap(),
        "name",
    )
    .await;
    refused_naming(
        api(Method::POST, "/keys")
            .json(&json!({"models": ["claude-sonnet-4-5", "\u{0}"]}))
            .send()
            .await
            .unwrap(),
        "models[1]",
    )
    .await;
    for path in ["/usage", "/usage.csv"] {
        refused_naming(
            api(Method::GET, &format!("{path}?model=a%00b"))
                .send()
                .await
                .unwrap(),
            "model",
        )
        .await;
    }
    let account = app.create_account("nul-admin@example.com").await;
    refused_naming(
        app.admin(Method::POST, &format!("/accounts/{account}/credit"))
            .json(&json!({"amount_usd": "1", "reason": "a\u{0}"}))
            .send()
            .await
            .unwrap(),
        "reason",
    )
    .await;
    refused_naming(
        app.admin(Method::POST, &format!("/accounts/{account}/suspend"))
            .json(&json!({"reason": "\u{0}"}))
            .send()
            .await
            .unwrap(),
        "reason",
    )
    .await;
    // Nothing was changed by the refusals.
    let view: Value = app
        .admin(Method::GET, &format!("/accounts/{account}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "active");
    assert_eq!(view["balance"], "0");
}
