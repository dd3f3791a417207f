//! `GET /v1/models` and `GET /v1/models/{id}`, from the rate card: what is listed is what can
//! be billed.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use tollgate_actors::pricing::ModelCard;

use crate::auth::KeyOwner;
use crate::http::error::{AnthropicError, ProxyError};
use crate::http::request_id::RequestId;
use crate::http::AppState;

/// Anthropic's page size when `limit` is not given.
const DEFAULT_PAGE: usize = 20;
/// Anthropic's largest page.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
pub struct ModelsQuery {
    after_id: Option<String>,
    before_id: Option<String>,
    limit: Option<usize>,
}

fn model_info(card: &ModelCard) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": card.id,
        "display_name": card.display_name,
        "created_at": card.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// One page of `all`, as Anthropic pages it: after `after_id`, before `before_id`, or from the
/// start; and whether there is more in the direction of paging.
fn page<'a>(
    all: &[&'a ModelCard],
    query: &ModelsQuery,
    limit: usize,
) -> (Vec<&'a ModelCard>, bool) {
    let position = |id: &str| all.iter().position(|card| card.id == id);
    if let Some(before) = &query.before_id {
        let end = position(before).unwrap_or(0);
        let start = end.saturating_sub(limit);
        let page = all.iter().take(end).skip(start).copied().collect();
        return (page, start > 0);
    }
    let start = match &query.after_id {
        Some(after) => position(after).map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<_> = all.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < all.len();
    (page, has_more)
}

/// `GET /v1/models`
pub async fn list_models(
    owner: KeyOwner,
    state: web::Data<AppState>,
    query: web::Query<ModelsQuery>,
    rid: RequestId,
) -> Result<HttpResponse, AnthropicError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ProxyError::field("limit", "must be between 1 and 1000").at(rid));
    }
    // A key with a model allowlist sees only the models it may call.
    let all: Vec<_> = state
        .card
        .models()
        .filter(|card| owner.allows_model(&card.id))
        .collect();
    let (page, has_more) = page(&all, &query, limit);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "data": page.iter().map(|card| model_info(card)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first().map(|card| card.id.clone()),
        "last_id": page.last().map(|card| card.id.clone()),
    })))
}

/// `GET /v1/models/{id}`
pub async fn get_model(
    owner: KeyOwner,
    state: web::Data<AppState>,
    path: web::Path<String>,
    rid: RequestId,
) -> Result<HttpResponse, AnthropicError> {
    // A model the key may not call is, to that key, not there.
    let card = state
        .card
        .model(&path)
        .filter(|card| owner.allows_model(&card.id));
    let card = card.ok_or_else(|| {
        ProxyError::NotFound {
            what: format!("model: {path}"),
        }
        .at(rid)
    })?;
    Ok(HttpResponse::Ok().json(model_info(card)))
}
