//! Paying, the notify and its knobs, the return redirect, cancelling.

use std::time::Duration;

use mock_epay::{Knobs, KnobsPatch, NotifyMethod, OrderStatus, Tamper};
use serde_json::json;

use crate::helpers::{
    client, eventually, fast_knobs, open_order, press, returned_params, signature_ok, start,
    Receiver, RETURN_URL,
};

#[tokio::test]
async fn paying_redirects_signed_and_the_notify_is_retried_until_success() {
    let mock = start(fast_knobs()).await;
    let merchant = Receiver::start(&[(200, "fail"), (200, "fail"), (200, " success\n")]).await;
    let order = open_order(&mock, "P1", &merchant.url).await;

    let response = press(&mock, "pay", &order.trade_no).await;
    assert_eq!(response.status().as_u16(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{RETURN_URL}&")),
        "{location}"
    );
    let back = returned_params(&location);
    assert!(signature_ok(&back, mock.key()), "{back:?}");
    assert_eq!(back["trade_status"], "TRADE_SUCCESS");
    assert_eq!(back["out_trade_no"], "P1");
    assert_eq!(back["trade_no"], order.trade_no);
    assert_eq!(back["money"], "10.00");

    eventually("the notify is acknowledged", || {
        mock.order(&order.trade_no).unwrap().notified_ok
    })
    .await;
    let paid = mock.order(&order.trade_no).unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert!(paid.endtime.is_some());
    assert_eq!(paid.notify_attempts, 3);
    let received = merchant.received();
    assert_eq!(received.len(), 3);
    for notify in &received {
        assert_eq!(notify.method, "GET");
        assert!(signature_ok(&notify.params, mock.key()), "{notify:?}");
        assert_eq!(notify.params["trade_status"], "TRADE_SUCCESS");
        assert_eq!(notify.params["pid"], "1001");
        assert_eq!(notify.params["trade_no"], order.trade_no);
        assert_eq!(notify.params["out_trade_no"], "P1");
        assert_eq!(notify.params["type"], "alipay");
        assert_eq!(notify.params["name"], "Top up 10");
        assert_eq!(notify.params["money"], "10.00");
    }

    // Paying again is idempotent: same redirect, no second notify.
    let again = press(&mock, "pay", &order.trade_no).await;
    assert_eq!(again.status().as_u16(), 303);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(merchant.count(), 3);
}

#[tokio::test]
async fn errors_and_unreachable_merchants_use_up_the_attempts() {
    let mock = start(Knobs {
        notify_attempts: 2,
        ..fast_knobs()
    })
    .await;
    let merchant = Receiver::start(&[(500, "success")]).await;
    let order = open_order(&mock, "E1", &merchant.url).await;
    press(&mock, "pay", &order.trade_no).await;
    eventually("two attempts", || {
        mock.order(&order.trade_no).unwrap().notify_attempts == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let order = mock.order(&order.trade_no).unwrap();
    assert_eq!(order.notify_attempts, 2);
    assert!(!order.notified_ok);
    assert!(order.last_notify_error.unwrap().contains("500"));

    // Nobody listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify", closed.local_addr().unwrap());
    drop(closed);
    let order = open_order(&mock, "E2", &url).await;
    press(&mock, "pay", &order.trade_no).await;
    eventually("two failed attempts", || {
        mock.order(&order.trade_no).unwrap().notify_attempts == 2
    })
    .await;
    assert!(!mock.order(&order.trade_no).unwrap().notified_ok);
}

#[tokio::test]
async fn a_dropped_notify_never_arrives_but_the_query_reports_paid() {
    let mock = start(Knobs {
        drop_notify: true,
        ..fast_knobs()
    })
    .await;
    let merchant = Receiver::start(&[(200, "success")]).await;
    let order = open_order(&mock, "L1", &merchant.url).await;
    let response = client()
        .post(format!("{}/orders/{}/pay", mock.base_url(), order.trade_no))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "paid");
    let back = returned_params(body["return_url"].as_str().unwrap());
    assert!(signature_ok(&back, mock.key()));
    assert_eq!(body["params"]["sign"], back["sign"].as_str());

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(merchant.count(), 0);
    assert_eq!(mock.order(&order.trade_no).unwrap().notify_attempts, 0);
    let answer = crate::helpers::get_json(&format!(
        "{}?act=order&pid=1001&key={}&out_trade_no=L1",
        mock.api_url(),
        mock.key()
    ))
    .await;
    assert_eq!(answer["code"], 1);
    assert_eq!(answer["status"], 1);

    // A test can still resend it by hand, whatever the knobs.
    let resend: serde_json::Value = client()
        .post(format!(
            "{}/orders/{}/notify",
            mock.base_url(),
            order.trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resend,
        json!({"trade_no": order.trade_no, "delivered": true, "attempts": 1})
    );
    assert_eq!(merchant.count(), 1);
    assert!(signature_ok(&merchant.received()[0].params, mock.key()));
}

#[tokio::test]
async fn duplicates_delays_and_post_notifies() {
    let mock = start(Knobs {
        duplicate_notify: 3,
        ..fast_knobs()
    })
    .await;
    let merchant = Receiver::start(&[(200, "success")]).await;
    let order = open_order(&mock, "R1", &merchant.url).await;
    press(&mock, "pay", &order.trade_no).await;
    eventually("three copies", || merchant.count() == 3).await;
    let received = merchant.received();
    assert!(received.iter().all(|n| n.params == received[0].params));
    assert!(signature_ok(&received[0].params, mock.key()));
    eventually("three attempts recorded", || {
        mock.order(&order.trade_no).unwrap().notify_attempts == 3
    })
    .await;

    mock.patch_knobs(&KnobsPatch {
        duplicate_notify: Some(1),
        notify_delay_ms: Some(400),
        notify_method: Some(NotifyMethod::Post),
        ..KnobsPatch::default()
    })
    .unwrap();
    let merchant = Receiver::start(&[(200, "success")]).await;
    let order = open_order(&mock, "R2", &merchant.url).await;
    press(&mock, "pay", &order.trade_no).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(merchant.count(), 0, "the notify waits notify_delay_ms");
    eventually("the delayed notify", || merchant.count() == 1).await;
    let notify = &merchant.received()[0];
    assert_eq!(notify.method, "POST");
    assert_eq!(
        notify.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(signature_ok(&notify.params, mock.key()));
    assert_eq!(notify.params["out_trade_no"], "R2");
}

#[tokio::test]
async fn tampered_notifies() {
    let mock = start(fast_knobs()).await;
    let mut n = 0;
    let mut notify_with = |tamper: Tamper| {
        n += 1;
        let id = format!("T{n}");
        let mock = &mock;
        async move {
            let set: serde_json::Value = client()
                .put(format!("{}/knobs", mock.base_url()))
                .json(&json!({ "tamper": tamper }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(set["tamper"], json!(tamper));
            let merchant = Receiver::start(&[(200, "success")]).await;
            let order = open_order(mock, &id, &merchant.url).await;
            press(mock, "pay", &order.trade_no).await;
            eventually("the notify", || merchant.count() == 1).await;
            (order, merchant.received().remove(0).params)
        }
    };

    let (_, money) = notify_with(Tamper::Money).await;
    assert_eq!(money["money"], "10.01");
    assert!(signature_ok(&money, mock.key()), "re-signed");

    let (_, sign) = notify_with(Tamper::Sign).await;
    assert_eq!(sign["money"], "10.00");
    assert!(!signature_ok(&sign, mock.key()));

    let (_, pid) = notify_with(Tamper::Pid).await;
    assert_ne!(pid["pid"], "1001");
    assert!(signature_ok(&pid, mock.key()));

    let (_, status) = notify_with(Tamper::Status).await;
    assert_eq!(status["trade_status"], "TRADE_CLOSED");
    assert!(signature_ok(&status, mock.key()));

    let (order, other) = notify_with(Tamper::OutTradeNo).await;
    assert_ne!(other["out_trade_no"], order.out_trade_no);
    assert_eq!(other["trade_no"], order.trade_no);
    assert!(signature_ok(&other, mock.key()));

    let (_, honest) = notify_with(Tamper::None).await;
    assert_eq!(honest["money"], "10.00");
    assert!(signature_ok(&honest, mock.key()));
}

#[tokio::test]
async fn cancelling_redirects_without_parameters_and_blocks_payment() {
    let mock = start(fast_knobs()).await;
    let merchant = Receiver::start(&[(200, "success")]).await;
    let order = open_order(&mock, "C1", &merchant.url).await;
    let response = press(&mock, "cancel", &order.trade_no).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], RETURN_URL);
    assert_eq!(
        mock.order(&order.trade_no).unwrap().status,
        OrderStatus::Cancelled
    );
    assert_eq!(
        press(&mock, "pay", &order.trade_no).await.status().as_u16(),
        409
    );

    // A paid order stays paid.
    let order = open_order(&mock, "C2", &merchant.url).await;
    press(&mock, "pay", &order.trade_no).await;
    press(&mock, "cancel", &order.trade_no).await;
    assert_eq!(
        mock.order(&order.trade_no).unwrap().status,
        OrderStatus::Paid
    );
    eventually("the paid order's notify", || merchant.count() == 1).await;
    assert_eq!(merchant.received()[0].params["out_trade_no"], "C2");

    assert_eq!(
        press(&mock, "pay", "no-such-order").await.status().as_u16(),
        404
    );
    let unpaid = open_order(&mock, "C3", &merchant.url).await;
    let resend = client()
        .post(format!(
            "{}/orders/{}/notify",
            mock.base_url(),
            unpaid.trade_no
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status().as_u16(), 409);
}
