//! submit.php: the checks, the payment page, idempotent resubmission.

use mock_epay::{signed_query, Knobs, OrderStatus};

use crate::helpers::{client, order_params, start, submit_query};

const NOTIFY: &str = "http://merchant.test/notify";

fn set(params: &mut [(String, String)], name: &str, value: &str) {
    for (k, v) in params.iter_mut() {
        if k == name {
            *v = value.to_owned();
        }
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused_without_echoing_secrets() {
    let mock = start(Knobs::default()).await;
    let query = signed_query(&order_params("A1", "10.00", NOTIFY), mock.key());
    // Change the amount after signing.
    let forged = query.replace("money=10.00", "money=1.00");
    assert_ne!(forged, query);
    let (status, page) = submit_query(&mock, &forged).await;
    assert_eq!(status, 400);
    assert!(page.contains("signature does not verify"), "{page}");
    let sign = crate::helpers::query_of(&format!("?{query}"))["sign"].clone();
    assert!(!page.contains(&sign), "the page echoes the signature");
    assert!(!page.contains(mock.key()), "the page echoes the key");

    let unsigned = query.split("&sign=").next().unwrap().to_owned();
    let (status, page) = submit_query(&mock, &unsigned).await;
    assert_eq!(status, 400);
    assert!(page.contains("missing parameter: sign"), "{page}");
    assert!(mock.orders().is_empty());
}

#[tokio::test]
async fn a_wrong_pid_a_bad_type_or_amount_are_refused_by_name() {
    let mock = start(Knobs::default()).await;
    for (field, value, expected) in [
        ("pid", "2002", "pid"),
        ("type", "qqpay", "type must be alipay or wxpay"),
        ("money", "0.00", "money must be a positive amount"),
        ("money", "10.001", "money must be a positive amount"),
        ("money", "-5", "money must be a positive amount"),
        ("notify_url", "ftp://x", "notify_url"),
    ] {
        let mut params = order_params("B1", "10.00", NOTIFY);
        set(&mut params, field, value);
        // Correctly signed: only the named check can fail.
        let (status, page) = submit_query(&mock, &signed_query(&params, mock.key())).await;
        assert_eq!(status, 400, "{field}={value}: {page}");
        assert!(page.contains(expected), "{field}={value}: {page}");
    }
    assert!(mock.orders().is_empty());
}

#[tokio::test]
async fn a_good_request_shows_the_payment_page() {
    let mock = start(Knobs::default()).await;
    let mut params = order_params("C1", "10.00", NOTIFY);
    set(&mut params, "name", "Credits <b>& more</b>");
    let (status, page) = submit_query(&mock, &signed_query(&params, mock.key())).await;
    assert_eq!(status, 200, "{page}");
    let order = mock.order_by_out_trade_no("C1").expect("the order exists");
    assert_eq!(order.status, OrderStatus::Unpaid);
    assert_eq!(order.money, "10.00");
    assert_eq!(order.trade_no.len(), 18, "{}", order.trade_no);
    assert!(order.trade_no.bytes().all(|b| b.is_ascii_digit()));
    for needle in [
        "¥10.00",
        "C1",
        "alipay",
        "Credits &lt;b&gt;&amp; more&lt;/b&gt;",
        ">Pay</button>",
        ">Cancel</button>",
        &format!("action=\"{}/pay\"", mock.base_url()),
        &format!("action=\"{}/cancel\"", mock.base_url()),
        &format!("name=\"trade_no\" value=\"{}\"", order.trade_no),
    ] {
        assert!(page.contains(needle), "missing {needle:?} in {page}");
    }
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains(mock.key()));
}

#[tokio::test]
async fn post_forms_work_and_resubmission_reuses_the_order() {
    let mock = start(Knobs::default()).await;
    let body = signed_query(&order_params("D1", "25.5", NOTIFY), mock.key());
    let post = || {
        client()
            .post(mock.submit_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    assert!(first.text().await.unwrap().contains("¥25.50"));
    let again = post().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(mock.orders().len(), 1, "resubmitting reuses the order");
    assert_eq!(mock.orders()[0].money, "25.5", "kept as submitted");

    let other_amount = signed_query(&order_params("D1", "26.00", NOTIFY), mock.key());
    let (status, page) = submit_query(&mock, &other_amount).await;
    assert_eq!(status, 400);
    assert!(page.contains("different amount"), "{page}");
    assert_eq!(mock.orders().len(), 1);
}

#[tokio::test]
async fn healthz_answers_ok() {
    let mock = start(Knobs::default()).await;
    let response = client()
        .get(format!("{}/healthz", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    mock.stop().await;
}

#[actix_web::test]
async fn starts_on_a_bound_listener_inside_an_actix_system() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mock = mock_epay::MockEpay::start_on(
        mock_epay::Config {
            public_url: Some("http://pay.example.test/".into()),
            ..mock_epay::Config::default()
        },
        listener,
    )
    .await
    .unwrap();
    assert_eq!(mock.addr().port(), port);
    assert_eq!(mock.public_url(), "http://pay.example.test");
    assert_eq!(mock.submit_url(), "http://pay.example.test/submit.php");
    let response = client()
        .get(format!("{}/healthz", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    mock.stop().await;
}
