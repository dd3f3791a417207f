//! The customer API under `/api/v1`: registration, email verification, login sessions, the
//! customer's own account and its API keys. A session token from login authenticates with
//! `Authorization: Bearer` ([`crate::http::extract::Session`]); API keys do not, and session
//! tokens do not reach the proxy.

pub mod auth;
pub mod history;
pub mod keys;
pub mod me;
pub mod payments;
pub mod pricing;
pub mod recharges;
pub mod redeem;
pub mod referrals;
pub mod throttle;

use actix_web::{web, HttpRequest};
use serde_json::{Map, Value};

use self::throttle::{LoginThrottle, SignupThrottle};
use super::error::ApiError;
use crate::config::{AccountSettings, PaymentSettings};

/// The largest body any customer route reads: its fields are a few short strings. Larger
/// bodies get 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The customer API's throttles, shared by every worker.
pub struct CustomerGuards {
    pub signups: SignupThrottle,
    pub logins: LoginThrottle,
    /// Failed redemption-code attempts, per client address and per account.
    pub redemptions: LoginThrottle,
}

impl CustomerGuards {
    pub fn new(settings: &AccountSettings, payments: &PaymentSettings) -> CustomerGuards {
        CustomerGuards {
            signups: SignupThrottle::new(settings),
            logins: LoginThrottle::new(settings),
            redemptions: LoginThrottle::per_minute(
                payments.redeem_failures_per_ip_per_minute,
                payments.redeem_failures_per_account_per_minute,
            ),
        }
    }

    /// Forgets counts that have recovered (run by the service's prune loop).
    pub fn prune(&self) {
        self.signups.prune();
        self.logins.prune();
        self.redemptions.prune();
    }
}

/// The customer API's routes, inside its `/api/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route("/auth/register", web::post().to(auth::register))
        .route("/auth/verify-email", web::post().to(auth::verify_email))
        .route("/auth/login", web::post().to(auth::login))
        .route("/auth/logout", web::post().to(auth::logout))
        .route("/auth/password-reset", web::post().to(auth::password_reset))
        .route(
            "/auth/password-reset/confirm",
            web::post().to(auth::password_reset_confirm),
        )
        .route("/me", web::get().to(me::me))
        .route("/me", web::delete().to(me::delete))
        .route("/me/password", web::put().to(me::change_password))
        .route("/keys", web::post().to(keys::create))
        .route("/keys", web::get().to(keys::list))
        .route("/keys/{id}", web::delete().to(keys::revoke))
        .route("/usage", web::get().to(history::usage))
        .route("/usage.csv", web::get().to(history::usage_csv))
        .route("/usage/daily", web::get().to(history::daily))
        .route("/ledger", web::get().to(history::ledger))
        .route("/recharges", web::post().to(recharges::create))
        .route("/recharges", web::get().to(recharges::list))
        .route("/recharges/{id}", web::get().to(recharges::get))
        .route(
            "/payments/epay/notify",
            web::get().to(payments::epay_notify_get),
        )
        .route(
            "/payments/epay/notify",
            web::post().to(payments::epay_notify_post),
        )
        .route(
            "/payments/webhook",
            web::post().to(payments::payment_webhook),
        )
        .route("/pricing", web::get().to(pricing::pricing))
        .route("/redeem", web::post().to(redeem::redeem))
        .route("/referrals", web::get().to(referrals::referrals))
        .route(
            "/openapi.json",
            web::get().to(crate::http::openapi::openapi_json),
        )
        .default_service(web::to(not_found));
}

/// What a request that no route takes is answered: 405 with `Allow` where the path is a
/// route and only the method is wrong, 404 otherwise.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    tracing::debug!(path = req.path(), method = %req.method(), "no API route");
    match crate::http::openapi::documented_methods(req.path()) {
        Some(allow) => Err(ApiError::MethodNotAllowed { allow }),
        None => Err(ApiError::NotFound("route")),
    }
}

/// A JSON object body of string fields, each checked by name, so that every error names the
/// field it is about. Fields not in the route's list are refused: a misspelt optional field
/// silently ignored would change what the customer asked for.
pub struct Fields(Map<String, Value>);

impl Fields {
    pub fn parse(raw: &web::Bytes, allowed: &[&str]) -> Result<Fields, ApiError> {
        let raw: &[u8] = if raw.is_empty() { b"{}" } else { raw };
        let value: Value = serde_json::from_slice(raw)
            .map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid("the body must be a JSON object"));
        };
        crate::http::json::refuse_nul_in(&map)?;
        if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
            // The name is echoed only if it is short and printable: the message must stay
            // small and safe to log.
            let name = if unknown.len() <= 64 && unknown.chars().all(|c| c.is_ascii_graphic()) {
                unknown.as_str()
            } else {
                "(unprintable)"
            };
            return Err(ApiError::field(name, "unknown field"));
        }
        Ok(Fields(map))
    }

    /// A string field that may be absent (or null), at most `max_chars` long.
    pub fn optional(&self, name: &str, max_chars: usize) -> Result<Option<&str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.chars().count() <= max_chars => Ok(Some(text)),
            Some(Value::String(_)) => Err(ApiError::field(
                name,
                format!("longer than {max_chars} characters"),
            )),
            Some(_) => Err(ApiError::field(name, "must be a string")),
        }
    }

    pub fn required(&self, name: &str, max_chars: usize) -> Result<&str, ApiError> {
        self.optional(name, max_chars)?
            .ok_or_else(|| ApiError::field(name, "is required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Fields, ApiError> {
        Fields::parse(&web::Bytes::from(body.to_string()), &["email", "password"])
    }

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::Invalid { field, .. } => field,
            _ => None,
        }
    }

    #[test]
    fn every_refusal_names_its_field() {
        let fields = parse(r#"{"email":"a@b.co","password":7}"#).unwrap();
        assert_eq!(fields.required("email", 254).unwrap(), "a@b.co");
        assert_eq!(
            field_of(fields.required("password", 10).unwrap_err()).as_deref(),
            Some("password")
        );
        assert_eq!(
            field_of(fields.required("email", 3).unwrap_err()).as_deref(),
            Some("email")
        );
        let empty = parse("").unwrap();
        assert_eq!(
            field_of(empty.required("email", 254).unwrap_err()).as_deref(),
            Some("email")
        );
        assert_eq!(
            field_of(parse(r#"{"emial":"x"}"#).err().unwrap()).as_deref(),
            Some("emial")
        );
        assert!(field_of(parse("[1]").err().unwrap()).is_none());
        assert!(field_of(parse("{").err().unwrap()).is_none());
    }
}
