//! Upstream providers: where requests are forwarded. This issue serves every request from the
//! first configured upstream; pools and failover come later.

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use bytes::Bytes;

use crate::config::UpstreamSettings;

/// Request headers forwarded upstream as they came. Everything else (the client's key,
/// cookies, hop-by-hop headers) stays here.
const FORWARDED_REQUEST_HEADERS: [&str; 3] =
    ["anthropic-version", "anthropic-beta", "content-type"];

/// Response headers relayed to the client. A whitelist: the upstream's organization,
/// workspace and rate-limit headers describe the operator's account, not the customer's.
pub const RELAYED_RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "cache-control",
];

/// The upstream routes tollgate forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("upstream base_url {0:?} is not a valid URL")]
    BaseUrl(String),
}

fn endpoint(base_url: &str, path: &str) -> Result<reqwest::Url, UpstreamError> {
    let url = format!("{}{}", base_url.trim_end_matches('/'), path);
    reqwest::Url::parse(&url).map_err(|_| UpstreamError::BaseUrl(base_url.to_string()))
}

/// One upstream provider and the HTTP client that reaches it. Each HTTP worker builds its
/// own, so connections are driven by the worker that uses them.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    /// `POST /v1/messages` and `POST /v1/messages/count_tokens`, parsed once.
    messages_url: reqwest::Url,
    count_tokens_url: reqwest::Url,
    api_key: String,
    client: reqwest::Client,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let client = reqwest::Client::builder()
            // An upstream API does not redirect; following one would send the operator's key
            // wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .read_timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .build()?;
        Ok(Upstream {
            name: settings.name.clone(),
            messages_url: endpoint(&settings.base_url, "/v1/messages")?,
            count_tokens_url: endpoint(&settings.base_url, "/v1/messages/count_tokens")?,
            api_key: settings.api_key.clone(),
            client,
        })
    }

    /// Sends `body` unchanged to `endpoint` (with the client's query string, if any), with
    /// the client's Anthropic headers and the operator's key.
    pub async fn post(
        &self,
        endpoint: Endpoint,
        query: Option<&str>,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut url = match endpoint {
            Endpoint::Messages => self.messages_url.clone(),
            Endpoint::CountTokens => self.count_tokens_url.clone(),
        };
        if query.is_some() {
            url.set_query(query);
        }
        let mut request = self
            .client
            .post(url)
            .header("x-api-key", &self.api_key)
            .body(body);
        for name in FORWARDED_REQUEST_HEADERS {
            for value in client_headers.get_all(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        if !client_headers.contains_key("anthropic-version") {
            request = request.header("anthropic-version", "2023-06-01");
        }
        if !client_headers.contains_key("content-type") {
            request = request.header("content-type", "application/json");
        }
        request.send().await
    }
}
