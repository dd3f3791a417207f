//! `POST /admin/v1/flush`: write settled usage now instead of at the next interval.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::AppState;

/// Answers `flushed: true` once everything settled before the call is written; `backlog`
/// counts what settled since.
pub async fn flush(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let empty = state.engine.flusher().flush_now().await;
    let stats = state.engine.flusher_stats();
    Ok(HttpResponse::Ok().json(json!({
        "flushed": empty,
        "backlog": stats.backlog,
        "flushed_records": stats.flushed_records,
    })))
}
