//! Upstream providers: where requests are forwarded. [`UpstreamPool`] chooses among them (it
//! holds the first configured upstream today; weights and failover come later), [`Upstream`]
//! is one provider's client, and `transport` reaches it directly or through a proxy.
//!
//! The client is hyper's own pooled client, not reqwest: on this path reqwest re-parsed each
//! response's URL and ran its redirect and retry layers, work a forwarder with one fixed
//! destination has no use for. Dropping it took 18 % off tollgate's instructions per request
//! (docs/adr/0001-hyper-pooled-client-for-upstream-calls.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use self::transport::{proxy_for, Transport};
use crate::config::UpstreamSettings;

mod pool;
mod transport;

pub use pool::{Attempt, UpstreamPool};

/// Request headers forwarded upstream as they came. Everything else (the client's key,
/// cookies, hop-by-hop headers) stays here.
const FORWARDED_REQUEST_HEADERS: [&str; 3] =
    ["anthropic-version", "anthropic-beta", "content-type"];

/// The API version sent when the client names none.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Response headers relayed to the client. A whitelist: the upstream's organization,
/// workspace and rate-limit headers describe the operator's account, not the customer's.
pub const RELAYED_RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "cache-control",
];

/// The most of an upstream error body that is read. Anthropic's errors are a few hundred
/// bytes; only the status, `error.type` and `error.message` are used, and the message only to
/// be recognized and logged (docs/adr/0015-upstream-error-messages-rewritten.md).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The most of a non-streaming answer (a Message, a token count) that is read and held in
/// memory. The largest real Message, `max_tokens` of 128,000 densely escaped output, is about
/// 1 MiB; this leaves sixteen times that, and bounds what a faulty upstream can make a
/// request buffer.
pub const MAX_MESSAGE_BODY_BYTES: usize = 16 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// TCP keepalive on upstream connections, so that a NAT or load balancer does not silently
/// drop a connection that waits minutes for a long answer, and a dead peer is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;
/// Unacknowledged data older than this ends the connection (Linux `TCP_USER_TIMEOUT`).
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The upstream routes tollgate forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream base_url {0:?} is not an http:// or https:// URL")]
    BaseUrl(String),
    #[error("upstream api_key is not a valid HTTP header value")]
    ApiKey,
    #[error("upstream proxy: {0}")]
    Proxy(String),
    #[error("upstream TLS set-up: {0}")]
    Tls(String),
    #[error("the client's query string is not valid in a URL")]
    Query,
    #[error("sending the request failed: {}", causes(.0))]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("reading the response body failed: {}", causes(.0))]
    Body(#[source] hyper::Error),
    #[error("the upstream sent nothing for {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the response body is larger than the {0}-byte limit")]
    TooLarge(usize),
}

impl UpstreamError {
    /// The upstream was too slow, rather than unreachable or broken.
    pub fn is_timeout(&self) -> bool {
        match self {
            UpstreamError::TimedOut(_) => true,
            UpstreamError::Send(error) => chain(error).any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            }),
            _ => false,
        }
    }
}

/// `error` and each of its sources, outermost first.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| cause.source())
}

/// hyper's errors say little at the top ("client error (Connect)"); the cause ("Connection
/// refused") is further down.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    chain(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A route on the upstream, parsed once; `text` is kept to append a query string.
#[derive(Clone)]
struct Route {
    uri: Uri,
    text: String,
}

impl Route {
    fn new(base_url: &str, path: &str) -> Result<Route, UpstreamError> {
        let text = format!("{}{}", base_url.trim_end_matches('/'), path);
        let invalid = || UpstreamError::BaseUrl(without_credentials(base_url).into_owned());
        let uri = Uri::try_from(text.as_str()).map_err(|_| invalid())?;
        let web = matches!(uri.scheme_str(), Some("http" | "https"));
        if !web || uri.authority().is_none() || uri.query().is_some() {
            return Err(invalid());
        }
        Ok(Route { uri, text })
    }

    fn with_query(&self, query: Option<&str>) -> Result<Uri, UpstreamError> {
        match query {
            None | Some("") => Ok(self.uri.clone()),
            Some(query) => {
                Uri::try_from(format!("{}?{query}", self.text)).map_err(|_| UpstreamError::Query)
            }
        }
    }
}

/// One upstream provider and the HTTP client that reaches it. Each HTTP worker builds its
/// own, so connections are driven by the worker that uses them.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    messages: Route,
    count_tokens: Route,
    /// Read by the pool too, to mask it in logs.
    api_key: HeaderValue,
    /// How long the upstream may stay silent: before its response headers, and between two
    /// reads of its body.
    timeout: Duration,
    client: Client<hyper_rustls::HttpsConnector<Transport>, Full<Bytes>>,
    /// The proxy connections go through, if any, without its credentials.
    proxy: Option<String>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let messages = Route::new(&settings.base_url, "/v1/messages")?;
        let proxy = proxy_for(settings, &messages.uri)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_keepalive(Some(KEEPALIVE));
        tcp.set_keepalive_interval(Some(KEEPALIVE));
        tcp.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        #[cfg(target_os = "linux")]
        tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        // The provider is named, not taken from the process default: that default panics
        // if two providers are compiled in.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|error| UpstreamError::Tls(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Transport::new(tcp, proxy.clone()).map_err(|error| {
                let source = match settings.proxy {
                    Some(_) => "upstreams[].proxy",
                    None => "the proxy from HTTPS_PROXY, HTTP_PROXY or ALL_PROXY",
                };
                UpstreamError::Proxy(format!("{source}: {error}"))
            })?);
        // No redirects are followed (hyper follows none): an upstream API does not redirect,
        // and following one would send the operator's key wherever it points.
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        let mut api_key =
            HeaderValue::from_str(&settings.api_key).map_err(|_| UpstreamError::ApiKey)?;
        api_key.set_sensitive(true);
        Ok(Upstream {
            name: settings.name.clone(),
            proxy: proxy.map(|p| p.uri().to_string().trim_end_matches('/').to_string()),
            messages,
            count_tokens: Route::new(&settings.base_url, "/v1/messages/count_tokens")?,
            api_key,
            timeout: Duration::from_secs(settings.timeout_secs.max(1)),
            client,
        })
    }

    /// Sends `body` unchanged to `endpoint` (with the client's query string, if any), with
    /// `headers` (see [`forwarded_headers`]) and the operator's key.
    pub async fn post(
        &self,
        endpoint: Endpoint,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let route = match endpoint {
            Endpoint::Messages => &self.messages,
            Endpoint::CountTokens => &self.count_tokens,
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = route.with_query(query)?;
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert("x-api-key", self.api_key.clone());
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| UpstreamError::TimedOut(self.timeout))?
            .map_err(UpstreamError::Send)?;
        let (head, body) = response.into_parts();
        Ok(UpstreamResponse {
            status: head.status,
            headers: head.headers,
            body,
            timeout: self.timeout,
        })
    }

    /// How connections reach this upstream, for the start-up log: directly, or through a
    /// proxy (named without its credentials).
    pub fn route(&self) -> String {
        match &self.proxy {
            None => "directly".into(),
            Some(proxy) => format!("through the proxy at {proxy}"),
        }
    }
}

/// `url` with any `user:password@` before its host replaced by `***@`, for logs: an operator
/// may write credentials into a base URL, and logs travel further than config files.
pub fn without_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}").into(),
        None => url.into(),
    }
}

/// The client's Anthropic headers, in the upstream client's types, with the defaults an
/// Anthropic SDK would send filled in.
pub fn forwarded_headers(client: &actix_web::http::header::HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(FORWARDED_REQUEST_HEADERS.len() + 1);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in client.get_all(name) {
            // Both are the same header grammar; a value actix accepted is accepted here.
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
    }
    headers
        .entry("anthropic-version")
        .or_insert(HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
    headers
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    headers
}

/// An upstream response whose head has arrived and whose body is still to be read.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    timeout: Duration,
}

impl UpstreamResponse {
    /// Whether the body is a server-sent event stream.
    pub fn is_event_stream(&self) -> bool {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    }

    /// The body as it arrives, chunk by chunk. Ends with an error if the upstream stays
    /// silent for longer than its timeout.
    pub fn into_stream(self) -> BodyStream {
        BodyStream {
            body: self.body,
            idle: Box::pin(tokio::time::sleep(self.timeout)),
            timeout: self.timeout,
            done: false,
        }
    }

    /// The whole body, if it is at most `limit` bytes: a longer one is
    /// [`UpstreamError::TooLarge`], refused from its `content-length` before any of it is
    /// read, or as soon as what arrived passes the limit. A body that arrives in one piece
    /// (the usual case) is not copied.
    pub async fn bytes(self, limit: usize) -> Result<Bytes, UpstreamError> {
        let declared = self
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(UpstreamError::TooLarge(limit));
        }
        let within = |length: usize| {
            if length > limit {
                Err(UpstreamError::TooLarge(limit))
            } else {
                Ok(())
            }
        };
        let mut stream = self.into_stream();
        let Some(first) = stream.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        within(first.len())?;
        let Some(second) = stream.next().await.transpose()? else {
            return Ok(first);
        };
        within(first.len() + second.len())?;
        let mut whole = BytesMut::with_capacity(first.len() + second.len());
        whole.extend_from_slice(&first);
        whole.extend_from_slice(&second);
        while let Some(chunk) = stream.next().await.transpose()? {
            within(whole.len() + chunk.len())?;
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    }
}

/// An upstream response body as a stream of chunks, with an idle timeout.
pub struct BodyStream {
    body: Incoming,
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
    done: bool,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        this.idle.as_mut().reset(Instant::now() + this.timeout);
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Empty data and trailers carry nothing to relay or meter.
                    _ => continue,
                },
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::Body(error))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(UpstreamError::TimedOut(this.timeout))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transport::with_port;
    use super::*;

    fn settings(base_url: &str) -> UpstreamSettings {
        UpstreamSettings {
            name: "test".into(),
            base_url: base_url.into(),
            api_key: "key".into(),
            timeout_secs: 5,
            proxy: Some(String::new()),
        }
    }

    #[test]
    fn credentials_in_a_url_never_reach_the_log() {
        assert_eq!(
            without_credentials("https://user:s3cret@api.example.com/v1?x=1"),
            "https://***@api.example.com/v1?x=1"
        );
        assert_eq!(
            without_credentials("http://token@127.0.0.1:9"),
            "http://***@127.0.0.1:9"
        );
        assert_eq!(
            without_credentials("https://api.anthropic.com"),
            "https://api.anthropic.com"
        );
        // An @ in the path is not a credential.
        assert_eq!(
            without_credentials("https://api.example.com/a@b"),
            "https://api.example.com/a@b"
        );
        assert_eq!(without_credentials("not a url"), "not a url");
    }

    #[test]
    fn routes_are_the_base_url_and_the_api_path_with_the_clients_query() {
        let route = Route::new("https://api.example.com/", "/v1/messages").expect("valid");
        assert_eq!(
            route.with_query(None).expect("uri"),
            "https://api.example.com/v1/messages"
        );
        assert_eq!(
            route.with_query(Some("")).expect("uri"),
            "https://api.example.com/v1/messages"
        );
        assert_eq!(
            route.with_query(Some("beta=true")).expect("uri"),
            "https://api.example.com/v1/messages?beta=true"
        );
        let prefixed = Route::new("http://relay.local:8080/anthropic", "/v1/messages");
        assert_eq!(
            prefixed.expect("valid").uri,
            "http://relay.local:8080/anthropic/v1/messages"
        );
    }

    #[test]
    fn a_base_url_that_is_not_http_or_https_is_refused() {
        for bad in [
            "api.example.com",
            "ftp://api.example.com",
            "https://",
            "http://a b",
            "https://x?y=1",
        ] {
            assert!(
                matches!(
                    Route::new(bad, "/v1/messages"),
                    Err(UpstreamError::BaseUrl(_))
                ),
                "{bad} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn an_api_key_that_cannot_be_a_header_is_refused_and_a_good_one_is_marked_sensitive() {
        let mut bad = settings("https://api.example.com");
        bad.api_key = "line\nbreak".into();
        assert!(matches!(Upstream::new(&bad), Err(UpstreamError::ApiKey)));
        let upstream = Upstream::new(&settings("https://api.example.com")).expect("builds");
        assert!(upstream.api_key.is_sensitive());
    }

    #[test]
    fn a_proxy_is_an_http_connect_tunnel_or_socks5_and_nothing_else() {
        let upstream = Uri::from_static("https://api.example.com/v1/messages");
        let transport = |proxy: &str| {
            let mut settings = settings("https://api.example.com");
            settings.proxy = Some(proxy.into());
            let proxy = proxy_for(&settings, &upstream).map_err(|e| e.to_string())?;
            Transport::new(HttpConnector::new(), proxy)
        };
        assert!(matches!(transport(""), Ok(Transport::Direct(_))));
        assert!(matches!(
            transport("http://u:p@10.0.0.1:3128"),
            Ok(Transport::Tunnel(_))
        ));
        assert!(matches!(
            transport("socks5h://10.0.0.1:1080"),
            Ok(Transport::Socks(_))
        ));
        for unsupported in [
            "https://10.0.0.1:3128",
            "socks4://10.0.0.1:1080",
            "ftp://x:1",
            "::",
        ] {
            assert!(
                transport(unsupported).is_err(),
                "{unsupported} was accepted"
            );
        }
        let mut https_proxy = settings("https://api.example.com");
        https_proxy.proxy = Some("https://10.0.0.1:3128".into());
        let refused = Upstream::new(&https_proxy).err().map(|e| e.to_string());
        assert_eq!(
            refused.as_deref(),
            Some("upstream proxy: upstreams[].proxy: https:// proxies are not supported; use http://, socks5:// or socks5h://")
        );
    }

    #[tokio::test]
    async fn the_proxy_is_named_without_its_credentials() {
        let mut proxied = settings("https://api.example.com");
        proxied.proxy = Some("http://operator:s3cret@10.0.0.1:3128".into());
        let route = Upstream::new(&proxied).expect("builds").route();
        assert_eq!(route, "through the proxy at http://10.0.0.1:3128");
        proxied.proxy = Some(String::new());
        assert_eq!(Upstream::new(&proxied).expect("builds").route(), "directly");
    }

    #[test]
    fn a_tunnelled_destination_always_names_its_port() {
        let cases = [
            ("http://relay.local/v1", "http://relay.local:80/v1"),
            (
                "https://api.example.com/v1",
                "https://api.example.com:443/v1",
            ),
            ("http://127.0.0.1:9999/v1", "http://127.0.0.1:9999/v1"),
        ];
        for (given, expected) in cases {
            assert_eq!(with_port(Uri::from_static(given)), expected);
        }
    }

    #[test]
    fn defaults_fill_in_only_what_the_client_left_out() {
        let mut client = actix_web::http::header::HeaderMap::new();
        client.insert(
            actix_web::http::header::HeaderName::from_static("anthropic-beta"),
            actix_web::http::header::HeaderValue::from_static("a,b"),
        );
        client.insert(
            actix_web::http::header::HeaderName::from_static("x-api-key"),
            actix_web::http::header::HeaderValue::from_static("customer-secret"),
        );
        let headers = forwarded_headers(&client);
        assert_eq!(headers["anthropic-beta"], "a,b");
        assert_eq!(headers["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        assert_eq!(headers["content-type"], "application/json");
        assert!(
            headers.get("x-api-key").is_none(),
            "the customer's key must not go upstream"
        );

        client.insert(
            actix_web::http::header::HeaderName::from_static("anthropic-version"),
            actix_web::http::header::HeaderValue::from_static("2024-01-01"),
        );
        assert_eq!(
            forwarded_headers(&client)["anthropic-version"],
            "2024-01-01"
        );
    }
}
