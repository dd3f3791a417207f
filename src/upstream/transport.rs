//! How TCP connections reach an upstream: directly, or through an HTTP `CONNECT` or SOCKS5
//! proxy, configured or taken from the environment as curl reads it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::UpstreamError;
use crate::config::UpstreamSettings;

/// The proxy to reach `upstream` through: the configured one, or the environment's.
pub(super) fn proxy_for(
    settings: &UpstreamSettings,
    upstream: &Uri,
) -> Result<Option<Intercept>, UpstreamError> {
    match settings.proxy.as_deref() {
        Some("") => Ok(None),
        Some(url) => Matcher::builder()
            .all(url.to_string())
            .build()
            .intercept(upstream)
            .map(Some)
            .ok_or_else(|| {
                UpstreamError::Proxy(
                    "upstreams[].proxy is not an http://, socks5:// or socks5h:// URL".into(),
                )
            }),
        None => Ok(Matcher::from_env().intercept(upstream)),
    }
}

/// How TCP connections reach the upstream: directly, through an HTTP proxy's `CONNECT`
/// tunnel, or through a SOCKS5 proxy. TLS to the upstream runs over any of them.
#[derive(Clone)]
pub(super) enum Transport {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
    Socks(SocksV5<HttpConnector>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Transport {
    pub(super) fn new(tcp: HttpConnector, proxy: Option<Intercept>) -> Result<Transport, String> {
        let Some(proxy) = proxy else {
            return Ok(Transport::Direct(tcp));
        };
        let at = proxy.uri().clone();
        match at.scheme_str() {
            Some("http") => {
                let tunnel = Tunnel::new(at, tcp);
                Ok(Transport::Tunnel(match proxy.basic_auth() {
                    Some(auth) => tunnel.with_auth(auth.clone()),
                    None => tunnel,
                }))
            }
            Some(scheme @ ("socks5" | "socks5h")) => {
                let local_dns = scheme == "socks5";
                let socks = SocksV5::new(at.clone(), tcp).local_dns(local_dns);
                Ok(Transport::Socks(match proxy.raw_auth() {
                    Some((user, pass)) => socks.with_auth(user.into(), pass.into()),
                    None => socks,
                }))
            }
            other => Err(format!(
                "{}:// proxies are not supported; use http://, socks5:// or socks5h://",
                other.unwrap_or("")
            )),
        }
    }
}

/// `uri` with its scheme's default port written out: the proxy connectors would otherwise
/// assume 443 for a plain-http upstream.
pub(super) fn with_port(uri: Uri) -> Uri {
    if uri.port().is_some() {
        return uri;
    }
    let port = if uri.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let Some(host) = uri.host() else {
        return uri;
    };
    let authority = format!("{host}:{port}");
    let mut parts = uri.clone().into_parts();
    match authority.parse() {
        Ok(authority) => {
            parts.authority = Some(authority);
            Uri::from_parts(parts).unwrap_or(uri)
        }
        Err(_) => uri,
    }
}

impl Service<Uri> for Transport {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Direct(tcp) => tcp.poll_ready(cx).map_err(Into::into),
            Transport::Tunnel(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
            Transport::Socks(socks) => socks.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Transport::Direct(tcp) => {
                let connecting = tcp.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Transport::Tunnel(tunnel) => {
                let connecting = tunnel.call(with_port(dst));
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Transport::Socks(socks) => {
                let connecting = socks.call(with_port(dst));
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}
