//! `POST /admin/v1/flush`: write settled usage now instead of at the next interval.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::openapi::{AdminUnauthorized, AdminUnavailable, TooManyFailures};
use crate::http::AppState;

/// What a flush on demand wrote.
#[derive(Serialize, ToSchema)]
pub struct Flushed {
    /// Whether everything settled before the call is now written.
    flushed: bool,
    /// Records settled and not yet written (those that settled since the call).
    backlog: u64,
    /// Records written since the service started.
    flushed_records: u64,
}

/// Answers `flushed: true` once everything settled before the call is written; `backlog`
/// counts what settled since.
#[utoipa::path(
    post,
    path = "/admin/v1/flush",
    operation_id = "admin_flush",
    tag = "admin: operations",
    summary = "Write settled usage now",
    responses(
        (status = 200, description = "The flush ran", body = Flushed),
        (status = 401, response = AdminUnauthorized),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn flush(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let empty = state.engine.flusher().flush_now().await;
    let stats = state.engine.flusher_stats();
    Ok(HttpResponse::Ok().json(Flushed {
        flushed: empty,
        backlog: stats.backlog,
        flushed_records: stats.flushed_records,
    }))
}
