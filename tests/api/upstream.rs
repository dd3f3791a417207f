//! How tollgate reaches the upstream: through an HTTP proxy's CONNECT tunnel when configured.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mock_anthropic::MockConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// A minimal HTTP CONNECT proxy on loopback that records the head of every tunnel request.
struct ConnectProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, Arc::clone(&log)));
            }
        });
        ConnectProxy { addr, heads }
    }
}

async fn tunnel(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read_exact(&mut byte).await.is_err() {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    log.lock().unwrap().push(head);
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[actix_web::test]
async fn a_configured_proxy_carries_every_upstream_call_and_billing_is_unchanged() {
    let proxy = ConnectProxy::start().await;
    let proxy_url = format!("http://operator:s3cret@{}", proxy.addr);
    let app = spawn_app_with(MockConfig::default(), |settings| {
        settings.upstreams[0].proxy = Some(proxy_url);
    })
    .await;
    let customer = app.customer("5").await;
    for stream in [false, true] {
        let body = message_body("claude-opus-5-5", 50, stream, json!({"output_tokens": 7}));
        let response = app.messages(&customer.key, &body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("\"output_tokens\":7"), "{text}");
    }
    let heads = proxy.heads.lock().unwrap().clone();
    let mock = app.mock.base_url();
    let target = mock.trim_start_matches("http://");
    assert!(!heads.is_empty(), "no request went through the proxy");
    for head in &heads {
        assert!(
            head.starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
            "{head}"
        );
        // base64("operator:s3cret")
        assert!(
            head.contains("Proxy-Authorization: Basic b3BlcmF0b3I6czNjcmV0\r\n"),
            "{head}"
        );
    }
    app.wait_settled(&customer.id).await;
    app.flush().await;
    let books = app.books(&customer.id).await;
    assert_eq!(books.usage_rows, 2);
    books.assert_reconciled();
}

/// The value of `tollgate_upstream_attempts_total` for one upstream and result.
async fn attempts(app: &TestApp, upstream: &str, result: &str) -> f64 {
    let text = app.metrics_text().await;
    let upstream_label = format!("upstream=\"{upstream}\"");
    let result_label = format!("result=\"{result}\"");
    text.lines()
        .filter(|line| line.starts_with("tollgate_upstream_attempts_total{"))
        .filter(|line| line.contains(&upstream_label) && line.contains(&result_label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn every_upstream_attempt_is_reported_to_the_pool_as_answered_or_failed() {
    // Names of their own, since every application in this process shares one recorder.
    let reachable = format!("reachable-{}", uuid::Uuid::new_v4().simple());
    let name = reachable.clone();
    let app = spawn_app_with(MockConfig::default(), move |settings| {
        settings.upstreams[0].name = name;
    })
    .await;
    let customer = app.customer("5").await;
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    assert_eq!(
        app.messages(&customer.key, &body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = message_body("claude-opus-5-5", 10, false, json!({"status": 529}));
    assert_eq!(
        app.messages(&customer.key, &refused)
            .send()
            .await
            .unwrap()
            .status(),
        529
    );
    assert_eq!(attempts(&app, &reachable, "answered").await, 2.0);
    assert_eq!(attempts(&app, &reachable, "failed").await, 0.0);

    let unreachable = format!("unreachable-{}", uuid::Uuid::new_v4().simple());
    let name = unreachable.clone();
    let app = spawn_app_with(MockConfig::default(), move |settings| {
        settings.upstreams[0].name = name;
        // Nothing listens on port 1.
        settings.upstreams[0].base_url = "http://127.0.0.1:1".into();
    })
    .await;
    let customer = app.customer("5").await;
    assert_eq!(
        app.messages(&customer.key, &body)
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(attempts(&app, &unreachable, "failed").await, 1.0);
    assert_eq!(attempts(&app, &unreachable, "answered").await, 0.0);
}
