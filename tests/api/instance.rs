//! One tollgate per database: a second instance would hold every balance in memory again and
//! could spend it whole a second time.

use serde_json::json;
use tollgate::startup::Application;

use crate::helpers::*;

#[actix_web::test]
async fn a_second_instance_on_the_same_database_refuses_to_start_and_says_why() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;

    let second = Application::build(app.settings.clone()).await;
    let message = format!(
        "{:#}",
        second.err().expect("the second instance must not start")
    );
    assert!(
        message.contains("another tollgate instance is running against this database"),
        "{message}"
    );
    assert!(message.contains("backend pid"), "{message}");

    // The real binary, as an operator would start it: it exits at once, saying why.
    let output = app.serve_command("127.0.0.1:0").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another tollgate instance"), "{stderr}");

    // The first instance is untouched and still bills.
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    let response = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.wait_settled(&customer.id).await;
    app.flush().await;
    app.books(&customer.id).await.assert_reconciled();
}

#[actix_web::test]
async fn an_instance_that_stopped_leaves_the_database_to_the_next_one() {
    let app = spawn_app().await;
    let settings = app.settings.clone();
    let db = app.shut_down().await;

    let next = Application::build(settings)
        .await
        .expect("the next instance starts once the first has stopped");
    let shutdown = next.shutdown_trigger();
    let stopped = actix_web::rt::spawn(next.run_until_stopped());
    shutdown.cancel();
    stopped.await.unwrap().unwrap();
    drop(db);
}
