//! Starting the gateway, acting as the merchant, and a tiny notify receiver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_epay::{Config, Knobs, MockEpay, Order};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Default knobs with retries fast enough for tests.
pub fn fast_knobs() -> Knobs {
    Knobs {
        notify_retry_ms: 20,
        ..Knobs::default()
    }
}

pub async fn start(knobs: Knobs) -> MockEpay {
    MockEpay::start(
        Config {
            knobs,
            ..Config::default()
        },
        "127.0.0.1:0",
    )
    .await
    .expect("the gateway starts on a loopback port")
}

/// A client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

pub const RETURN_URL: &str = "http://merchant.test/return?from=epay";

/// The unsigned parameters of a `submit.php` request.
pub fn order_params(out_trade_no: &str, money: &str, notify_url: &str) -> Vec<(String, String)> {
    [
        ("pid", "1001"),
        ("type", "alipay"),
        ("out_trade_no", out_trade_no),
        ("notify_url", notify_url),
        ("return_url", RETURN_URL),
        ("name", "Top up 10"),
        ("money", money),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn submit_query(mock: &MockEpay, query: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}?{query}", mock.submit_url()))
        .send()
        .await
        .expect("submit.php answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Submits a correctly signed order and returns it as the gateway stored it.
pub async fn open_order(mock: &MockEpay, out_trade_no: &str, notify_url: &str) -> Order {
    let query =
        mock_epay::signed_query(&order_params(out_trade_no, "10.00", notify_url), mock.key());
    let (status, page) = submit_query(mock, &query).await;
    assert_eq!(status, 200, "{page}");
    mock.order_by_out_trade_no(out_trade_no)
        .expect("the order exists")
}

/// `POST {base}/pay` as the payment page's form does; the response is not followed.
pub async fn press(mock: &MockEpay, button: &str, trade_no: &str) -> reqwest::Response {
    client()
        .post(format!("{}/{button}", mock.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("trade_no={trade_no}"))
        .send()
        .await
        .expect("the gateway answers")
}

pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a JSON body")
}

/// The gateway's parameters on a return URL: its query without the merchant's own `from`.
pub fn returned_params(url: &str) -> BTreeMap<String, String> {
    let mut params = query_of(url);
    assert_eq!(
        params.remove("from").as_deref(),
        Some("epay"),
        "the return URL's own query is kept"
    );
    params
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .expect("a URL-encoded query")
        .into_iter()
        .collect()
}

/// Whether `params` carry a valid signature under `key`.
pub fn signature_ok(params: &BTreeMap<String, String>, key: &str) -> bool {
    mock_epay::verify(params, key, &params["sign"]) && params["sign_type"] == "MD5"
}

/// Polls `check` until it holds, or fails after five seconds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub content_type: Option<String>,
    /// The query parameters of a GET, the form fields of a POST.
    pub params: BTreeMap<String, String>,
}

/// A merchant's notify endpoint over raw TCP: answers the scripted bodies in turn (then the
/// last one forever) and records what arrived.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(script: &[(u16, &'static str)]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/epay/notify", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Vec<(u16, &'static str)> = script.to_vec();
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (status, body) = script[served.min(script.len() - 1)];
                served += 1;
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    log.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Receiver { url, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let mut content_length = 0usize;
    let mut content_type = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().ok()?,
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let params = if method == "POST" {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .ok()?
            .into_iter()
            .collect()
    } else {
        query_of(&target)
    };
    Some(Received {
        method,
        content_type,
        params,
    })
}
