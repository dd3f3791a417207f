//! `/api/v1/auth`: register, verify the email, log in and out, reset a forgotten password.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration as Span, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Fields;
use crate::accounts::{verify_password, Email, Password, SecretToken, TokenHash};
use crate::email::link_email;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{client_ip, Session};
use crate::http::openapi::bodies::{
    LoginBody, PasswordResetBody, PasswordResetConfirmBody, RegisterBody, VerifyEmailBody,
};
use crate::http::openapi::{
    BadRequest, Conflict, Empty, PayloadTooLarge, RateLimited, SessionUnauthorized, TooManyFailures,
};
use crate::http::AppState;
use crate::store::{DbError, NewCustomer, TokenPurpose};

/// The longest email accepted (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// Passwords past this are refused unhashed (hashing time grows with the input).
const MAX_PASSWORD_CHARS: usize = 1024;
/// Invite codes are 12 characters; a little room for codes an operator chose.
const MAX_INVITE_CODE_CHARS: usize = 64;
/// An emailed token is 64 hex digits; anything much longer is not one.
const MAX_TOKEN_CHARS: usize = 128;
/// How long a verification link works.
const VERIFICATION_TTL: Span = Span::days(3);
/// How long a password-reset link works (the terms say 30 minutes).
const RESET_TTL: Span = Span::minutes(30);

/// The one answer to a login that fails, whichever part was wrong.
const WRONG_LOGIN: &str = "the email or the password is wrong";

fn db_error(error: DbError) -> ApiError {
    match error {
        DbError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
        DbError::Exhausted(_) => {
            ApiError::field("invite_code", "the invitation code is used up or expired")
        }
        other => ApiError::internal(other),
    }
}

/// The language of the customer's emails: the body's `language`, else the first of
/// `Accept-Language` tollgate writes, else English.
fn language_of(req: &HttpRequest, asked: Option<&str>) -> Result<&'static str, ApiError> {
    match asked.map(str::trim) {
        Some("en") => return Ok("en"),
        Some("zh") => return Ok("zh"),
        Some(_) => return Err(ApiError::field("language", "must be \"en\" or \"zh\"")),
        None => {}
    }
    let header = req
        .headers()
        .get("accept-language")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    for entry in header.split(',') {
        let tag = entry.split(';').next().unwrap_or("").trim();
        let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "zh" => return Ok("zh"),
            "en" => return Ok("en"),
            _ => {}
        }
    }
    Ok("en")
}

/// Whether the operator refuses registrations from this address's domain (a listed domain
/// blocks its subdomains too).
fn domain_blocked(email: &Email, blocked: &[String]) -> bool {
    let domain = email.as_str().rsplit('@').next().unwrap_or("");
    blocked.iter().any(|entry| {
        let entry = entry.trim().trim_start_matches('.').to_ascii_lowercase();
        !entry.is_empty()
            && (domain == entry
                || domain
                    .strip_suffix(entry.as_str())
                    .is_some_and(|rest| rest.ends_with('.')))
    })
}

/// `<server.public_url><path>?token=<token>`: what the customer's email links to.
fn link(state: &AppState, path: &str, token: &SecretToken) -> String {
    let base = state.settings.server.public_url.trim_end_matches('/');
    format!("{base}{path}?token={}", token.expose())
}

/// With no mail server configured, the link is written to the log at info level instead,
/// so that a demo can be followed by hand. (With one, the link goes only into the email.)
fn log_link(email: &str, purpose: TokenPurpose, link: &str) {
    tracing::info!(
        to = email,
        ?purpose,
        link,
        "email link (no email.smtp_url configured)"
    );
}

/// A customer just registered.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The account id, the same as `/admin/v1/accounts/{id}`'s.
    id: Uuid,
    email: String,
    #[schema(example = "active")]
    status: &'static str,
    /// `false` until the emailed link is followed, unless verification is switched off.
    email_verified: bool,
}

/// A new login session.
#[derive(Serialize, ToSchema)]
pub struct LoginSession {
    /// Send it as `Authorization: Bearer <token>` to the customer API.
    token: String,
    expires_at: DateTime<Utc>,
}

/// `POST /api/v1/auth/register {"email","password","invite_code"?,"language"?}` → 201
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    operation_id = "register",
    tag = "auth",
    summary = "Register an account",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered; a verification link is emailed when verification is on", body = Registered),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
    ),
)]
pub async fn register(
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["email", "password", "invite_code", "language"])?;
    let email = Email::parse(body.required("email", MAX_EMAIL_CHARS)?)
        .map_err(|error| ApiError::field("email", error))?;
    let password = Password::new(body.required("password", MAX_PASSWORD_CHARS)?)
        .map_err(|error| ApiError::field("password", error))?;
    let language = language_of(&req, body.optional("language", 8)?)?;
    let accounts = &state.settings.accounts;
    if domain_blocked(&email, &accounts.blocked_email_domains) {
        return Err(ApiError::field(
            "email",
            "registrations from this email domain are not accepted",
        ));
    }
    // Counted once the request is well formed, before the costly hash and before the
    // invite code is looked up, so that codes cannot be guessed faster than accounts made.
    let ip = client_ip(&req, &state.settings.server.trusted_proxies);
    state
        .customers
        .signups
        .admit(ip)
        .map_err(|retry_after| ApiError::RateLimited {
            what: "registrations from this address or network",
            retry_after,
        })?;
    // An account's own code, or else an operator's invitation code that can still be used.
    let invite_code = body
        .optional("invite_code", MAX_INVITE_CODE_CHARS)?
        .map(|code| code.trim().to_uppercase());
    let (invited_by, invitation) = match &invite_code {
        Some(code) => match state.store.inviter(code).await.map_err(db_error)? {
            Some(inviter) => (Some(inviter), None),
            None => {
                let inviter = state
                    .store
                    .usable_invitation(code)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| {
                        ApiError::field(
                            "invite_code",
                            "no such invite code, or it is used up or expired",
                        )
                    })?;
                (inviter, Some(code.as_str()))
            }
        },
        None => (None, None),
    };
    let password_hash = password.hash().await.map_err(ApiError::internal)?;
    let verify = accounts.require_email_verification;
    let token = verify.then(SecretToken::link);
    let token_hash = token.as_ref().map(SecretToken::hash);
    let limits = state.settings.default_limits();
    let verification_link = token
        .as_ref()
        .map(|token| link(&state, "/verify-email", token));
    let email_out = verification_link
        .as_deref()
        .filter(|_| state.mailer.is_configured())
        .map(|link| link_email(email.as_str(), language, TokenPurpose::VerifyEmail, link));
    let row = state
        .store
        .register_customer(NewCustomer {
            email: email.as_str(),
            password_hash: &password_hash,
            limits: &limits,
            email_verified: !verify,
            invited_by,
            language,
            signup_ip: Some(ip),
            invitation,
            verification: token_hash
                .as_ref()
                .map(|hash| (hash, Utc::now() + VERIFICATION_TTL)),
            email_out: email_out.as_ref(),
        })
        .await
        .map_err(db_error)?;
    tracing::info!(account = %row.id, "customer registered");
    if let Some(link) = verification_link.filter(|_| !state.mailer.is_configured()) {
        log_link(&row.email, TokenPurpose::VerifyEmail, &link);
    }
    Ok(HttpResponse::Created().json(Registered {
        id: row.id,
        email: row.email,
        status: row.status.as_str(),
        email_verified: row.email_verified,
    }))
}

/// Always `{"email_verified": true}`.
#[derive(Serialize, ToSchema)]
pub struct EmailVerified {
    email_verified: bool,
}

/// `POST /api/v1/auth/verify-email {"token"}` → 200
#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email",
    operation_id = "verify_email",
    tag = "auth",
    summary = "Verify an email address with the emailed token",
    request_body = VerifyEmailBody,
    responses(
        (status = 200, description = "The email is verified", body = EmailVerified),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
pub async fn verify_email(
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["token"])?;
    let token = TokenHash::of(body.required("token", MAX_TOKEN_CHARS)?.trim());
    let account = state
        .store
        .verify_email(&token)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::field("token", "unknown, already used or expired"))?;
    tracing::info!(%account, "email verified");
    Ok(HttpResponse::Ok().json(EmailVerified {
        email_verified: true,
    }))
}

/// `POST /api/v1/auth/login {"email","password"}` → 200 `{"token","expires_at"}`
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    summary = "Log in",
    request_body = LoginBody,
    responses(
        (status = 200, description = "A session token", body = LoginSession),
        (status = 400, response = BadRequest),
        (status = 401, description = "The email or the password is wrong", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
    ),
)]
pub async fn login(
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["email", "password"])?;
    let email = Email::parse(body.required("email", MAX_EMAIL_CHARS)?)
        .map_err(|error| ApiError::field("email", error))?;
    let password = body.required("password", MAX_PASSWORD_CHARS)?.to_string();
    let ip = client_ip(&req, &state.settings.server.trusted_proxies);
    let throttle = &state.customers.logins;
    throttle
        .check(ip, email.as_str())
        .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
    let (account, hash) = match state
        .store
        .login_of(email.as_str())
        .await
        .map_err(db_error)?
    {
        Some((id, hash)) => (Some(id), hash),
        None => (None, None),
    };
    // An unknown email verifies a dummy hash: the same work, the same time, the same answer.
    let matches = verify_password(password, hash)
        .await
        .map_err(ApiError::internal)?;
    let Some(account) = account.filter(|_| matches) else {
        throttle
            .fail(ip, email.as_str())
            .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
        return Err(ApiError::Unauthorized(WRONG_LOGIN));
    };
    let token = SecretToken::session();
    let ttl = Span::hours(i64::from(state.settings.accounts.session_ttl_hours.max(1)));
    let expires_at = Utc::now() + ttl;
    state
        .store
        .create_session(&token.hash(), account, expires_at)
        .await
        .map_err(db_error)?;
    tracing::info!(%account, "customer logged in");
    Ok(HttpResponse::Ok().json(LoginSession {
        token: token.expose().to_string(),
        expires_at,
    }))
}

/// `POST /api/v1/auth/logout` → 204: the session presented ends.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    summary = "Log out",
    responses(
        (status = 204, description = "The session presented has ended"),
        (status = 401, response = SessionUnauthorized),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn logout(
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .store
        .revoke_session(&session.token_hash)
        .await
        .map_err(db_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/auth/password-reset {"email"}` → 202 whether or not the email has an
/// account, so the answer tells no one which emails do.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password-reset",
    operation_id = "request_password_reset",
    tag = "auth",
    summary = "Ask for a password-reset link",
    request_body = PasswordResetBody,
    responses(
        (status = 202, description = "A link is emailed if the address has an account", body = Empty),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
pub async fn password_reset(
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["email"])?;
    let email = Email::parse(body.required("email", MAX_EMAIL_CHARS)?)
        .map_err(|error| ApiError::field("email", error))?;
    if let Some((account, language)) = state
        .store
        .reset_target(email.as_str())
        .await
        .map_err(db_error)?
    {
        let token = SecretToken::link();
        state
            .store
            .create_token(
                &token.hash(),
                account,
                TokenPurpose::PasswordReset,
                Utc::now() + RESET_TTL,
            )
            .await
            .map_err(db_error)?;
        let link = link(&state, "/reset-password", &token);
        if state.mailer.is_configured() {
            let email = link_email(
                email.as_str(),
                &language,
                TokenPurpose::PasswordReset,
                &link,
            );
            state
                .store
                .enqueue_email(account, &email)
                .await
                .map_err(db_error)?;
        } else {
            log_link(email.as_str(), TokenPurpose::PasswordReset, &link);
        }
    }
    Ok(HttpResponse::Accepted().json(Empty {}))
}

/// `POST /api/v1/auth/password-reset/confirm {"token","password"}` → 200: the new password
/// is set and every session ends.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password-reset/confirm",
    operation_id = "confirm_password_reset",
    tag = "auth",
    summary = "Set a new password with the emailed token",
    request_body = PasswordResetConfirmBody,
    responses(
        (status = 200, description = "The password is changed and every session ended", body = Empty),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
pub async fn password_reset_confirm(
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["token", "password"])?;
    let token = TokenHash::of(body.required("token", MAX_TOKEN_CHARS)?.trim());
    let password = Password::new(body.required("password", MAX_PASSWORD_CHARS)?)
        .map_err(|error| ApiError::field("password", error))?;
    let hash = password.hash().await.map_err(ApiError::internal)?;
    let account = state
        .store
        .reset_password(&token, &hash)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::field("token", "unknown, already used or expired"))?;
    tracing::info!(%account, "password reset; every session revoked");
    Ok(HttpResponse::Ok().json(Empty {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_domain_blocks_its_subdomains_and_nothing_else() {
        let blocked = vec!["Spam.example".to_string(), ".mailinator.com".to_string()];
        let check = |email: &str| domain_blocked(&Email::parse(email).unwrap(), &blocked);
        assert!(check("a@spam.example"));
        assert!(check("a@x.spam.example"));
        assert!(check("a@mailinator.com"));
        assert!(!check("a@notspam.example"));
        assert!(!check("a@example.com"));
    }
}
