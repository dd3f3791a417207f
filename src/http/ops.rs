//! Health and metrics for whoever runs tollgate.

use actix_web::{web, HttpResponse};

use super::AppState;

/// `GET /healthz`: 200 when Postgres answers and the ledger is being written.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
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
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
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
