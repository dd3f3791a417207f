//! The email outbox: emails stored with what they announce, sent later with retries.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{column, DbError, PgStore};

pub(super) const INSERT_EMAIL: &str = "
    INSERT INTO email_outbox (account_id, recipient, subject, body) VALUES ($1, $2, $3, $4)";

const DUE_EMAILS: &str = "
    SELECT id, recipient, subject, body, attempts FROM email_outbox
    WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < $1
    ORDER BY id LIMIT $2";

/// A sent email keeps its row for the record, but not its body, which carries a token.
const MARK_SENT: &str = "UPDATE email_outbox SET sent_at = now(), body = '' WHERE id = $1";

const MARK_FAILED: &str = "
    UPDATE email_outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
    WHERE id = $1";

/// An email to store for sending.
#[derive(Clone)]
pub struct OutgoingEmail {
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

impl std::fmt::Debug for OutgoingEmail {
    /// The body carries a token: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutgoingEmail({:?}, {:?})", self.recipient, self.subject)
    }
}

/// An email due for (another) attempt.
#[derive(Debug)]
pub struct QueuedEmail {
    pub id: i64,
    pub attempts: i32,
    pub email: OutgoingEmail,
}

impl PgStore {
    pub async fn enqueue_email(&self, account: Uuid, email: &OutgoingEmail) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(
                INSERT_EMAIL,
                &[&account, &email.recipient, &email.subject, &email.body],
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` emails due now that have had fewer than `max_attempts` attempts.
    pub async fn due_emails(
        &self,
        max_attempts: i32,
        limit: i64,
    ) -> Result<Vec<QueuedEmail>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(DUE_EMAILS, &[&max_attempts, &limit]).await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedEmail {
                    id: column(row, "id")?,
                    attempts: column(row, "attempts")?,
                    email: OutgoingEmail {
                        recipient: column(row, "recipient")?,
                        subject: column(row, "subject")?,
                        body: column(row, "body")?,
                    },
                })
            })
            .collect()
    }

    pub async fn email_sent(&self, id: i64) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.execute(MARK_SENT, &[&id]).await?;
        Ok(())
    }

    pub async fn email_failed(
        &self,
        id: i64,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(MARK_FAILED, &[&id, &retry_at, &error])
            .await?;
        Ok(())
    }
}
