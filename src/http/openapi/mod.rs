//! The OpenAPI document of the customer and admin APIs, generated from the handlers with
//! utoipa and served at `GET /api/v1/openapi.json`, and `GET /api/docs`, a page that renders
//! it (docs/adr/0020-openapi-generated-with-utoipa.md, docs/API.md).
//!
//! Each handler carries its own `#[utoipa::path]`: its method and path, parameters, body and
//! every status it answers. The request and response types derive `ToSchema` where they are
//! the types the handler reads or writes; [`bodies`] describes the input that handlers read
//! field by field. [`ApiDoc`] lists the handlers; `tests/api/openapi.rs` fails when a route
//! registered under `/api/v1` or `/admin/v1` is missing from the served document.

pub mod bodies;

use std::sync::LazyLock;

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use super::admin;
use super::customer;
use super::error::{ApiError, ErrorBody};

/// The document: every customer route under `/api/v1` and every admin route under
/// `/admin/v1`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate",
        description = "The customer API (`/api/v1`) and the operator's API (`/admin/v1`) of tollgate, a metering proxy for Anthropic-compatible upstreams. Bodies are JSON; money is a decimal string (`\"12.5\"`), never a number. Every error answers `{\"error\":{\"code\",\"message\",\"field\"?}}`. The Anthropic-compatible proxy under `/v1` is described by Anthropic's own API reference and is not in this document.",
    ),
    paths(
        customer::auth::register,
        customer::auth::verify_email,
        customer::auth::login,
        customer::auth::logout,
        customer::auth::password_reset,
        customer::auth::password_reset_confirm,
        customer::me::me,
        customer::me::change_password,
        customer::me::delete,
        customer::keys::create,
        customer::keys::list,
        customer::keys::revoke,
        customer::history::usage,
        customer::history::usage_csv,
        customer::history::daily,
        customer::history::ledger,
        customer::recharges::create,
        customer::recharges::list,
        customer::recharges::get,
        customer::payments::epay_notify_get,
        customer::payments::epay_notify_post,
        customer::payments::payment_webhook,
        customer::pricing::pricing,
        customer::redeem::redeem,
        customer::referrals::referrals,
        openapi_json,
        admin::accounts::create,
        admin::accounts::get,
        admin::balance::credit,
        admin::balance::adjust,
        admin::keys::create,
        admin::keys::list,
        admin::keys::revoke,
        admin::accounts::suspend,
        admin::accounts::unsuspend,
        admin::accounts::set_limits,
        admin::flush::flush,
        admin::payments::get_rate,
        admin::payments::set_rate,
        admin::payments::rate_history,
        admin::payments::confirm,
        admin::codes::create,
        admin::codes::list,
        admin::invitations::create,
        admin::invitations::list,
        admin::referrals::list,
        admin::referrals::approve,
        admin::referrals::reverse,
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            SessionUnauthorized,
            AdminUnauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            IdempotencyKeyReused,
            TooManyFailures,
            RateLimited,
            AdminUnavailable,
            Unavailable,
        ),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Registration, email verification, sessions, password resets"),
        (name = "account", description = "The customer's own account"),
        (name = "keys", description = "The customer's API keys"),
        (name = "usage", description = "Settled requests and the ledger"),
        (name = "meta", description = "This document"),
        (name = "admin: accounts", description = "Operators: accounts, their status and limits"),
        (name = "admin: balance", description = "Operators: credits and adjustments"),
        (name = "admin: keys", description = "Operators: an account's API keys"),
        (name = "admin: operations", description = "Operators: running the service"),
        (name = "payments", description = "Recharge orders and the payment providers' callbacks"),
        (name = "admin: payments", description = "Operators: the exchange rate and confirming orders by hand"),
    ),
)]
pub struct ApiDoc;

/// The two bearer schemes: a customer's session token, and the operator's admin token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut session = Http::new(HttpAuthScheme::Bearer);
        session.description = Some(
            "A session token from `POST /api/v1/auth/login` (`ses_...`). API keys are not accepted here."
                .into(),
        );
        components.add_security_scheme("customer_session", SecurityScheme::Http(session));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some("The operator's `admin.token`.".into());
        components.add_security_scheme("admin_token", SecurityScheme::Http(admin));
    }
}

/// The serialized document, built once: it depends only on the code.
static DOCUMENT: LazyLock<Result<String, String>> = LazyLock::new(|| {
    let mut document = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    say_what_the_parsers_accept(&mut document);
    serde_json::to_string(&document).map_err(|e| e.to_string())
});

/// Two rules of tollgate's input parsers that utoipa cannot say from the Rust types, applied
/// to the generated document:
/// - a body that may be left out (its handler reads an empty body as `{}`) is not therefore
///   one that may be `null`: utoipa writes an `Option<T>` body as "`T` or `null`", and the
///   handlers refuse a `null`;
/// - an optional query parameter given empty (`?to=`) counts as absent, so the empty string is
///   a valid value of every one of them, whatever its type.
fn say_what_the_parsers_accept(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        if let Some(body) = operation.get_mut("requestBody") {
            let optional = body.get("required") != Some(&Value::Bool(true));
            if let (true, Some(content)) = (
                optional,
                body.get_mut("content").and_then(Value::as_object_mut),
            ) {
                for media in content.values_mut() {
                    if let Some(schema) = media.get_mut("schema") {
                        drop_null_alternative(schema);
                    }
                }
            }
        }
        let parameters = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for parameter in parameters {
            let optional_query = parameter.get("in") == Some(&json!("query"))
                && parameter.get("required") != Some(&Value::Bool(true));
            if let (true, Some(schema)) = (optional_query, parameter.get_mut("schema")) {
                let plain_string = schema.get("type") == Some(&json!("string"))
                    && schema.get("format").is_none()
                    && schema.get("minLength").is_none()
                    && schema.get("pattern").is_none();
                if !plain_string {
                    let typed = schema.take();
                    *schema = json!({ "anyOf": [typed, { "type": "string", "maxLength": 0 }] });
                }
            }
        }
    }
}

/// `{"oneOf":[X,{"type":"null"}]}` becomes `X`.
fn drop_null_alternative(schema: &mut Value) {
    let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) else {
        return;
    };
    let is_null = |s: &Value| s.get("type") == Some(&json!("null"));
    let others: Vec<&Value> = alternatives.iter().filter(|s| !is_null(s)).collect();
    if let [only] = others.as_slice() {
        if others.len() < alternatives.len() {
            *schema = (*only).clone();
        }
    }
}

/// The methods the document lists for a request path, if the path is one of its routes
/// (`/api/v1/keys/0194...` is `/api/v1/keys/{id}`): what a `405 Method Not Allowed` names in
/// its `Allow` header.
pub fn documented_methods(path: &str) -> Option<String> {
    ROUTES
        .iter()
        .find(|(template, _)| template_matches(template, path))
        .map(|(_, methods)| methods.clone())
}

/// Each documented path with its methods, `GET, POST`.
static ROUTES: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let document: Value = DOCUMENT
        .as_ref()
        .ok()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let Some(paths) = document.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(template, item)| {
            let methods: Vec<String> = item
                .as_object()
                .map(|item| {
                    item.keys()
                        .filter(|key| HTTP_METHODS.contains(&key.as_str()))
                        .map(|key| key.to_ascii_uppercase())
                        .collect()
                })
                .unwrap_or_default();
            (template.clone(), methods.join(", "))
        })
        .collect()
});

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Whether `path` is an instance of `template`, where `{name}` stands for one non-empty
/// segment.
fn template_matches(template: &str, path: &str) -> bool {
    let mut parts = template.split('/');
    let mut segments = path.split('/');
    loop {
        match (parts.next(), segments.next()) {
            (None, None) => return true,
            (Some(part), Some(segment)) => {
                let variable = part.starts_with('{') && part.ends_with('}');
                if (variable && segment.is_empty()) || (!variable && part != segment) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// `GET /api/v1/openapi.json`: public, like the pricing it sits beside.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "get_openapi_document",
    tag = "meta",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of the customer and admin APIs", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Result<HttpResponse, ApiError> {
    match &*DOCUMENT {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.clone())),
        Err(error) => Err(ApiError::internal(error)),
    }
}

/// `GET /api/docs`: a page that fetches the document and lists its operations. It loads
/// nothing from anywhere else.
pub async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ))
        .body(include_str!("docs.html"))
}

/// An account's throttles, as the admin API reads and shows them. It mirrors the engine's
/// `AccountLimits`, which knows nothing of OpenAPI; a unit test keeps the two in step.
#[derive(ToSchema)]
#[allow(dead_code)] // Described, never built.
pub struct Limits {
    /// Requests per minute; 0 is unlimited.
    #[schema(maximum = 2147483647)]
    requests_per_minute: u32,
    /// Tokens per minute; 0 is unlimited.
    #[schema(maximum = 2147483647)]
    tokens_per_minute: u32,
    /// Requests in flight at once; 0 is unlimited.
    #[schema(maximum = 2147483647)]
    max_concurrent: u32,
}

/// `{}`: an answer with nothing to say but its status.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The request is malformed or a value is refused; `error.field` names the input to fix
/// when one is to blame.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BadRequest(ErrorBody);

/// No valid session: send `Authorization: Bearer <token from /api/v1/auth/login>`.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct SessionUnauthorized(ErrorBody);

/// No valid admin token: send `Authorization: Bearer <admin.token>`.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct AdminUnauthorized(ErrorBody);

/// The caller is known but may not do this; the message says what would allow it.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// The thing named does not exist, or is not the caller's.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// The write collides with what exists, such as a taken email.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// The body is larger than the route reads (16 KiB on the customer API, 256 KiB on the
/// admin API).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct PayloadTooLarge(ErrorBody);

/// The `Idempotency-Key` was already used on this route for this account with another body;
/// nothing was changed.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct IdempotencyKeyReused(ErrorBody);

/// Too many failed authentications from this address; retry after `retry-after` seconds.
#[derive(ToResponse)]
#[response(headers(("retry-after" = u64, description = "Seconds to wait")))]
#[allow(dead_code)]
pub struct TooManyFailures(ErrorBody);

/// Too many attempts from this address or network (registrations); retry after
/// `retry-after` seconds.
#[derive(ToResponse)]
#[response(headers(("retry-after" = u64, description = "Seconds to wait")))]
#[allow(dead_code)]
pub struct RateLimited(ErrorBody);

/// A dependency (the ledger) cannot be written now; retrying later may work.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

/// The admin API is switched off: `admin.token` is empty.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct AdminUnavailable(ErrorBody);

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_limits_schema_names_the_engines_fields() {
        let engine = serde_json::to_value(tollgate_actors::AccountLimits::default()).unwrap();
        let mut engine: Vec<_> = engine.as_object().unwrap().keys().cloned().collect();
        let schema = serde_json::to_value(Limits::schema()).unwrap();
        let mut documented: Vec<_> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        engine.sort();
        documented.sort();
        assert_eq!(engine, documented);
    }

    #[test]
    fn a_path_matches_its_template_segment_by_segment() {
        let template = "/admin/v1/accounts/{id}/keys/{key_id}";
        assert!(template_matches(template, "/admin/v1/accounts/a/keys/b"));
        assert!(!template_matches(template, "/admin/v1/accounts//keys/b"));
        assert!(!template_matches(template, "/admin/v1/accounts/a/keys"));
        assert!(!template_matches(template, "/admin/v1/accounts/a/keys/b/c"));
        assert!(!template_matches(template, "/admin/v1/accounts/a/key/b"));
        assert!(template_matches("/api/v1/me", "/api/v1/me"));
        assert!(!template_matches("/api/v1/me", "/api/v1/me/"));
        assert_eq!(
            documented_methods("/api/v1/keys").as_deref(),
            Some("GET, POST")
        );
        assert_eq!(
            documented_methods("/api/v1/keys/0194").as_deref(),
            Some("DELETE")
        );
        assert_eq!(documented_methods("/api/v1/nothing"), None);
    }

    #[test]
    fn optional_bodies_are_not_nullable_and_optional_query_values_may_be_empty() {
        let mut document = json!({"paths": {"/x": {"post": {
            "requestBody": {"content": {"application/json": {"schema":
                {"oneOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}}}},
            "parameters": [
                {"name": "limit", "in": "query", "required": false,
                 "schema": {"type": "integer"}},
                {"name": "model", "in": "query", "required": false,
                 "schema": {"type": "string"}},
                {"name": "id", "in": "path", "required": true,
                 "schema": {"type": "string", "format": "uuid"}}
            ]
        }}}});
        say_what_the_parsers_accept(&mut document);
        let operation = &document["paths"]["/x"]["post"];
        assert_eq!(
            operation["requestBody"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/X"})
        );
        assert_eq!(
            operation["parameters"][0]["schema"],
            json!({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 0}]})
        );
        assert_eq!(
            operation["parameters"][1]["schema"],
            json!({"type": "string"})
        );
        assert_eq!(
            operation["parameters"][2]["schema"],
            json!({"type": "string", "format": "uuid"})
        );
    }

    #[test]
    fn the_document_is_openapi_3_with_unique_operation_ids_and_references_that_resolve() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT.as_ref().unwrap()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let mut ids = std::collections::BTreeSet::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap();
            let pointer = target.trim_start_matches('#');
            assert!(
                document.pointer(pointer).is_some(),
                "{target} does not resolve"
            );
        }
    }
}
