//! HTTP routes: the Anthropic-compatible proxy (`/v1`), the admin API (`/admin/v1`), health and
//! metrics.

pub mod admin;
pub mod errors;
pub mod proxy;
pub mod request_id;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpMessage, HttpResponse};
use governor::DefaultKeyedRateLimiter;
use metrics_exporter_prometheus::PrometheusHandle;
use tollgate_actors::pricing::RateCard;
use tollgate_actors::Engine;
use uuid::Uuid;

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
    pub stream_drain: Duration,
    pub count_tokens_limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    pub metrics: PrometheusHandle,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::head().to(proxy::root))
        .route("/", web::get().to(proxy::root))
        .route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route(
            "/api/event_logging/batch",
            web::post().to(proxy::event_logging),
        )
        .service(
            web::scope("/v1")
                .app_data(web::QueryConfig::default().error_handler(|error, req| {
                    let rid = req
                        .extensions()
                        .get::<request_id::RequestId>()
                        .copied()
                        .unwrap_or(request_id::RequestId(Uuid::now_v7()));
                    errors::ApiError::new(400, format!("invalid query string: {error}"), rid).into()
                }))
                .route("/messages", web::post().to(proxy::messages))
                .route(
                    "/messages/count_tokens",
                    web::post().to(proxy::count_tokens),
                )
                .route("/models", web::get().to(proxy::list_models))
                .route("/models/{id}", web::get().to(proxy::get_model))
                .default_service(web::to(proxy::not_found)),
        )
        .service(
            web::scope("/admin/v1")
                .route("/accounts", web::post().to(admin::create_account))
                .route("/accounts/{id}", web::get().to(admin::get_account))
                .route("/accounts/{id}/credit", web::post().to(admin::credit))
                .route("/accounts/{id}/adjust", web::post().to(admin::adjust))
                .route("/accounts/{id}/keys", web::post().to(admin::create_key))
                .route("/accounts/{id}/keys", web::get().to(admin::list_keys))
                .route(
                    "/accounts/{id}/keys/{key_id}",
                    web::delete().to(admin::revoke_key),
                )
                .route("/accounts/{id}/suspend", web::post().to(admin::suspend))
                .route("/accounts/{id}/unsuspend", web::post().to(admin::unsuspend))
                .route("/accounts/{id}/limits", web::put().to(admin::set_limits))
                .route("/flush", web::post().to(admin::flush)),
        );
}

/// `GET /healthz`: 200 when Postgres answers and the ledger is being written.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await.is_ok();
    let ledger = !state.engine.flusher_stats().failing;
    let body = serde_json::json!({
        "status": if database && ledger { "ok" } else { "degraded" },
        "database": if database { "ok" } else { "unreachable" },
        "ledger": if ledger { "ok" } else { "failing" },
    });
    if database && ledger {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let flusher = state.engine.flusher_stats();
    metrics::gauge!("tollgate_unflushed_usage_records").set(flusher.backlog as f64);
    metrics::gauge!("tollgate_flushed_usage_records").set(flusher.flushed_records as f64);
    metrics::gauge!("tollgate_flushes").set(flusher.flushes as f64);
    metrics::gauge!("tollgate_ledger_failing").set(if flusher.failing { 1.0 } else { 0.0 });
    metrics::gauge!("tollgate_active_accounts").set(state.engine.active_accounts() as f64);
    metrics::gauge!("tollgate_orphaned_accounts").set(state.engine.orphaned_accounts() as f64);
    metrics::gauge!("tollgate_api_keys").set(state.keys.len() as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
