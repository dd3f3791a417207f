//! The signature rule, checked against MD5 computed by hand.

use md5::{Digest, Md5};

const KEY: &str = "mock-epay-merchant-key";

fn params() -> Vec<(&'static str, &'static str)> {
    vec![
        ("pid", "1001"),
        ("type", "alipay"),
        ("out_trade_no", "T20260101"),
        ("notify_url", "http://merchant.test/notify"),
        ("return_url", "http://merchant.test/return"),
        ("name", "Top up 10"),
        ("money", "10.00"),
        ("param", ""),
        ("sign_type", "MD5"),
        ("sign", "whatever"),
    ]
}

#[test]
fn sign_follows_the_documented_rule() {
    // Sorted by key, empty values and sign/sign_type dropped, raw values, key appended.
    let text = format!(
        "money=10.00&name=Top up 10&notify_url=http://merchant.test/notify\
&out_trade_no=T20260101&pid=1001&return_url=http://merchant.test/return&type=alipay{KEY}"
    );
    let by_hand: String = Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(mock_epay::sign(params(), KEY), by_hand);
    // Computed once with `printf '<text>' | md5sum`.
    assert_eq!(
        mock_epay::sign(params(), KEY),
        "96cb858507596cffa4d3aeee32376a64"
    );
}

#[test]
fn the_order_of_the_parameters_does_not_matter() {
    let mut reversed = params();
    reversed.reverse();
    assert_eq!(
        mock_epay::sign(reversed, KEY),
        mock_epay::sign(params(), KEY)
    );
}

#[test]
fn signed_queries_verify_and_tampering_breaks_them() {
    let query = mock_epay::signed_query(&params(), KEY);
    let mut decoded: std::collections::BTreeMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(&query)
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(decoded["sign"], "96cb858507596cffa4d3aeee32376a64");
    assert_eq!(decoded["sign_type"], "MD5");
    assert_eq!(decoded["name"], "Top up 10");
    assert!(mock_epay::verify(&decoded, KEY, &decoded["sign"]));
    assert!(!mock_epay::verify(
        &decoded,
        "another-key",
        &decoded["sign"]
    ));
    decoded.insert("money".into(), "10.01".into());
    assert!(!mock_epay::verify(&decoded, KEY, &decoded["sign"]));
}
