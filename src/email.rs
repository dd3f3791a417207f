//! Email to customers: the verification and password-reset messages, in English or Chinese,
//! and the sender that delivers the outbox over SMTP (lettre, rustls), off the request path.
//!
//! A request stores its email in the outbox in its own transaction
//! ([`crate::store::OutgoingEmail`]); [`send_loop`] sends what is due, retrying with
//! exponential backoff, so that a mail server that is down delays an email but never loses
//! a registration. Without `email.smtp_url`, nothing is queued and the link is logged at info
//! level instead, so that a demo can be followed by hand.

use std::time::Duration;

use chrono::Utc;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;

use crate::store::{OutgoingEmail, PgStore, QueuedEmail, TokenPurpose};

/// How often the outbox is checked for due emails.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Emails sent per check; the rest wait for the next one.
const BATCH: i64 = 20;
/// Attempts before an email is given up (logged, counted, and left in the outbox).
pub const MAX_ATTEMPTS: i32 = 8;
/// The first retry's delay; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Counted on every failed attempt, and on every email given up.
pub const SEND_FAILURES_METRIC: &str = "tollgate_email_send_failures_total";
pub const GIVEN_UP_METRIC: &str = "tollgate_email_given_up_total";
pub const SENT_METRIC: &str = "tollgate_email_sent_total";

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("email.smtp_url: {0}")]
    Url(String),
    #[error("email.from: {0}")]
    From(String),
}

/// The configured SMTP relay, or none.
#[derive(Clone)]
pub struct Mailer {
    transport: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl Mailer {
    /// From `email.smtp_url` (`smtp://host:port`, plain, for local relays; `smtps://user:pass@host:port`,
    /// TLS) and `email.from`. An empty URL: no mail server.
    pub fn new(smtp_url: &str, from: &str) -> Result<Mailer, EmailError> {
        if smtp_url.trim().is_empty() {
            return Ok(Mailer { transport: None });
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url.trim())
            .map_err(|error| EmailError::Url(error.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|error: lettre::address::AddressError| EmailError::From(error.to_string()))?;
        Ok(Mailer {
            transport: Some((transport, from)),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<(), String> {
        let Some((transport, from)) = &self.transport else {
            return Err("no mail server configured".into());
        };
        let to: Mailbox = email
            .recipient
            .parse()
            .map_err(|error: lettre::address::AddressError| error.to_string())?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|error| error.to_string())?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// The email that carries `link`, in the customer's language (`zh`, else English).
pub fn link_email(
    recipient: &str,
    language: &str,
    purpose: TokenPurpose,
    link: &str,
) -> OutgoingEmail {
    let (subject, body) = match (language, purpose) {
        ("zh", TokenPurpose::VerifyEmail) => (
            "请验证您的邮箱",
            format!("您好！\n\n请打开以下链接验证您的邮箱地址：\n\n{link}\n\n链接 3 天内有效。如果您没有注册，请忽略这封邮件。\n"),
        ),
        ("zh", TokenPurpose::PasswordReset) => (
            "重置您的密码",
            format!("您好！\n\n请打开以下链接重置密码：\n\n{link}\n\n链接 30 分钟内有效，只能使用一次。如果您没有申请重置，请忽略这封邮件，您的密码不会改变。\n"),
        ),
        (_, TokenPurpose::VerifyEmail) => (
            "Verify your email address",
            format!("Hello,\n\nOpen this link to verify your email address:\n\n{link}\n\nThe link works for 3 days. If you did not register, ignore this email.\n"),
        ),
        (_, TokenPurpose::PasswordReset) => (
            "Reset your password",
            format!("Hello,\n\nOpen this link to choose a new password:\n\n{link}\n\nThe link works once, for 30 minutes. If you did not ask for it, ignore this email; your password stays as it is.\n"),
        ),
    };
    OutgoingEmail {
        recipient: recipient.to_string(),
        subject: subject.to_string(),
        body,
    }
}

/// The delay before attempt `attempts + 1`, doubling from [`FIRST_BACKOFF`].
fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(0);
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_BACKOFF)
}

/// Sends due outbox emails until `stop` is cancelled.
pub async fn send_loop(store: PgStore, mailer: Mailer, stop: CancellationToken) {
    let mut every = tokio::time::interval(POLL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let due = match store.due_emails(MAX_ATTEMPTS, BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "could not read the email outbox; will retry");
                continue;
            }
        };
        for queued in due {
            if stop.is_cancelled() {
                return;
            }
            deliver(&store, &mailer, queued).await;
        }
    }
}

async fn deliver(store: &PgStore, mailer: &Mailer, queued: QueuedEmail) {
    let QueuedEmail {
        id,
        attempts,
        email,
    } = queued;
    match mailer.send(&email).await {
        Ok(()) => {
            metrics::counter!(SENT_METRIC).increment(1);
            tracing::info!(email_id = id, subject = %email.subject, "email sent");
            if let Err(error) = store.email_sent(id).await {
                // It may be sent again: a duplicate email, never a lost one.
                tracing::warn!(email_id = id, %error, "could not mark an email sent");
            }
        }
        Err(error) => {
            metrics::counter!(SEND_FAILURES_METRIC).increment(1);
            let attempts = attempts + 1;
            if attempts >= MAX_ATTEMPTS {
                metrics::counter!(GIVEN_UP_METRIC).increment(1);
                tracing::error!(email_id = id, attempts, %error, "email given up after its last attempt");
            } else {
                tracing::warn!(email_id = id, attempts, %error, "email not sent; will retry");
            }
            let retry_at = Utc::now()
                + chrono::Duration::from_std(backoff(attempts))
                    .unwrap_or(chrono::Duration::hours(1));
            if let Err(error) = store.email_failed(id, retry_at, &error).await {
                tracing::warn!(email_id = id, %error, "could not record a failed email");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn emails_are_written_in_the_customers_language_with_the_link() {
        let zh = link_email(
            "a@b.co",
            "zh",
            TokenPurpose::PasswordReset,
            "https://x/reset-password?token=t",
        );
        assert!(
            zh.subject.contains("密码") && zh.body.contains("https://x/reset-password?token=t")
        );
        let en = link_email(
            "a@b.co",
            "en",
            TokenPurpose::VerifyEmail,
            "https://x/verify-email?token=t",
        );
        assert!(
            en.subject.contains("Verify") && en.body.contains("https://x/verify-email?token=t")
        );
        assert_eq!(
            format!("{en:?}"),
            "OutgoingEmail(\"a@b.co\", \"Verify your email address\")"
        );
    }

    #[test]
    fn the_mailer_is_off_without_a_url_and_refuses_a_bad_one() {
        assert!(!Mailer::new("", "x@y.co").unwrap().is_configured());
        assert!(
            Mailer::new("smtp://127.0.0.1:2525", "tollgate <noreply@example.com>")
                .unwrap()
                .is_configured()
        );
        assert!(Mailer::new("ftp://nope", "x@y.co").is_err());
        assert!(Mailer::new("smtp://127.0.0.1:2525", "not an address").is_err());
    }
}
