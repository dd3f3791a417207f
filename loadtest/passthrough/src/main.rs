//! `passthrough`: the reference pass-through hop that benchmarks compare tollgate with.
//!
//! A minimal actix-web + reqwest forwarder with no authentication and no metering: it sends
//! `POST /v1/messages` (and `/v1/messages/count_tokens`) to the upstream with the body and the
//! Anthropic headers unchanged, and relays the status, the content type and the body; an SSE
//! response is relayed chunk by chunk as the upstream sends it. Anything a metering proxy on
//! the same stack does costs time on top of this, so it is the floor such a proxy can approach.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;

/// The same allocator as tollgate, so the comparison measures metering, not malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "passthrough",
    version,
    about = "A minimal forwarding hop: the floor a metering proxy can approach"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9998")]
    listen: String,
    /// Base URL of the upstream, e.g. http://127.0.0.1:9999.
    #[arg(long, default_value = "http://127.0.0.1:9999")]
    upstream: String,
    /// actix-web worker threads (each with its own reqwest client).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Key sent upstream as `x-api-key` (as a proxy sends the operator's key).
    #[arg(long)]
    api_key: Option<String>,
    /// Set TCP_NODELAY on accepted connections. actix-web leaves Nagle's algorithm on by
    /// default, which stalls relayed streams (many small writes) on delayed ACKs of ~40 ms.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tcp_nodelay: bool,
}

/// Request headers forwarded as they came; the same set tollgate forwards.
const FORWARDED_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "content-type"];

/// Largest accepted request body, as tollgate's default `server.max_body_bytes`.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What every worker needs: where to forward, and its own connection pool.
#[derive(Clone)]
struct Forwarder {
    upstream: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl Forwarder {
    fn new(upstream: &str, api_key: Option<String>) -> Result<Forwarder, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A forwarding hop relays a redirect rather than following it, as tollgate does.
            .redirect(reqwest::redirect::Policy::none())
            // Forwards to the upstream it is given, never through the environment's proxy.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Forwarder {
            upstream: upstream.trim_end_matches('/').to_string(),
            api_key,
            client,
        })
    }

    async fn forward(&self, req: &HttpRequest, body: web::Bytes) -> HttpResponse {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or(req.path(), |pq| pq.as_str());
        let mut request = self
            .client
            .post(format!("{}{}", self.upstream, path_and_query))
            .body(body);
        request = copy_headers(request, req.headers());
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return bad_gateway(&e),
        };

        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned();
        let is_stream = content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let mut builder = HttpResponse::build(status);
        if let Some(value) = content_type {
            builder.insert_header((CONTENT_TYPE, value.as_bytes()));
        }
        if is_stream {
            // Each upstream chunk goes out as soon as it arrives.
            builder.streaming(response.bytes_stream())
        } else {
            match response.bytes().await {
                Ok(bytes) => builder.body(bytes),
                Err(e) => bad_gateway(&e),
            }
        }
    }
}

fn copy_headers(
    mut request: reqwest::RequestBuilder,
    headers: &HeaderMap,
) -> reqwest::RequestBuilder {
    for name in FORWARDED_HEADERS {
        for value in headers.get_all(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    request
}

/// An Anthropic-shaped error for an unreachable or failing upstream.
fn bad_gateway(error: &reqwest::Error) -> HttpResponse {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "api_error", "message": format!("upstream: {error}")},
    });
    HttpResponse::BadGateway().json(body)
}

async fn messages(
    req: HttpRequest,
    body: web::Bytes,
    forwarder: web::Data<Forwarder>,
) -> HttpResponse {
    forwarder.forward(&req, body).await
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Fail before binding if the client cannot be built at all.
    let first = Forwarder::new(&args.upstream, args.api_key.clone())?;

    let upstream = args.upstream.clone();
    let api_key = args.api_key.clone();
    let server = HttpServer::new(move || {
        // Built in the factory, so each worker drives its own connections. One built above,
        // so building cannot fail here; if it did, the worker would share that one's pool.
        let forwarder = Forwarder::new(&upstream, api_key.clone()).unwrap_or_else(|e| {
            eprintln!("passthrough: a worker shares the first HTTP client: {e}");
            first.clone()
        });
        App::new()
            .app_data(web::Data::new(forwarder))
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route("/v1/messages", web::post().to(messages))
            .route("/v1/messages/count_tokens", web::post().to(messages))
    })
    .workers(args.workers.max(1))
    .tcp_nodelay(args.tcp_nodelay)
    .backlog(4096)
    .bind(&args.listen)?;
    for addr in server.addrs() {
        println!(
            "passthrough listening on {addr}, forwarding to {}",
            args.upstream
        );
    }
    server.run().await?;
    Ok(())
}
