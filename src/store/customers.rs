//! Customer self-service rows: registered accounts, login sessions, and the single-use
//! tokens of emailed links. Tokens are stored only as hashes
//! ([`crate::accounts::TokenHash`]).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tollgate_actors::{AccountLimits, AccountStatus};
use uuid::Uuid;

use super::outbox::{OutgoingEmail, INSERT_EMAIL};
use super::{column, DbError, PgStore};
use crate::accounts::{PasswordHash, TokenHash};

const CUSTOMER_COLUMNS: &str =
    "id, email, status, email_verified, invite_code, language, created_at";

const INSERT_CUSTOMER: &str = "
    INSERT INTO accounts (id, email, password_hash, requests_per_minute, tokens_per_minute,
                          max_concurrent, email_verified, invited_by, language, signup_ip,
                          invitation_code)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING id, email, status, email_verified, invite_code, language, created_at";

const SELECT_INVITER: &str = "SELECT id FROM accounts WHERE invite_code = $1";

const SELECT_LOGIN: &str = "SELECT id, password_hash FROM accounts WHERE email = $1";

const SELECT_RESET_TARGET: &str = "SELECT id, language FROM accounts WHERE email = $1";

const SELECT_PASSWORD_HASH: &str = "SELECT password_hash FROM accounts WHERE id = $1";

const UPDATE_PASSWORD: &str = "UPDATE accounts SET password_hash = $2 WHERE id = $1";

/// Uses up a verification token and marks its account verified, in one statement.
const VERIFY_EMAIL: &str = "
    WITH used AS (
        UPDATE account_tokens SET used_at = now()
        WHERE token_hash = $1 AND purpose = 'verify_email' AND used_at IS NULL
          AND expires_at > now()
        RETURNING account_id
    )
    UPDATE accounts SET email_verified = true FROM used
    WHERE accounts.id = used.account_id
    RETURNING accounts.id";

const INSERT_SESSION: &str =
    "INSERT INTO sessions (token_hash, account_id, expires_at) VALUES ($1, $2, $3)";

const SELECT_SESSION: &str = "
    SELECT account_id FROM sessions
    WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()";

const REVOKE_SESSION: &str =
    "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL";

/// Every live session of the account but the one named (`$2`, which may match none).
const REVOKE_OTHER_SESSIONS: &str = "
    UPDATE sessions SET revoked_at = now()
    WHERE account_id = $1 AND token_hash <> $2 AND revoked_at IS NULL";

/// A deleted account's personal data: the email becomes an address that cannot receive
/// mail (RFC 2606 reserves `.invalid`), unique by the account id, so the old address can
/// register again; the password goes, so nothing can log in.
const ANONYMIZE: &str = "
    UPDATE accounts SET email = 'deleted-' || id || '@deleted.invalid', password_hash = NULL
    WHERE id = $1 AND status = 'deleted'";

const REVOKE_ALL_SESSIONS: &str =
    "UPDATE sessions SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL";

const USE_UP_TOKENS: &str =
    "UPDATE account_tokens SET used_at = now() WHERE account_id = $1 AND used_at IS NULL";

/// Unsent emails to a deleted account go; sent ones keep their record without the address
/// (their bodies were erased when sent).
const DROP_UNSENT_EMAIL: &str =
    "DELETE FROM email_outbox WHERE account_id = $1 AND sent_at IS NULL";
const FORGET_RECIPIENT: &str =
    "UPDATE email_outbox SET recipient = 'deleted account' WHERE account_id = $1";

const INSERT_TOKEN: &str = "
    INSERT INTO account_tokens (token_hash, account_id, purpose, expires_at)
    VALUES ($1, $2, $3, $4)";

/// Uses a token up in the same statement that finds it, so two requests racing with one
/// token cannot both succeed.
const CONSUME_TOKEN: &str = "
    UPDATE account_tokens SET used_at = now()
    WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
    RETURNING account_id";

/// What a single-use emailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    PasswordReset,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::PasswordReset => "password_reset",
        }
    }
}

/// An account as its owner sees it (the stored part; money comes from the actor).
#[derive(Debug, Clone)]
pub struct CustomerRow {
    pub id: Uuid,
    pub email: String,
    pub status: AccountStatus,
    pub email_verified: bool,
    pub invite_code: String,
    pub language: String,
    pub created_at: DateTime<Utc>,
}

const INVITATION_COLUMNS: &str =
    "code, inviter_id, reward_kind, reward_value, max_uses, uses, expires_at, created_at";

/// An operator's invitation code.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationRow {
    pub code: String,
    pub inviter_id: Option<Uuid>,
    /// `fixed` or `ratio`.
    pub reward_kind: String,
    pub reward_value: rust_decimal::Decimal,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl InvitationRow {
    fn from_row(row: &tokio_postgres::Row) -> Result<InvitationRow, DbError> {
        Ok(InvitationRow {
            code: column(row, "code")?,
            inviter_id: column(row, "inviter_id")?,
            reward_kind: column(row, "reward_kind")?,
            reward_value: column(row, "reward_value")?,
            max_uses: column(row, "max_uses")?,
            uses: column(row, "uses")?,
            expires_at: column(row, "expires_at")?,
            created_at: column(row, "created_at")?,
        })
    }
}

/// What registration stores.
pub struct NewCustomer<'a> {
    pub email: &'a str,
    pub password_hash: &'a PasswordHash,
    pub limits: &'a AccountLimits,
    pub email_verified: bool,
    pub invited_by: Option<Uuid>,
    pub language: &'a str,
    /// The client address it registered from, for the referral rewards' network check.
    pub signup_ip: Option<std::net::IpAddr>,
    /// The operator's invitation code it registers with: one use of it is taken in the
    /// registration's transaction, or the registration fails.
    pub invitation: Option<&'a str>,
    /// The verification link's token, with its expiry, when one is due.
    pub verification: Option<(&'a TokenHash, DateTime<Utc>)>,
    /// The email that carries it, when there is a mail server to send it.
    pub email_out: Option<&'a OutgoingEmail>,
}

impl PgStore {
    /// Stores a registered account, and its verification token in the same transaction.
    pub async fn register_customer(&self, new: NewCustomer<'_>) -> Result<CustomerRow, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(code) = new.invitation {
            // The row lock makes two registrations at the last use take it once.
            let used = tx
                .execute(
                    "UPDATE invitations SET uses = uses + 1 WHERE code = $1 \
                     AND (max_uses IS NULL OR uses < max_uses) \
                     AND (expires_at IS NULL OR expires_at > now())",
                    &[&code],
                )
                .await?;
            if used != 1 {
                return Err(DbError::Exhausted("the invitation code"));
            }
        }
        let id = Uuid::now_v7();
        let row = tx
            .query_one(
                INSERT_CUSTOMER,
                &[
                    &id,
                    &new.email,
                    &new.password_hash.as_str(),
                    &(new.limits.requests_per_minute as i32),
                    &(new.limits.tokens_per_minute as i32),
                    &(new.limits.max_concurrent as i32),
                    &new.email_verified,
                    &new.invited_by,
                    &new.language,
                    &new.signup_ip,
                    &new.invitation,
                ],
            )
            .await
            .map_err(DbError::from)
            .map_err(|e| {
                if e.is_unique_violation() {
                    DbError::Conflict("an account with this email")
                } else {
                    e
                }
            })?;
        if let Some((hash, expires_at)) = new.verification {
            tx.execute(
                INSERT_TOKEN,
                &[
                    &hash.as_bytes(),
                    &id,
                    &TokenPurpose::VerifyEmail.as_str(),
                    &expires_at,
                ],
            )
            .await?;
        }
        if let Some(email) = new.email_out {
            tx.execute(
                INSERT_EMAIL,
                &[&id, &email.recipient, &email.subject, &email.body],
            )
            .await?;
        }
        tx.commit().await?;
        customer_row(&row)
    }

    pub async fn customer(&self, id: Uuid) -> Result<Option<CustomerRow>, DbError> {
        let client = self.pool.get().await?;
        let query = format!("SELECT {CUSTOMER_COLUMNS} FROM accounts WHERE id = $1");
        let row = client.query_opt(&query, &[&id]).await?;
        row.as_ref().map(customer_row).transpose()
    }

    /// The account an invite code belongs to.
    /// Stores an operator's invitation code (`new.uses` is ignored: a new code has none).
    pub async fn create_invitation(&self, new: &InvitationRow) -> Result<InvitationRow, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "INSERT INTO invitations (code, inviter_id, reward_kind, reward_value, max_uses, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {INVITATION_COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &new.code,
                    &new.inviter_id,
                    &new.reward_kind,
                    &new.reward_value,
                    &new.max_uses,
                    &new.expires_at,
                ],
            )
            .await
            .map_err(DbError::from)
            .map_err(|error| {
                if error.is_unique_violation() {
                    DbError::Conflict("an invitation with this code")
                } else {
                    error
                }
            })?;
        InvitationRow::from_row(&row)
    }

    /// Operators' invitation codes, newest first.
    pub async fn invitations(&self) -> Result<Vec<InvitationRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC LIMIT 500"
        );
        let rows = client.query(&sql, &[]).await?;
        rows.iter().map(InvitationRow::from_row).collect()
    }

    /// An operator's invitation code that can still be used, with the account it rewards.
    pub async fn usable_invitation(&self, code: &str) -> Result<Option<Option<Uuid>>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT inviter_id FROM invitations WHERE code = $1 \
                 AND (max_uses IS NULL OR uses < max_uses) \
                 AND (expires_at IS NULL OR expires_at > now())",
                &[&code],
            )
            .await?;
        row.as_ref()
            .map(|row| column(row, "inviter_id"))
            .transpose()
    }

    pub async fn inviter(&self, invite_code: &str) -> Result<Option<Uuid>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_INVITER, &[&invite_code]).await?;
        row.as_ref().map(|row| column(row, "id")).transpose()
    }

    /// The account of a (normalised) email and its password hash, if it has one.
    pub async fn login_of(
        &self,
        email: &str,
    ) -> Result<Option<(Uuid, Option<PasswordHash>)>, DbError> {
        let client = self.pool.get().await?;
        let Some(row) = client.query_opt(SELECT_LOGIN, &[&email]).await? else {
            return Ok(None);
        };
        let hash: Option<String> = column(&row, "password_hash")?;
        Ok(Some((column(&row, "id")?, hash.map(PasswordHash::stored))))
    }

    /// The account of a (normalised) email and the language of its emails.
    pub async fn reset_target(&self, email: &str) -> Result<Option<(Uuid, String)>, DbError> {
        let client = self.pool.get().await?;
        let Some(row) = client.query_opt(SELECT_RESET_TARGET, &[&email]).await? else {
            return Ok(None);
        };
        Ok(Some((column(&row, "id")?, column(&row, "language")?)))
    }

    pub async fn password_hash(&self, id: Uuid) -> Result<Option<PasswordHash>, DbError> {
        let client = self.pool.get().await?;
        let Some(row) = client.query_opt(SELECT_PASSWORD_HASH, &[&id]).await? else {
            return Ok(None);
        };
        let hash: Option<String> = column(&row, "password_hash")?;
        Ok(hash.map(PasswordHash::stored))
    }

    /// Sets a new password and revokes every session but `keep` (`None`: all of them), in
    /// one transaction: a stolen session never outlives the password change that was meant
    /// to end it.
    pub async fn change_password(
        &self,
        id: Uuid,
        hash: &PasswordHash,
        keep: Option<&TokenHash>,
    ) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(UPDATE_PASSWORD, &[&id, &hash.as_str()]).await?;
        let keep: &[u8] = keep.map_or(&[], TokenHash::as_bytes);
        tx.execute(REVOKE_OTHER_SESSIONS, &[&id, &keep]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a deleted account's personal data and ends its sessions and emailed tokens, in
    /// one transaction. Its usage and ledger rows stay, for the books. Answers whether the
    /// account was deleted (its status set first, by the engine).
    pub async fn anonymize_deleted(&self, id: Uuid) -> Result<bool, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let anonymized = tx.execute(ANONYMIZE, &[&id]).await? == 1;
        if anonymized {
            tx.execute(REVOKE_ALL_SESSIONS, &[&id]).await?;
            tx.execute(USE_UP_TOKENS, &[&id]).await?;
            tx.execute(DROP_UNSENT_EMAIL, &[&id]).await?;
            tx.execute(FORGET_RECIPIENT, &[&id]).await?;
        }
        tx.commit().await?;
        Ok(anonymized)
    }

    /// Uses up a verification token; the account it verified, or `None` if the token is
    /// unknown, used or expired.
    pub async fn verify_email(&self, token: &TokenHash) -> Result<Option<Uuid>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(VERIFY_EMAIL, &[&token.as_bytes()]).await?;
        row.as_ref().map(|row| column(row, "id")).transpose()
    }

    /// Uses up a reset token, sets the new password and revokes every session of its
    /// account, in one transaction; `None` if the token is unknown, used or expired.
    pub async fn reset_password(
        &self,
        token: &TokenHash,
        hash: &PasswordHash,
    ) -> Result<Option<Uuid>, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                CONSUME_TOKEN,
                &[&token.as_bytes(), &TokenPurpose::PasswordReset.as_str()],
            )
            .await?
        else {
            return Ok(None);
        };
        let id: Uuid = column(&row, "account_id")?;
        tx.execute(UPDATE_PASSWORD, &[&id, &hash.as_str()]).await?;
        let none: &[u8] = &[];
        tx.execute(REVOKE_OTHER_SESSIONS, &[&id, &none]).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    pub async fn create_session(
        &self,
        hash: &TokenHash,
        account: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(INSERT_SESSION, &[&hash.as_bytes(), &account, &expires_at])
            .await?;
        Ok(())
    }

    /// The account of a live session: not revoked, not expired.
    pub async fn session_account(&self, hash: &TokenHash) -> Result<Option<Uuid>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(SELECT_SESSION, &[&hash.as_bytes()])
            .await?;
        row.as_ref()
            .map(|row| column(row, "account_id"))
            .transpose()
    }

    pub async fn revoke_session(&self, hash: &TokenHash) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.execute(REVOKE_SESSION, &[&hash.as_bytes()]).await?;
        Ok(())
    }

    pub async fn create_token(
        &self,
        hash: &TokenHash,
        account: Uuid,
        purpose: TokenPurpose,
        expires_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(
                INSERT_TOKEN,
                &[&hash.as_bytes(), &account, &purpose.as_str(), &expires_at],
            )
            .await?;
        Ok(())
    }
}

fn customer_row(row: &Row) -> Result<CustomerRow, DbError> {
    let status: &str = column(row, "status")?;
    Ok(CustomerRow {
        id: column(row, "id")?,
        email: column(row, "email")?,
        // Fail closed on a status this code does not know.
        status: AccountStatus::parse(status).unwrap_or(AccountStatus::Suspended),
        email_verified: column(row, "email_verified")?,
        invite_code: column(row, "invite_code")?,
        language: column(row, "language")?,
        created_at: column(row, "created_at")?,
    })
}
