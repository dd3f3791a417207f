//! `MockServer::start` works from every runtime tollgate's tests and binaries use.

use actix_web::{web, App, HttpServer};
use mock_anthropic::{MockConfig, MockServer};
use serde_json::json;

use crate::helpers::*;

async fn one_round_trip(server: &MockServer) -> u16 {
    post(server, "/v1/messages", &body(json!({})))
        .await
        .status()
        .as_u16()
}

#[actix_web::test]
async fn starts_from_an_actix_web_test() {
    let server = start(MockConfig::default()).await;
    assert_eq!(one_round_trip(&server).await, 200);
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert_ne!(server.addr().port(), 0);
    server.stop().await;
}

#[tokio::test]
async fn starts_from_a_current_thread_tokio_test() {
    let server = start(MockConfig::default()).await;
    assert_eq!(one_round_trip(&server).await, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_several_workers_and_stops_cleanly() {
    let server = start(MockConfig {
        workers: 2,
        ..MockConfig::default()
    })
    .await;
    let trips = (0..20).map(|_| one_round_trip(&server));
    let statuses = futures_util::future::join_all(trips).await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(server.stats().messages, 20);
    let url = server.base_url();
    server.stop().await;
    assert!(
        client()
            .get(format!("{url}/mock/stats"))
            .send()
            .await
            .is_err(),
        "the port is closed"
    );
}

/// What `tollgate demo` does: start the mock from inside a running actix-web app.
async fn start_mock_and_ask_it() -> String {
    let server = start(MockConfig::default()).await;
    let status = one_round_trip(&server).await;
    server.stop().await;
    status.to_string()
}

#[actix_web::test]
async fn starts_from_inside_a_running_actix_web_app() {
    let app = HttpServer::new(|| App::new().route("/", web::get().to(start_mock_and_ask_it)))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
    let addr = app.addrs()[0];
    let app = app.run();
    let handle = app.handle();
    actix_web::rt::spawn(app);

    let answer = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(answer, "200");
    handle.stop(false).await;
}

#[test]
fn the_server_and_its_futures_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    send(&MockServer::start(MockConfig::default(), "127.0.0.1:0"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(start(MockConfig::default()));
    send_and_sync(&server);
    let stopping = server.stop();
    send(&stopping);
    runtime.block_on(stopping);
}
