//! Layered configuration: built-in defaults, then `config.yaml` (or `--config PATH`), then
//! `TOLLGATE__SECTION__KEY` environment variables. Parsed by figment, the YAML with
//! serde_norway (docs/adr/0007-yaml-parser.md).

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized};
use figment::Figment;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::hold::HoldPolicy;
use tollgate_actors::AccountLimits;

pub use crate::http::forwarded::TrustedProxy;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub metering: MeteringSettings,
    pub limits: LimitSettings,
    pub metrics: MetricsSettings,
    /// Customer self-service: signups, logins and sessions of `/api/v1`.
    #[serde(default)]
    pub accounts: AccountSettings,
    /// Outgoing email: verification and password-reset links.
    #[serde(default)]
    pub email: EmailSettings,
    /// Money in: the exchange rate, recharge orders and their payment providers
    /// (docs/PAYMENTS.md).
    #[serde(default)]
    pub payments: PaymentSettings,
}

/// Recharges in CNY, credited in USD at the operator's rate (docs/PAYMENTS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// CNY per USD until an operator sets a rate through the admin API: a positive decimal
    /// with at most 6 fractional digits.
    #[serde(with = "rust_decimal::serde::str")]
    pub cny_per_usd: Decimal,
    /// The smallest and largest recharge, in CNY.
    #[serde(with = "rust_decimal::serde::str")]
    pub min_cny: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub max_cny: Decimal,
    /// How long an order waits for its payment before it expires, in seconds.
    pub order_ttl_secs: u64,
    /// The EPay (易支付) gateway; empty `gateway_url`: EPay is off.
    pub epay: EpaySettings,
    /// The signed webhook of any other provider; empty `secret`: the webhook is off.
    pub webhook: WebhookSettings,
    /// Failed redemption-code attempts a client address, and an account, may make per
    /// minute before they get 429; 0 disables a side.
    pub redeem_failures_per_ip_per_minute: u32,
    pub redeem_failures_per_account_per_minute: u32,
    /// Whether a redeemed code counts as a first recharge for the inviter's referral reward.
    pub redemption_counts_as_first_recharge: bool,
    /// An inviter's reward, as a share of the invitee's first paid recharge in USD: 0 to 1,
    /// at most 6 decimals; 0 pays none.
    #[serde(with = "rust_decimal::serde::str")]
    pub referral_ratio: Decimal,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            cny_per_usd: Decimal::new(72, 1),
            min_cny: Decimal::ONE,
            max_cny: Decimal::from(1_000_000),
            order_ttl_secs: 1800,
            epay: EpaySettings::default(),
            webhook: WebhookSettings::default(),
            redeem_failures_per_ip_per_minute: 10,
            redeem_failures_per_account_per_minute: 5,
            redemption_counts_as_first_recharge: false,
            referral_ratio: Decimal::new(5, 2),
        }
    }
}

/// Orders may wait at most this long for their payment.
const MAX_ORDER_TTL_SECS: u64 = 30 * 24 * 3600;

/// Whether an http(s) URL's host is this machine's loopback.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl PaymentSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.cny_per_usd <= Decimal::ZERO || self.cny_per_usd.normalize().scale() > 6 {
            return invalid(
                "payments.cny_per_usd",
                "must be a positive decimal with at most 6 fractional digits",
            );
        }
        for (field, amount) in [
            ("payments.min_cny", self.min_cny),
            ("payments.max_cny", self.max_cny),
        ] {
            if amount <= Decimal::ZERO || amount.normalize().scale() > 2 {
                return invalid(field, "must be a positive amount with at most 2 decimals");
            }
        }
        if self.referral_ratio < Decimal::ZERO
            || self.referral_ratio > Decimal::ONE
            || self.referral_ratio.normalize().scale() > 6
        {
            return invalid(
                "payments.referral_ratio",
                "must be between 0 and 1, with at most 6 decimals",
            );
        }
        if self.min_cny > self.max_cny {
            return invalid("payments.min_cny", "must not exceed payments.max_cny");
        }
        if !(60..=MAX_ORDER_TTL_SECS).contains(&self.order_ttl_secs) {
            return invalid(
                "payments.order_ttl_secs",
                "must be between 60 and 2592000 (30 days)",
            );
        }
        let epay = &self.epay;
        if !epay.gateway_url.is_empty() {
            if !(epay.gateway_url.starts_with("http://")
                || epay.gateway_url.starts_with("https://"))
            {
                return invalid(
                    "payments.epay.gateway_url",
                    "must start with http:// or https://",
                );
            }
            if epay.pid.trim().is_empty() || epay.key.is_empty() {
                return invalid(
                    "payments.epay",
                    "a gateway_url needs the merchant's pid and key",
                );
            }
            // The re-query carries the merchant key in its query string, as EPay has it:
            // never in the clear beyond this host.
            if epay.gateway_url.starts_with("http://") && !is_loopback_url(&epay.gateway_url) {
                return invalid(
                    "payments.epay.gateway_url",
                    "must be https:// (http:// only to a gateway on this host): the merchant key travels in the re-query's URL",
                );
            }
        }
        let secret = self.webhook.secret.chars().count();
        if secret > 0 && secret < 32 {
            return invalid(
                "payments.webhook.secret",
                "must be at least 32 characters (or empty, which turns the webhook off)",
            );
        }
        Ok(())
    }

    /// Whether EPay orders can be made.
    pub fn epay_enabled(&self) -> bool {
        !self.epay.gateway_url.is_empty()
    }
}

/// An EPay merchant account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpaySettings {
    /// The gateway's base URL: orders lead to `<gateway_url>/submit.php`, the re-query asks
    /// `<gateway_url>/api.php`.
    pub gateway_url: String,
    /// The merchant id.
    pub pid: String,
    /// The merchant key that signs both ways. Never logged.
    pub key: String,
    /// The product name on the gateway's page.
    pub product_name: String,
    /// How often pending orders are asked about at the gateway, in seconds (a lost notify
    /// still credits); 0: never.
    pub requery_secs: u64,
    /// How old an order must be before it is asked about, in seconds: a payment under way
    /// normally brings its notify first.
    pub requery_min_age_secs: u64,
}

impl Default for EpaySettings {
    fn default() -> Self {
        EpaySettings {
            gateway_url: String::new(),
            pid: String::new(),
            key: String::new(),
            product_name: "tollgate balance".into(),
            requery_secs: 60,
            requery_min_age_secs: 30,
        }
    }
}

/// The signed webhook: `tollgate-signature: t=<unix seconds>,v1=<hex HMAC-SHA-256>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// The HMAC key; at least 32 characters when set. Never logged.
    pub secret: String,
}

/// The mail server customers' emails go through.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `smtp://host:port` (plain, no STARTTLS: for a relay on the same host or network) or
    /// `smtps://user:pass@host:port` (TLS). Empty: no email is sent, and each link is
    /// written to the log at info level instead.
    pub smtp_url: String,
    /// The sender, `tollgate <noreply@example.com>` or a bare address.
    pub from: String,
}

/// Customer accounts under `/api/v1`: who may register, how often, and how logins are
/// throttled. 0 disables a throttle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Whether a new account must confirm its email before it may create keys or call the
    /// proxy. Accounts an operator creates count as verified.
    pub require_email_verification: bool,
    /// Registrations one client address may attempt per hour.
    pub signups_per_ip_per_hour: u32,
    /// Registrations one /24 (IPv4) or /64 (IPv6) network may attempt per hour: one host
    /// rotating through its neighbours' addresses still meets this one.
    pub signups_per_block_per_hour: u32,
    /// Failed logins one client address may make per minute before it gets 429.
    pub login_failures_per_ip_per_minute: u32,
    /// Failed logins against one email per minute before it gets 429, from any address:
    /// the guard against a distributed guess at one password.
    pub login_failures_per_account_per_minute: u32,
    /// Email domains that may not register (compared case-insensitively; a listed domain
    /// also blocks its subdomains).
    pub blocked_email_domains: Vec<String>,
    /// How long a login session lasts, in hours.
    pub session_ttl_hours: u32,
}

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            require_email_verification: true,
            signups_per_ip_per_hour: 5,
            signups_per_block_per_hour: 20,
            login_failures_per_ip_per_minute: 10,
            login_failures_per_account_per_minute: 5,
            blocked_email_domains: Vec::new(),
            session_ttl_hours: 24 * 7,
        }
    }
}

/// Who may read `GET /metrics`: it names accounts' activity and the ledger's health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Answer clients on loopback and private addresses (10/8, 172.16/12, 192.168/16, link
    /// local, IPv6 unique local) without a token, as a scraper inside the network is.
    pub allow_private: bool,
    /// A bearer token that opens `/metrics` to any address; empty for none.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on, `host:port`. Port 0 picks a free port.
    pub listen: String,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send a whole request body; slower ones get 408.
    pub body_read_timeout_ms: u64,
    /// Request bodies one API key may be uploading at once; more get 429. 0 for no cap.
    pub max_uploads_per_key: u32,
    /// On SIGTERM/SIGINT, how long requests in flight (streams included) may take to finish
    /// before the rest are interrupted and billed what they produced.
    pub shutdown_drain_ms: u64,
    /// At shutdown, how long the final flush of settled usage may take.
    pub shutdown_flush_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed: addresses or CIDR networks.
    /// Empty (the default): the peer's address is the client's, whatever the header says.
    /// The client is the right-most forwarded address that is not one of these; it is what
    /// the per-address limiters count and what `/metrics` checks.
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// The address customers reach tollgate at (`https://api.example.com`), for the links
    /// in emails. Empty: the links are relative paths.
    #[serde(default)]
    pub public_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
    /// Create the database named in `url` if it does not exist (used by `tollgate demo`).
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for `/admin/v1`. Empty disables the admin API.
    pub token: String,
    /// Serve the admin API on this address of its own (`host:port`, loopback say), and not on
    /// `server.listen`. Unset: the admin API is served on `server.listen`.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Secret for the HMAC-SHA-256 under which API keys are stored. Changing it invalidates
    /// every key.
    pub key_secret: String,
    /// Failed authentications allowed per client IP per minute before it gets 429.
    pub failed_auth_per_minute: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub name: String,
    /// e.g. `https://api.anthropic.com` (no `/v1`).
    pub base_url: String,
    pub api_key: String,
    /// Seconds the upstream may stay silent: before its response headers, and between two
    /// reads of its body.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// How to reach the upstream: `http://[user:pass@]host:port` (an HTTP CONNECT proxy),
    /// `socks5://` or `socks5h://` (names resolved by the proxy). Unset: the `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` variables decide, as for curl. Empty:
    /// directly, whatever those say.
    #[serde(default)]
    pub proxy: Option<String>,
}

fn default_upstream_timeout() -> u64 {
    600
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringSettings {
    /// How often settled usage is written to Postgres, in one transaction.
    pub flush_interval_ms: u64,
    /// Request-body bytes assumed per input token when sizing a hold. 1 is strictly safe
    /// (a token is at least one byte); larger values admit more parallel requests on a small
    /// balance at the risk of a request exceeding its hold (see docs/METERING.md).
    pub hold_bytes_per_token: u32,
    /// Tokens assumed per image, and per text document, when sizing a hold.
    pub hold_media_tokens: u64,
    /// Pages assumed per PDF, URL or file document when sizing a hold (its size is not in
    /// the body); times `hold_page_tokens`.
    pub hold_document_pages: u64,
    /// Tokens assumed per page of such a document.
    pub hold_page_tokens: u64,
    /// Uses assumed for a server tool (web search, web fetch, code execution, ...) that
    /// declares no `max_uses`.
    pub hold_server_tool_uses: u64,
    /// Input tokens one server-tool use may add (a web fetch use holds a document's pages
    /// instead).
    pub hold_server_tool_use_tokens: u64,
    /// `anthropic-beta` flags and top-level body options known to change a request's price,
    /// each either priced by the rate card or refused with 400.
    pub price_options: Vec<PriceOption>,
    /// After a client disconnects mid-stream, the least time the upstream is still read to
    /// learn the final usage, even past `max_stream_ms`. The drain itself lasts for as long
    /// as the upstream keeps sending (see `max_stream_ms`).
    pub stream_drain_ms: u64,
    /// The longest a stream whose client went away is still read, counted from the stream's
    /// start. Besides it, the drain ends when the upstream ends the stream or falls silent
    /// for its `timeout_secs`.
    pub max_stream_ms: u64,
    /// Threads of their own for account actors; 0 (the default) runs the actors on the HTTP
    /// workers instead, so a request that its account's own worker serves reaches the actor
    /// without waking another thread.
    pub account_arbiters: usize,
    /// Refuse new requests once this many settled requests are waiting to be flushed, whether
    /// Postgres cannot be written or only falls behind.
    pub max_unflushed: u64,
    /// The directory of the write-ahead journal of settled usage
    /// (docs/adr/0019-write-ahead-journal.md): every settle is made durable there before
    /// it counts, and replayed after a crash. Unset (or empty), a crash loses the usage
    /// settled since the last flush, and start-up warns. One process per directory (locked).
    /// A journal belongs to its database: its records name that database's accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_dir: Option<std::path::PathBuf>,
    /// With a journal, whether a reply's last bytes (a whole body; a stream's
    /// `message_stop`, or its end) wait until its settle is on disk, so that nothing a
    /// client was answered can be lost to a crash. Off, replies do not wait, and a crash
    /// loses the settles not yet synced.
    pub durable_before_reply: bool,
    /// How long the journal gathers settles after the first before it writes them and syncs
    /// once, in microseconds (at most 1,000,000).
    pub journal_commit_interval_us: u64,
    /// A commit is written as soon as it gathers this many bytes.
    pub journal_commit_bytes: usize,
    /// Size of a journal segment file; a checkpoint removes whole segments.
    pub journal_segment_bytes: u64,
    /// Whether journal segments are made ahead of need, zero-filled to
    /// `journal_segment_bytes`, so that a commit's sync has no file size to commit: fewer
    /// journal commits of the file system, which Postgres shares on one disk.
    pub journal_preallocate: bool,
    /// Past this many bytes of journal on disk (Postgres down or behind), new requests get
    /// 529 until flushes catch up. At least twice `journal_segment_bytes`.
    pub journal_max_bytes: u64,
}

/// The smallest journal segment: a few hundred records.
const MIN_JOURNAL_SEGMENT_BYTES: u64 = 64 * 1024;
/// The largest: a segment is preallocated whole and read whole at replay, so its size is
/// memory at start-up and a zero-fill of that much disk per rotation.
const MAX_JOURNAL_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// An `anthropic-beta` flag or a top-level body option known to change what a request costs.
/// tollgate must never bill such a request at the plain price: it either prices it (the rate
/// card knows the option's price) or refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOption {
    /// The `anthropic-beta` flag (one of a comma-separated list; compared case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<String>,
    /// Or the top-level body field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// With `body`: the string value that changes the price; unset, any value does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub action: PriceAction,
    /// Why, for operators reading the configuration.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// What tollgate does with a request that uses a price-changing option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceAction {
    /// The rate card prices it (for example a long-prompt tier); the request passes.
    Priced,
    /// Refused with 400 `invalid_request_error`, before anything is held or sent upstream.
    Refused,
}

/// The price options known from the reference: the 1M-context beta is priced by the
/// long-prompt tier of Sonnet 4 and 4.5; fast mode (a premium per-token rate the card does
/// not carry) is refused.
pub fn default_price_options() -> Vec<PriceOption> {
    let option = |beta: Option<&str>, body: Option<(&str, &str)>, action, note: &str| PriceOption {
        beta: beta.map(str::to_string),
        body: body.map(|(field, _)| field.to_string()),
        value: body.map(|(_, value)| value.to_string()),
        action,
        note: note.to_string(),
    };
    vec![
        option(
            Some("context-1m-2025-08-07"),
            None,
            PriceAction::Priced,
            "prompts over 200,000 tokens: the rate card's long-prompt tier (Sonnet 4 and 4.5)",
        ),
        option(
            Some("fast-mode-2026-02-01"),
            None,
            PriceAction::Refused,
            "fast mode bills a premium per-token rate that the rate card does not carry",
        ),
        option(
            None,
            Some(("speed", "fast")),
            PriceAction::Refused,
            "fast mode bills a premium per-token rate that the rate card does not carry",
        ),
    ]
}

/// Throttles given to new accounts; 0 disables a limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    pub max_concurrent: u32,
    /// `count_tokens` calls per key per minute (they are free, so they are capped).
    pub count_tokens_per_minute: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = AccountLimits::default();
        Settings {
            server: ServerSettings {
                listen: "127.0.0.1:8080".into(),
                workers: 0,
                max_body_bytes: 32 * 1024 * 1024,
                body_read_timeout_ms: 30_000,
                max_uploads_per_key: 16,
                // With the flush's 5 s and the fixed steps after the drain, a shutdown fits an
                // orchestrator's default 30 s grace period (Settings::worst_case_shutdown).
                shutdown_drain_ms: 15_000,
                shutdown_flush_ms: 5_000,
                trusted_proxies: Vec::new(),
                public_url: String::new(),
            },
            database: DatabaseSettings {
                url: "postgres://postgres@127.0.0.1:5432/tollgate".into(),
                pool_size: 16,
                create_if_missing: false,
            },
            admin: AdminSettings {
                token: String::new(),
                listen: None,
            },
            auth: AuthSettings {
                key_secret: String::new(),
                failed_auth_per_minute: 30,
            },
            upstreams: Vec::new(),
            metering: MeteringSettings {
                flush_interval_ms: 100,
                hold_bytes_per_token: HoldPolicy::default().bytes_per_token,
                hold_media_tokens: HoldPolicy::default().media_allowance_tokens,
                hold_document_pages: HoldPolicy::default().document_pages,
                hold_page_tokens: HoldPolicy::default().page_tokens,
                hold_server_tool_uses: HoldPolicy::default().server_tool_uses,
                hold_server_tool_use_tokens: HoldPolicy::default().server_tool_use_tokens,
                price_options: default_price_options(),
                stream_drain_ms: 30_000,
                max_stream_ms: 1_800_000,
                account_arbiters: 0,
                max_unflushed: 100_000,
                journal_dir: None,
                durable_before_reply: true,
                journal_commit_interval_us: 100,
                journal_commit_bytes: 256 * 1024,
                journal_segment_bytes: 16 * 1024 * 1024,
                journal_preallocate: true,
                journal_max_bytes: 1024 * 1024 * 1024,
            },
            limits: LimitSettings {
                requests_per_minute: limits.requests_per_minute,
                tokens_per_minute: limits.tokens_per_minute,
                max_concurrent: limits.max_concurrent,
                count_tokens_per_minute: 120,
            },
            metrics: MetricsSettings {
                allow_private: true,
                token: String::new(),
            },
            accounts: AccountSettings::default(),
            email: EmailSettings::default(),
            payments: PaymentSettings::default(),
        }
    }
}

/// `UPSTREAMS__<n>__<FIELD>` (any case) → (n, FIELD): an override of one field of one upstream,
/// which figment's environment provider cannot express for a list.
fn indexed_upstream_key(key: &str) -> Option<(usize, &str)> {
    let mut parts = key.splitn(3, "__");
    let section = parts.next()?;
    let index = parts.next()?.parse().ok()?;
    let field = parts.next()?;
    section
        .eq_ignore_ascii_case("upstreams")
        .then_some((index, field))
}

/// Applies `TOLLGATE__UPSTREAMS__<n>__<FIELD>` overrides. Index `n` may name an existing
/// upstream or the next one; a new upstream needs `name`, `base_url` and `api_key`.
fn apply_indexed_upstreams(
    upstreams: &mut Vec<UpstreamSettings>,
    overrides: impl Iterator<Item = (usize, String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<_> = overrides.collect();
    overrides.sort();
    let invalid = |problem: String| ConfigError::Invalid {
        field: "upstreams",
        problem,
    };
    for (index, field, value) in overrides {
        if index == upstreams.len() {
            upstreams.push(UpstreamSettings {
                name: String::new(),
                base_url: String::new(),
                api_key: String::new(),
                timeout_secs: default_upstream_timeout(),
                proxy: None,
            });
        }
        let count = upstreams.len();
        let Some(upstream) = upstreams.get_mut(index) else {
            return Err(invalid(format!(
                "TOLLGATE__UPSTREAMS__{index}__*: there are only {count} upstreams before it"
            )));
        };
        match field.as_str() {
            "name" => upstream.name = value,
            "base_url" => upstream.base_url = value,
            "api_key" => upstream.api_key = value,
            "proxy" => upstream.proxy = Some(value),
            "timeout_secs" => {
                upstream.timeout_secs = value.parse().map_err(|_| {
                    invalid(format!(
                        "upstreams.{index}.timeout_secs: not a whole number"
                    ))
                })?
            }
            other => return Err(invalid(format!("upstreams.{index}: unknown field {other}"))),
        }
    }
    for (index, upstream) in upstreams.iter().enumerate() {
        if upstream.name.is_empty() || upstream.base_url.is_empty() {
            return Err(invalid(format!(
                "upstreams.{index}: name and base_url are required"
            )));
        }
    }
    Ok(())
}

/// The YAML format of `config.yaml`, for figment. figment's own `Yaml` provider parses with
/// serde_yaml, which is deprecated; this one parses with serde_norway, its maintained fork
/// (docs/adr/0007-yaml-parser.md). YAML only turns the text into figment's values: layering,
/// overrides and the errors that name a field stay figment's.
#[derive(Debug, Clone, Copy)]
struct YamlFile;

impl Format for YamlFile {
    type Error = serde_norway::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Self::Error> {
        serde_norway::from_str(text)
    }
}

/// How long the HTTP server may take to stop once every request has settled and been
/// flushed: only responses still being written to slow clients are left by then.
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long shutdown's last step may wait to release the instance lock; past it the process
/// exits, and its session's end releases the lock.
pub const INSTANCE_RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// The most `metering.max_stream_ms` and `metering.stream_drain_ms` may be: a week. No stream
/// runs that long, and a larger value only risks a deadline the clock cannot count to.
const MAX_STREAM_BOUND_MS: u64 = 7 * 24 * 3_600_000;

/// The key secret `config.yaml` ships with: good enough for `tollgate demo`, refused by
/// `tollgate serve`, since anyone can read it and forge the keyed hashes of API keys.
pub const SAMPLE_KEY_SECRET: &str = "development-only-key-secret-change-me";
/// The shortest admin token `tollgate serve` accepts: long enough that guessing it, even
/// unthrottled, is hopeless.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl Settings {
    /// Defaults, then the YAML file at `path` if it exists, then the environment; validated
    /// for serving ([`Settings::validate_for_serving`]).
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let settings = Settings::load_unvalidated(path)?;
        settings.validate_for_serving()?;
        Ok(settings)
    }

    /// As [`Settings::load`], for callers that fill in parts themselves before validating.
    pub fn load_unvalidated(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let file = path.unwrap_or_else(|| Path::new("config.yaml"));
        if path.is_some() || file.exists() {
            figment = figment.merge(YamlFile::file_exact(file));
        }
        let mut settings: Settings = figment
            .merge(
                Env::prefixed("TOLLGATE__")
                    .split("__")
                    // The key may reach the filter already split into `a.b.c`.
                    .filter(|key| indexed_upstream_key(&key.as_str().replace('.', "__")).is_none()),
            )
            .extract()
            .map_err(Box::new)?;
        let indexed = std::env::vars().filter_map(|(key, value)| {
            let rest = key.strip_prefix("TOLLGATE__")?;
            let (index, field) = indexed_upstream_key(rest)?;
            Some((index, field.to_ascii_lowercase(), value))
        });
        apply_indexed_upstreams(&mut settings.upstreams, indexed)?;
        Ok(settings)
    }

    /// Rejects settings that would start a service that cannot work as configured.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.upstreams.is_empty() {
            return invalid("upstreams", "at least one upstream is required");
        }
        for upstream in &self.upstreams {
            if !(upstream.base_url.starts_with("http://")
                || upstream.base_url.starts_with("https://"))
            {
                return invalid("upstreams.base_url", "must start with http:// or https://");
            }
        }
        if self.auth.key_secret.len() < 16 {
            return invalid("auth.key_secret", "must be at least 16 characters");
        }
        if self.metering.flush_interval_ms == 0 {
            return invalid("metering.flush_interval_ms", "must be greater than 0");
        }
        if self.metering.hold_bytes_per_token == 0 {
            return invalid("metering.hold_bytes_per_token", "must be at least 1");
        }
        if self.metering.journal_commit_interval_us > 1_000_000 {
            return invalid(
                "metering.journal_commit_interval_us",
                "must be at most 1000000 (a second)",
            );
        }
        if self.metering.journal_commit_bytes == 0 {
            return invalid("metering.journal_commit_bytes", "must be greater than 0");
        }
        if self.metering.journal_segment_bytes < MIN_JOURNAL_SEGMENT_BYTES {
            return invalid(
                "metering.journal_segment_bytes",
                "must be at least 65536 (64 KiB)",
            );
        }
        if self.metering.journal_segment_bytes > MAX_JOURNAL_SEGMENT_BYTES {
            return invalid(
                "metering.journal_segment_bytes",
                "must be at most 1073741824 (1 GiB): a segment is read whole at replay",
            );
        }
        // A checkpoint never removes the segment being written, so a limit below two
        // segments could stay exceeded with every record flushed (ADR 0019, M4).
        if self.metering.journal_max_bytes / 2 < self.metering.journal_segment_bytes {
            return invalid(
                "metering.journal_max_bytes",
                "must be at least twice metering.journal_segment_bytes",
            );
        }
        for option in &self.metering.price_options {
            if option.beta.is_some() == option.body.is_some() {
                return invalid(
                    "metering.price_options",
                    "each entry names exactly one of `beta` and `body`",
                );
            }
            if option.value.is_some() && option.body.is_none() {
                return invalid("metering.price_options", "`value` goes with `body`");
            }
        }
        for (field, ms) in [
            ("metering.max_stream_ms", self.metering.max_stream_ms),
            ("metering.stream_drain_ms", self.metering.stream_drain_ms),
        ] {
            if ms > MAX_STREAM_BOUND_MS {
                return invalid(field, "must be at most 604800000 (a week)");
            }
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes", "must be greater than 0");
        }
        self.payments.validate()?;
        if self.payments.epay_enabled()
            && !(self.server.public_url.starts_with("http://")
                || self.server.public_url.starts_with("https://"))
        {
            return invalid(
                "server.public_url",
                "EPay needs the address the gateway reaches tollgate at (its notify URL is built from it)",
            );
        }
        if self.server.body_read_timeout_ms == 0 {
            return invalid("server.body_read_timeout_ms", "must be greater than 0");
        }
        if self
            .admin
            .listen
            .as_deref()
            .is_some_and(|admin| admin == self.server.listen)
        {
            return invalid(
                "admin.listen",
                "must differ from server.listen (unset it to serve the admin API there)",
            );
        }
        Ok(())
    }

    /// Public URL, for the links a payment gateway calls back on.
    pub fn public_url(&self) -> &str {
        self.server.public_url.trim_end_matches('/')
    }

    /// [`Settings::validate`], and what serving real customers also needs: secrets that are
    /// not the samples a demo runs with. `tollgate demo` checks only [`Settings::validate`].
    pub fn validate_for_serving(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.auth.key_secret == SAMPLE_KEY_SECRET {
            return invalid(
                "auth.key_secret",
                "is the sample secret from config.yaml, which anyone can read; set a secret of your own (for example `openssl rand -hex 32`)",
            );
        }
        let token_chars = self.admin.token.chars().count();
        if token_chars > 0 && token_chars < MIN_ADMIN_TOKEN_CHARS {
            return invalid(
                "admin.token",
                "must be at least 32 characters, so that it cannot be guessed (or empty, which disables the admin API); only `tollgate demo` accepts a shorter one",
            );
        }
        // Every customer can have the key sign parameters they know: a short key could be
        // found offline, and with it any notify forged.
        if self.payments.epay_enabled() && self.payments.epay.key.chars().count() < 32 {
            return invalid(
                "payments.epay.key",
                "must be at least 32 characters; only `tollgate demo` accepts a shorter one",
            );
        }
        Ok(())
    }

    pub fn default_limits(&self) -> AccountLimits {
        AccountLimits {
            requests_per_minute: self.limits.requests_per_minute,
            tokens_per_minute: self.limits.tokens_per_minute,
            max_concurrent: self.limits.max_concurrent,
        }
    }

    /// The longest a graceful shutdown can take with these settings: the drain, the grace
    /// interrupted requests get to settle, the final flush, and the HTTP server's stop. An
    /// orchestrator's grace period (Kubernetes' `terminationGracePeriodSeconds`, 30 s by
    /// default) must be longer, or the process is killed before its final flush.
    pub fn worst_case_shutdown(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_drain_ms)
            + tollgate_actors::engine::INTERRUPT_GRACE
            + tollgate_actors::engine::SNAPSHOT_DEADLINE
            + Duration::from_millis(self.server.shutdown_flush_ms)
            + SERVER_STOP_TIMEOUT
            + INSTANCE_RELEASE_TIMEOUT
    }

    pub fn hold_policy(&self) -> HoldPolicy {
        HoldPolicy {
            bytes_per_token: self.metering.hold_bytes_per_token,
            media_allowance_tokens: self.metering.hold_media_tokens,
            document_pages: self.metering.hold_document_pages,
            page_tokens: self.metering.hold_page_tokens,
            server_tool_uses: self.metering.hold_server_tool_uses,
            server_tool_use_tokens: self.metering.hold_server_tool_use_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with `text` over them, as `config.yaml` is read; the error as text.
    fn from_yaml(text: &str) -> Result<Settings, String> {
        Figment::from(Serialized::defaults(Settings::default()))
            .merge(YamlFile::string(text))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_contracts_account_and_email_settings_are_accepted() {
        let settings = from_yaml(
            "server:\n  public_url: https://t.example\naccounts:\n  require_email_verification: false\n  signups_per_ip_per_hour: 3\n  signups_per_block_per_hour: 9\n  login_failures_per_ip_per_minute: 4\nemail:\n  smtp_url: smtp://127.0.0.1:25\n  from: noreply@t.example\n",
        )
        .unwrap();
        assert_eq!(settings.server.public_url, "https://t.example");
        assert!(!settings.accounts.require_email_verification);
        assert_eq!(settings.accounts.signups_per_ip_per_hour, 3);
        assert_eq!(settings.accounts.signups_per_block_per_hour, 9);
        assert_eq!(settings.accounts.login_failures_per_ip_per_minute, 4);
        assert_eq!(settings.email.smtp_url, "smtp://127.0.0.1:25");
        assert_eq!(settings.email.from, "noreply@t.example");
        // Verification is on unless turned off, and the shipped file keeps it on.
        assert!(Settings::default().accounts.require_email_verification);
        let shipped = from_yaml(include_str!("../config.yaml")).unwrap();
        assert!(shipped.accounts.require_email_verification);
        assert!(from_yaml("accounts:\n  signups_per_hour: 1\n").is_err());
    }

    #[test]
    fn the_shipped_config_yaml_is_read_over_the_defaults() {
        let settings = from_yaml(include_str!("../config.yaml")).unwrap();
        assert_eq!(settings.server.listen, "127.0.0.1:8080");
        assert_eq!(settings.upstreams[0].name, "anthropic");
        assert_eq!(settings.upstreams[0].base_url, "https://api.anthropic.com");
        // The file shows the defaults of the hold's allowances and the price options.
        let defaults = Settings::default().metering;
        assert_eq!(settings.metering.price_options, defaults.price_options);
        assert_eq!(
            settings.hold_policy(),
            HoldPolicy {
                bytes_per_token: 1,
                ..HoldPolicy::default()
            }
        );
    }

    #[test]
    fn the_contracts_journal_dir_setting_is_accepted() {
        // DESIGN.md keeps `metering.journal_dir` valid; settings refuse unknown keys.
        let settings = from_yaml("metering:\n  journal_dir: /tmp/tollgate-journal\n").unwrap();
        assert_eq!(
            settings.metering.journal_dir.as_deref(),
            Some(Path::new("/tmp/tollgate-journal"))
        );
        assert_eq!(Settings::default().metering.journal_dir, None);
        assert!(from_yaml("metering:\n  journal_directory: /x\n").is_err());
        // The shipped config turns the journal on, replies waiting for it.
        let shipped = from_yaml(include_str!("../config.yaml")).unwrap();
        assert_eq!(
            shipped.metering.journal_dir.as_deref(),
            Some(Path::new("data/journal"))
        );
        assert!(shipped.metering.durable_before_reply);
    }

    #[test]
    fn journal_settings_that_could_not_work_are_refused() {
        let valid = from_yaml(include_str!("../config.yaml")).unwrap();
        assert!(valid.validate().is_ok());
        let problem = |yaml: &str| {
            let mut settings = from_yaml(include_str!("../config.yaml")).unwrap();
            let tweak = from_yaml(yaml).unwrap().metering;
            settings.metering = MeteringSettings {
                journal_commit_interval_us: tweak.journal_commit_interval_us,
                journal_commit_bytes: tweak.journal_commit_bytes,
                journal_segment_bytes: tweak.journal_segment_bytes,
                journal_max_bytes: tweak.journal_max_bytes,
                ..settings.metering
            };
            match settings.validate() {
                Err(ConfigError::Invalid { field, .. }) => field,
                other => panic!("{yaml}: {other:?}"),
            }
        };
        // A limit under two segments could stay exceeded with every record flushed (M4).
        assert_eq!(
            problem("metering:\n  journal_segment_bytes: 1048576\n  journal_max_bytes: 2097151\n"),
            "metering.journal_max_bytes"
        );
        assert_eq!(
            problem("metering:\n  journal_segment_bytes: 65535\n"),
            "metering.journal_segment_bytes"
        );
        assert_eq!(
            problem("metering:\n  journal_commit_interval_us: 1000001\n"),
            "metering.journal_commit_interval_us"
        );
        assert_eq!(
            problem("metering:\n  journal_commit_bytes: 0\n"),
            "metering.journal_commit_bytes"
        );
    }

    #[test]
    fn a_price_option_names_exactly_one_beta_or_body_field() {
        let mut settings = Settings {
            upstreams: vec![UpstreamSettings {
                name: "u".into(),
                base_url: "https://u".into(),
                api_key: String::new(),
                timeout_secs: 1,
                proxy: None,
            }],
            ..Settings::default()
        };
        settings.auth.key_secret = "a-test-secret-of-16+".into();
        assert!(settings.validate().is_ok());
        let both = PriceOption {
            beta: Some("b".into()),
            body: Some("f".into()),
            value: None,
            action: PriceAction::Refused,
            note: String::new(),
        };
        let value_without_body = PriceOption {
            body: None,
            value: Some("v".into()),
            ..both.clone()
        };
        for bad in [both, value_without_body] {
            settings.metering.price_options = vec![bad];
            assert!(settings.validate().is_err());
        }
    }

    #[test]
    fn a_journal_segment_is_bounded_both_ways() {
        let mut settings = from_yaml(include_str!("../config.yaml")).unwrap();
        settings.metering.journal_max_bytes = u64::MAX;
        for (bytes, valid) in [
            (MIN_JOURNAL_SEGMENT_BYTES - 1, false),
            (MIN_JOURNAL_SEGMENT_BYTES, true),
            (MAX_JOURNAL_SEGMENT_BYTES, true),
            (MAX_JOURNAL_SEGMENT_BYTES + 1, false),
        ] {
            settings.metering.journal_segment_bytes = bytes;
            assert_eq!(settings.validate().is_ok(), valid, "{bytes}");
        }
    }

    #[test]
    fn stream_bounds_past_a_week_are_refused() {
        let mut settings = from_yaml(include_str!("../config.yaml")).unwrap();
        assert!(settings.validate().is_ok());
        settings.metering.max_stream_ms = u64::MAX;
        assert!(settings.validate().is_err());
        settings.metering.max_stream_ms = MAX_STREAM_BOUND_MS;
        settings.metering.stream_drain_ms = MAX_STREAM_BOUND_MS + 1;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_yaml_key_replaces_only_its_default() {
        let settings = from_yaml("metering:\n  flush_interval_ms: 250\n").unwrap();
        assert_eq!(settings.metering.flush_interval_ms, 250);
        assert_eq!(settings.server.listen, Settings::default().server.listen);
    }

    #[test]
    fn yaml_errors_name_the_key_and_the_source() {
        for (text, wanted) in [
            (
                "server:\n  listn: x\n",
                "unknown field: found `listn`, expected `one of `listen`",
            ),
            (
                "metering:\n  flush_interval_ms: soon\n",
                "invalid type: found string \"soon\", expected u64 for key \
                 \"default.metering.flush_interval_ms\" in YAML source string",
            ),
            (
                "server: [\n",
                "did not find expected node content at line 2 column 1",
            ),
        ] {
            let error = from_yaml(text).unwrap_err();
            assert!(error.starts_with(wanted), "{text:?}: {error}");
        }
    }

    #[test]
    fn serving_refuses_the_sample_key_secret_and_a_short_admin_token_the_demo_accepts() {
        let mut settings = from_yaml(include_str!("../config.yaml")).unwrap();
        settings.admin.token = "demo-admin-token".into();
        assert!(settings.validate().is_ok(), "the demo's checks");
        let error = settings.validate_for_serving().unwrap_err().to_string();
        assert!(
            error.contains("auth.key_secret: is the sample secret"),
            "{error}"
        );

        settings.auth.key_secret = "a-secret-of-this-operator-only".into();
        let error = settings.validate_for_serving().unwrap_err().to_string();
        assert!(
            error.contains("admin.token: must be at least 32 characters"),
            "{error}"
        );

        settings.admin.token = "x".repeat(MIN_ADMIN_TOKEN_CHARS);
        assert!(settings.validate_for_serving().is_ok());
        settings.admin.token = String::new();
        assert!(
            settings.validate_for_serving().is_ok(),
            "an empty token disables the admin API"
        );
    }

    #[test]
    fn the_default_shutdown_fits_a_30_second_grace_period() {
        let settings = from_yaml(include_str!("../config.yaml")).unwrap();
        assert!(
            settings.worst_case_shutdown() <= Duration::from_secs(28),
            "{:?}",
            settings.worst_case_shutdown()
        );
        assert_eq!(
            Settings::default().worst_case_shutdown(),
            settings.worst_case_shutdown()
        );
    }

    fn upstream(name: &str) -> UpstreamSettings {
        UpstreamSettings {
            name: name.into(),
            base_url: format!("http://{name}"),
            api_key: "k".into(),
            timeout_secs: 600,
            proxy: None,
        }
    }

    fn set(index: usize, field: &str, value: &str) -> (usize, String, String) {
        (index, field.into(), value.into())
    }

    #[test]
    fn indexed_environment_keys_name_one_field_of_one_upstream() {
        assert_eq!(
            indexed_upstream_key("UPSTREAMS__0__BASE_URL"),
            Some((0, "BASE_URL"))
        );
        assert_eq!(
            indexed_upstream_key("upstreams__12__api_key"),
            Some((12, "api_key"))
        );
        assert_eq!(indexed_upstream_key("UPSTREAMS"), None);
        assert_eq!(indexed_upstream_key("SERVER__LISTEN"), None);
        assert_eq!(indexed_upstream_key("UPSTREAMS__x__NAME"), None);
    }

    #[test]
    fn indexed_overrides_change_an_upstream_or_add_the_next_one() {
        let mut list = vec![upstream("a")];
        apply_indexed_upstreams(
            &mut list,
            vec![
                set(0, "api_key", "secret"),
                set(1, "name", "b"),
                set(1, "base_url", "http://b"),
                set(1, "timeout_secs", "5"),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(list[0].api_key, "secret");
        assert_eq!((list[1].name.as_str(), list[1].timeout_secs), ("b", 5));
    }

    #[test]
    fn bad_indexed_overrides_name_the_field() {
        for bad in [
            vec![set(2, "name", "x")],
            vec![set(0, "colour", "x")],
            vec![set(0, "timeout_secs", "soon")],
            vec![set(1, "api_key", "only-a-key")],
        ] {
            let error = apply_indexed_upstreams(&mut vec![upstream("a")], bad.into_iter())
                .unwrap_err()
                .to_string();
            assert!(error.contains("upstreams"), "{error}");
        }
    }
}
