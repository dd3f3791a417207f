//! `server.trusted_proxies`: `X-Forwarded-For` names the client only when a trusted proxy
//! sent it. Tests reach tollgate from 127.0.0.1, which plays the proxy when trusted.

use serde_json::json;

use crate::helpers::*;

/// The status of `request`, sent as if forwarded for `forwarded`.
async fn status(request: reqwest::RequestBuilder, forwarded: &str) -> u16 {
    let response = request.header("x-forwarded-for", forwarded).send().await;
    response.unwrap().status().as_u16()
}

/// A request with a wrong API key, as if forwarded for `forwarded`; its status.
async fn guess(app: &TestApp, forwarded: &str) -> u16 {
    let body = message_body("claude-haiku-5-5", 10, false, json!({}));
    status(app.messages("sk-tg-not-a-real-key", &body), forwarded).await
}

async fn metrics_status(app: &TestApp, forwarded: &str) -> u16 {
    status(app.http.get(format!("{}/metrics", app.base)), forwarded).await
}

#[actix_web::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(Default::default(), |s| {
        s.auth.failed_auth_per_minute = 5;
    })
    .await;
    // A new forwarded address on every guess does not give the guesser new allowances.
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(guess(&app, &format!("203.0.113.{i}")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // Nor does it make a loopback client public, or a public one private.
    assert_eq!(metrics_status(&app, "8.8.8.8").await, 200);
}

#[actix_web::test]
async fn a_trusted_proxys_forwarded_address_is_what_the_failed_auth_limiter_counts() {
    let app = spawn_app_with(Default::default(), |s| {
        s.auth.failed_auth_per_minute = 5;
        s.server.trusted_proxies = vec!["127.0.0.0/8".to_string().try_into().unwrap()];
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(guess(&app, "203.0.113.7").await);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    // Another client behind the same proxy has its own allowance...
    assert_eq!(guess(&app, "203.0.113.8").await, 401);
    // ...and the throttled one cannot escape by writing an address of its choosing in front
    // of the one the proxy appended.
    assert_eq!(guess(&app, "198.51.100.1, 203.0.113.7").await, 429);
    // /metrics checks the forwarded client, not the proxy's private address.
    assert_eq!(metrics_status(&app, "8.8.8.8").await, 403);
    assert_eq!(metrics_status(&app, "10.1.2.3").await, 200);
}

#[actix_web::test]
async fn an_unreadable_x_forwarded_for_does_not_make_a_client_the_proxy() {
    let app = spawn_app_with(Default::default(), |s| {
        s.auth.failed_auth_per_minute = 5;
        s.server.trusted_proxies = vec!["127.0.0.0/8".to_string().try_into().unwrap()];
    })
    .await;
    let raw = |bytes: &'static [u8]| reqwest::header::HeaderValue::from_bytes(bytes).unwrap();
    let metrics = |value: reqwest::header::HeaderValue| {
        app.http
            .get(format!("{}/metrics", app.base))
            .header("x-forwarded-for", value)
            .send()
    };
    // A public client that prefixed a byte that is not visible ASCII is still public...
    let status = metrics(raw(b"\x80, 8.8.8.8")).await.unwrap().status();
    assert_eq!(status, 403);
    // ...and one whose whole header is unreadable is not the proxy's private address.
    let status = metrics(raw(b"\x80")).await.unwrap().status();
    assert_eq!(status, 403);
    // Its failed logins count against the address the proxy appended, not the proxy's.
    let body = message_body("claude-haiku-5-5", 10, false, json!({}));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = app
            .messages("sk-tg-not-a-real-key", &body)
            .header("x-forwarded-for", raw(b"\xfe, 203.0.113.7"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    assert_eq!(guess(&app, "203.0.113.7").await, 429);
    // A private client forwarded by the proxy still reads the metrics.
    assert_eq!(metrics_status(&app, "10.1.2.3").await, 200);
}
