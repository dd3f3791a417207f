//! api.php, GET /orders and the knobs endpoints.

use mock_epay::{Knobs, Tamper};
use serde_json::json;

use crate::helpers::{client, fast_knobs, get_json, open_order, press, start};

const NOTIFY: &str = "http://127.0.0.1:9/notify";

#[tokio::test]
async fn the_order_query_checks_the_merchant_and_reports_the_status() {
    let mock = start(Knobs {
        drop_notify: true,
        ..fast_knobs()
    })
    .await;
    let order = open_order(&mock, "Q1", NOTIFY).await;
    let api = mock.api_url();

    let wrong_key = get_json(&format!(
        "{api}?act=order&pid=1001&key=nope&out_trade_no=Q1"
    ))
    .await;
    assert_eq!(wrong_key["code"], -1);
    assert!(!wrong_key.to_string().contains(mock.key()));
    let wrong_pid = get_json(&format!(
        "{api}?act=order&pid=2002&key={}&out_trade_no=Q1",
        mock.key()
    ))
    .await;
    assert_eq!(wrong_pid["code"], -1);
    let unknown = get_json(&format!(
        "{api}?act=order&pid=1001&key={}&out_trade_no=nope",
        mock.key()
    ))
    .await;
    assert_eq!(unknown, json!({"code": -1, "msg": "order not found"}));

    let unpaid = get_json(&format!(
        "{api}?act=order&pid=1001&key={}&out_trade_no=Q1",
        mock.key()
    ))
    .await;
    assert_eq!(unpaid["code"], 1);
    assert_eq!(unpaid["msg"], "succ");
    assert_eq!(unpaid["status"], 0);
    assert_eq!(unpaid["money"], "10.00");
    assert_eq!(unpaid["trade_no"], order.trade_no);
    assert_eq!(unpaid["type"], "alipay");
    assert_eq!(unpaid["pid"], "1001");
    assert_eq!(unpaid["name"], "Top up 10");
    assert_eq!(unpaid["addtime"], order.addtime);

    press(&mock, "pay", &order.trade_no).await;
    let paid = get_json(&format!(
        "{api}?act=order&pid=1001&key={}&trade_no={}",
        mock.key(),
        order.trade_no
    ))
    .await;
    assert_eq!(paid["status"], 1);
    assert_eq!(paid["out_trade_no"], "Q1");
    assert!(paid["endtime"].is_string());

    // tamper=money reaches api.php only with tamper_query.
    mock.set_knobs(Knobs {
        tamper: Tamper::Money,
        ..mock.knobs()
    })
    .unwrap();
    let url = format!(
        "{api}?act=order&pid=1001&key={}&out_trade_no=Q1",
        mock.key()
    );
    assert_eq!(get_json(&url).await["money"], "10.00");
    mock.set_knobs(Knobs {
        tamper_query: true,
        ..mock.knobs()
    })
    .unwrap();
    assert_eq!(get_json(&url).await["money"], "10.01");
}

#[tokio::test]
async fn orders_and_knobs_are_visible_and_knobs_change_at_runtime() {
    let mock = start(Knobs::default()).await;
    let order = open_order(&mock, "K1", NOTIFY).await;
    let orders = get_json(&format!("{}/orders", mock.base_url())).await;
    assert_eq!(orders[0]["trade_no"], order.trade_no);
    assert_eq!(orders[0]["out_trade_no"], "K1");
    assert_eq!(orders[0]["money"], "10.00");
    assert_eq!(orders[0]["status"], "unpaid");
    assert_eq!(orders[0]["notify_attempts"], 0);
    assert_eq!(orders[0]["notified_ok"], false);

    let knobs_url = format!("{}/knobs", mock.base_url());
    let shown: Knobs = serde_json::from_value(get_json(&knobs_url).await).unwrap();
    assert_eq!(shown, Knobs::default());
    let changed = client()
        .put(&knobs_url)
        .json(&json!({"drop_notify": true, "tamper": "out_trade_no", "notify_method": "post"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status().as_u16(), 200);
    let knobs = mock.knobs();
    assert!(knobs.drop_notify);
    assert_eq!(knobs.tamper, Tamper::OutTradeNo);
    assert_eq!(knobs.notify_attempts, 5, "unnamed knobs are kept");

    for bad in [
        json!({"notify_attempts": 0}),
        json!({"tamper": "everything"}),
        json!({"typo": 1}),
    ] {
        let refused = client().put(&knobs_url).json(&bad).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 400, "{bad}");
    }
    assert_eq!(mock.knobs(), knobs, "refused patches change nothing");
}
