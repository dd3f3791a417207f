//! The request bodies and query strings of the customer routes that read their input field
//! by field ([`crate::http::customer::Fields`], the usage routes' query parser) rather than
//! into a typed request. These types exist only to describe that input; the handler's list of
//! accepted names and these fields must agree, which `tests/api/openapi.rs` checks against
//! the running service.
//!
//! A body field that may be left out may also be `null`. Fields not listed are refused (400,
//! naming the field).

#![allow(dead_code)] // Described, never built: the handlers read the fields themselves.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `POST /api/v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Trimmed and lowercased; it must have a local part, an `@` and a dotted domain.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$",
        example = "alice@example.com"
    )]
    email: String,
    /// At least 8 characters, with a letter and a digit.
    #[schema(min_length = 8, max_length = 1024, example = "correct horse 9")]
    password: String,
    /// An invitation code from another account's `invite_code`.
    #[schema(max_length = 64)]
    invite_code: Option<String>,
    /// The language of the account's emails; without it, `Accept-Language` decides.
    language: Option<Language>,
}

/// A language tollgate writes its emails in.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Zh,
}

/// `POST /api/v1/auth/verify-email`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailBody {
    /// The `token` of the emailed link.
    #[schema(max_length = 128)]
    token: String,
}

/// `POST /api/v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$",
        example = "alice@example.com"
    )]
    email: String,
    #[schema(max_length = 1024)]
    password: String,
}

/// `POST /api/v1/auth/password-reset`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetBody {
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$",
        example = "alice@example.com"
    )]
    email: String,
}

/// `POST /api/v1/auth/password-reset/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirmBody {
    /// The `token` of the emailed link.
    #[schema(max_length = 128)]
    token: String,
    /// The new password: at least 8 characters, with a letter and a digit.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// `PUT /api/v1/me/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    #[schema(max_length = 1024)]
    current_password: String,
    /// At least 8 characters, with a letter and a digit.
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

/// `DELETE /api/v1/me`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountBody {
    /// The account's password, to confirm.
    #[schema(max_length = 1024)]
    password: String,
}

/// The filters of `GET /api/v1/usage`. Each may be given once; an empty value counts as
/// absent, and a name not listed is refused.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Requests that started at or after this RFC 3339 time.
    from: Option<DateTime<Utc>>,
    /// Requests that started before this RFC 3339 time; not before `from`.
    to: Option<DateTime<Utc>>,
    /// One model id, as billed.
    #[param(max_length = 200)]
    model: Option<String>,
    /// One of the account's keys; another account's is 404.
    key_id: Option<Uuid>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Rows per page, 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The filters of `GET /api/v1/usage.csv`: those of `/api/v1/usage` but the paging.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageCsvQuery {
    /// Requests that started at or after this RFC 3339 time.
    from: Option<DateTime<Utc>>,
    /// Requests that started before this RFC 3339 time; not before `from`.
    to: Option<DateTime<Utc>>,
    /// One model id, as billed.
    #[param(max_length = 200)]
    model: Option<String>,
    /// One of the account's keys; another account's is 404.
    key_id: Option<Uuid>,
}

/// The range of `GET /api/v1/usage/daily`: at most 366 days, the last 30 by default.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// Start of the range (RFC 3339); 30 days before `to` by default.
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339); now by default.
    to: Option<DateTime<Utc>>,
}

/// The paging of `GET /api/v1/ledger`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Entries per page, 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}
