//! HTTP: the route table, and the state every handler shares.
//!
//! - [`anthropic`]: the Anthropic-compatible proxy under `/v1`, one file per route, with a
//!   Messages request's phases in order.
//! - [`admin`]: the operator's API under `/admin/v1`, one file per resource.
//! - [`customer`]: the customer API under `/api/v1`: registration, sessions, the account.
//! - [`ops`]: `/healthz` and `/metrics`.
//! - [`openapi`]: the customer and admin APIs' OpenAPI document (`/api/v1/openapi.json`) and
//!   the page that renders it (`/api/docs`).
//! - [`extract`]: who is calling, checked once per surface ([`crate::auth::KeyOwner`],
//!   [`extract::require_admin`]).
//! - [`json`]: request bodies read into typed requests, refusals naming their field.
//! - [`keys`]: creating an API key with its policy, for the admin and customer APIs alike.
//! - [`forwarded`]: the client's address behind trusted reverse proxies (`X-Forwarded-For`).
//! - [`error`]: one error type per surface, one status mapping, one renderer per wire format.
//! - [`request_id`]: every response's `request-id`.

pub mod admin;
pub mod anthropic;
pub mod customer;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod json;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod request_id;

use std::sync::Arc;

use actix_web::{middleware, web};
use governor::DefaultKeyedRateLimiter;
use metrics_exporter_prometheus::PrometheusHandle;
use tollgate_actors::pricing::RateCard;
use tollgate_actors::Engine;
use uuid::Uuid;

use self::anthropic::body::BodyReader;
use self::anthropic::{count_tokens, dashboard, messages, models, probes};
use self::error::ProxyError;
use crate::auth::KeyRing;
use crate::config::Settings;
use crate::store::PgStore;

/// State shared by every worker.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub engine: Engine,
    pub keys: KeyRing,
    pub card: Arc<RateCard>,
    pub store: PgStore,
    /// How long a stream whose client went away is still read (`metering.*`).
    pub stream_drain: tollgate_actors::relay::Drain,
    /// Reads request bodies within their size, time and per-key limits.
    pub bodies: BodyReader,
    pub count_tokens_limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    pub metrics: PrometheusHandle,
    /// The refused entries of `metering.price_options`, as each request checks them.
    pub price_options: anthropic::PriceOptions,
    /// The customer API's signup and login throttles (`accounts.*`).
    pub customers: customer::CustomerGuards,
    /// The SMTP relay customers' emails go through, if one is configured (`email.*`).
    pub mailer: crate::email::Mailer,
}

/// The route table: every route tollgate serves, on one listener.
pub fn routes(cfg: &mut web::ServiceConfig) {
    proxy_routes(cfg);
    admin_routes(cfg);
}

/// Every route but the admin API's: what the main listener serves when `admin.listen` gives
/// the admin API an address of its own.
pub fn proxy_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::head().to(probes::root))
        .route("/", web::get().to(probes::root))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/metrics", web::get().to(ops::metrics))
        .route(
            "/api/event_logging/batch",
            web::post().to(probes::event_logging),
        )
        .route("/api/docs", web::get().to(openapi::docs_page))
        .service(
            web::scope("/api/v1")
                .wrap(api_errors())
                .configure(customer::routes),
        )
        .service(
            web::scope("/v1")
                .app_data(web::QueryConfig::default().error_handler(|error, req| {
                    let rid = request_id::RequestId::of(req);
                    ProxyError::bad_request(format!("invalid query string: {error}"))
                        .at(rid)
                        .into()
                }))
                .route("/messages", web::post().to(messages::messages))
                .route(
                    "/messages/count_tokens",
                    web::post().to(count_tokens::count_tokens),
                )
                .route("/models", web::get().to(models::list_models))
                .route("/models/{id}", web::get().to(models::get_model))
                .route(
                    "/dashboard/billing/subscription",
                    web::get().to(dashboard::subscription),
                )
                .route("/dashboard/billing/usage", web::get().to(dashboard::usage))
                .default_service(web::to(probes::not_found)),
        );
}

/// Errors that actix answers before a handler runs (an oversized body), rendered in the
/// customer and admin APIs' error shape.
fn api_errors<B: 'static>() -> middleware::ErrorHandlers<B> {
    middleware::ErrorHandlers::new().handler(
        actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
        error::payload_too_large,
    )
}

/// The admin API, `/admin/v1`: on the main listener, or on `admin.listen` when it is set.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .wrap(middleware::from_fn(extract::require_admin))
            .wrap(api_errors())
            .route("/accounts", web::post().to(admin::accounts::create))
            .route("/accounts/{id}", web::get().to(admin::accounts::get))
            .route(
                "/accounts/{id}/credit",
                web::post().to(admin::balance::credit),
            )
            .route(
                "/accounts/{id}/adjust",
                web::post().to(admin::balance::adjust),
            )
            .route("/accounts/{id}/keys", web::post().to(admin::keys::create))
            .route("/accounts/{id}/keys", web::get().to(admin::keys::list))
            .route(
                "/accounts/{id}/keys/{key_id}",
                web::delete().to(admin::keys::revoke),
            )
            .route(
                "/accounts/{id}/suspend",
                web::post().to(admin::accounts::suspend),
            )
            .route(
                "/accounts/{id}/unsuspend",
                web::post().to(admin::accounts::unsuspend),
            )
            .route(
                "/accounts/{id}/limits",
                web::put().to(admin::accounts::set_limits),
            )
            .route("/flush", web::post().to(admin::flush::flush))
            .route("/exchange-rate", web::get().to(admin::payments::get_rate))
            .route("/exchange-rate", web::put().to(admin::payments::set_rate))
            .route(
                "/exchange-rate/history",
                web::get().to(admin::payments::rate_history),
            )
            .route(
                "/recharges/{id}/confirm",
                web::post().to(admin::payments::confirm),
            )
            .route("/redemption-codes", web::post().to(admin::codes::create))
            .route("/redemption-codes", web::get().to(admin::codes::list))
            .route("/invitations", web::post().to(admin::invitations::create))
            .route("/invitations", web::get().to(admin::invitations::list))
            .route("/referral-rewards", web::get().to(admin::referrals::list))
            .route(
                "/referral-rewards/{id}/approve",
                web::post().to(admin::referrals::approve),
            )
            .route(
                "/referral-rewards/{id}/reverse",
                web::post().to(admin::referrals::reverse),
            )
            .default_service(web::to(customer::not_found)),
    );
}
