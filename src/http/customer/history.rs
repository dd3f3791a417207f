//! The customer's past: `/api/v1/usage` (paged, filtered), `/api/v1/usage.csv` (the same rows,
//! streamed), `/api/v1/usage/daily` and `/api/v1/ledger`. Each reads only the session's own
//! rows; a `key_id` filter naming another account's key is 404, as an unknown one is.
//!
//! Pages are keysets: a cursor names the last row of the previous page, so paging never skips
//! or repeats a row while new ones arrive (they are newer than any page already read).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::stream;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::Session;
use crate::http::openapi::bodies::{DailyQuery, LedgerQuery, UsageCsvQuery, UsageQuery};
use crate::http::openapi::{BadRequest, NotFound, SessionUnauthorized, TooManyFailures};
use crate::http::AppState;
use crate::store::{LedgerEntry, UsageCursor, UsageEntry, UsageFilter};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
/// Rows read per query while a CSV export streams: what sits in memory at once.
const CSV_CHUNK: i64 = 1_000;
/// The longest range the daily summary sums, and its default when `from` is not given.
const MAX_DAILY_DAYS: i64 = 366;
const DEFAULT_DAILY_DAYS: i64 = 30;
const MAX_MODEL_CHARS: usize = 200;
/// The start of year 10000, in microseconds since 1970: past any time a row holds.
const MAX_CURSOR_MICROS: i64 = 253_402_300_800_000_000;

/// `from` and `to`, each optional.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The query string as name/value pairs; a name that is not one of `allowed` is refused, so a
/// misspelt filter never silently widens what is read.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|error| ApiError::invalid(format!("invalid query string: {error}")))?
            .into_inner();
        for (name, value) in &pairs {
            // Postgres cannot store or compare text holding U+0000.
            if value.contains('\0') && allowed.contains(&name.as_str()) {
                return Err(ApiError::field(
                    name.as_str(),
                    "must not contain the NUL character (U+0000)",
                ));
            }
            if !allowed.contains(&name.as_str()) {
                let shown = if name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic()) {
                    name.as_str()
                } else {
                    "(unprintable)"
                };
                return Err(ApiError::field(shown, "unknown query parameter"));
            }
        }
        if let Some(name) = allowed
            .iter()
            .find(|name| pairs.iter().filter(|(n, _)| n == *name).count() > 1)
        {
            return Err(ApiError::field(*name, "given more than once"));
        }
        Ok(Query(pairs))
    }

    /// A parameter's value; an empty one counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn time(&self, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::field(name, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
                    })
            })
            .transpose()
    }

    fn limit(&self) -> Result<i64, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_PAGE),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_PAGE}"),
                    )
                }),
        }
    }

    /// `from` and `to`, checked to be in order.
    fn range(&self) -> Result<TimeRange, ApiError> {
        let (from, to) = (self.time("from")?, self.time("to")?);
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                return Err(ApiError::field("to", "is before from"));
            }
        }
        Ok((from, to))
    }
}

/// The filters of the usage routes, checked against the session's account.
async fn usage_filter(
    query: &Query,
    session: &Session,
    state: &AppState,
) -> Result<UsageFilter, ApiError> {
    let (from, to) = query.range()?;
    let model = query.get("model").map(str::to_string);
    if model
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MODEL_CHARS)
    {
        return Err(ApiError::field(
            "model",
            format!("longer than {MAX_MODEL_CHARS} characters"),
        ));
    }
    let key_id = match query.get("key_id") {
        None => None,
        Some(raw) => {
            let id = Uuid::parse_str(raw).map_err(|_| ApiError::field("key_id", "not a key id"))?;
            let own = state
                .store
                .key_of_account(id, session.account_id)
                .await
                .map_err(ApiError::internal)?;
            if !own {
                return Err(ApiError::NotFound("key"));
            }
            Some(id)
        }
    };
    Ok(UsageFilter {
        from,
        to,
        model,
        key_id,
    })
}

/// A usage cursor on the wire: the row's start in microseconds since the epoch and its
/// request id, `<micros>_<uuid>`. It only positions a page inside the caller's own rows, so a
/// forged one reads nothing it could not read anyway.
fn encode_usage_cursor(cursor: UsageCursor) -> String {
    format!(
        "{}_{}",
        cursor.started_at.timestamp_micros(),
        cursor.request_id.simple()
    )
}

fn decode_usage_cursor(raw: &str) -> Result<UsageCursor, ApiError> {
    let bad = || ApiError::field("cursor", "not a cursor from a previous page");
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    // Postgres keeps times from 4713 BC; a cursor is a time tollgate wrote, after 1970.
    if !(0..=MAX_CURSOR_MICROS).contains(&micros) {
        return Err(bad());
    }
    Ok(UsageCursor {
        started_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
        request_id: Uuid::parse_str(id).map_err(|_| bad())?,
    })
}

/// One settled request.
#[derive(Serialize, ToSchema)]
pub struct UsageRow<'a> {
    /// The 32 hex digits of the `request-id` header (`req_<32 hex>`), as a UUID.
    request_id: Uuid,
    /// When the request started.
    created_at: DateTime<Utc>,
    model: &'a str,
    key_id: Uuid,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_5m_tokens: i64,
    cache_write_1h_tokens: i64,
    /// What the request was billed, exactly.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.003105")]
    cost_usd: Decimal,
    /// How the request ended (`ok`, or the kind of failure it was billed for).
    status: &'a str,
    latency_ms: i64,
}

fn usage_json(entry: &UsageEntry) -> UsageRow<'_> {
    UsageRow {
        request_id: entry.request_id,
        created_at: entry.started_at,
        model: &entry.model,
        key_id: entry.key_id,
        input_tokens: entry.input_tokens,
        output_tokens: entry.output_tokens,
        cache_read_tokens: entry.cache_read_tokens,
        cache_write_5m_tokens: entry.cache_write_5m_tokens,
        cache_write_1h_tokens: entry.cache_write_1h_tokens,
        cost_usd: entry.cost.normalize(),
        status: &entry.outcome,
        latency_ms: entry.latency_ms(),
    }
}

/// A page of settled requests, newest first.
#[derive(Serialize, ToSchema)]
pub struct UsagePage<'a> {
    data: Vec<UsageRow<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// `GET /api/v1/usage?from&to&model&key_id&cursor&limit`: settled requests, newest first.
/// Rows appear once flushed (within a flush interval of settling).
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    operation_id = "list_usage",
    tag = "usage",
    summary = "List settled requests",
    params(UsageQuery),
    responses(
        (status = 200, description = "A page of requests, newest first", body = UsagePage),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn usage(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["from", "to", "model", "key_id", "cursor", "limit"])?;
    let filter = usage_filter(&query, &session, &state).await?;
    let limit = query.limit()?;
    let cursor = query.get("cursor").map(decode_usage_cursor).transpose()?;
    let rows = state
        .store
        .usage_page(session.account_id, &filter, cursor, limit)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(encode_usage_cursor(last.cursor())),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(UsagePage {
        data: rows.iter().map(usage_json).collect(),
        next_cursor,
    }))
}

const CSV_HEADER: [&str; 12] = [
    "request_id",
    "created_at",
    "model",
    "key_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cost_usd",
    "status",
    "latency_ms",
];

/// A text cell as a spreadsheet will not run it: one that starts like a formula gets a leading
/// apostrophe (OWASP's advice on CSV injection).
fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

fn csv_rows(rows: &[UsageEntry], header: bool) -> Result<web::Bytes, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 160));
    if header {
        writer.write_record(CSV_HEADER)?;
    }
    for row in rows {
        writer.write_record([
            row.request_id.to_string().as_str(),
            &row.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            &inert(&row.model),
            &row.key_id.to_string(),
            &row.input_tokens.to_string(),
            &row.output_tokens.to_string(),
            &row.cache_read_tokens.to_string(),
            &row.cache_write_5m_tokens.to_string(),
            &row.cache_write_1h_tokens.to_string(),
            &row.cost.normalize().to_string(),
            &inert(&row.outcome),
            &row.latency_ms().to_string(),
        ])?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))?;
    Ok(web::Bytes::from(bytes))
}

/// `GET /api/v1/usage.csv?from&to&model&key_id`: the same rows as [`usage`], all of them, as
/// CSV. It is streamed a chunk of rows at a time, so an export of a month never sits in
/// memory. A database failure part-way ends the body early (the status was already sent); it
/// is logged.
#[utoipa::path(
    get,
    path = "/api/v1/usage.csv",
    operation_id = "export_usage_csv",
    tag = "usage",
    summary = "Export settled requests as CSV",
    params(UsageCsvQuery),
    responses(
        (status = 200, description = "Every matching request, newest first, with a header row of the same names as `/api/v1/usage`'s fields", body = String, content_type = "text/csv"),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn usage_csv(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["from", "to", "model", "key_id"])?;
    let filter = usage_filter(&query, &session, &state).await?;
    let account_id = session.account_id;
    struct Export {
        state: web::Data<AppState>,
        filter: UsageFilter,
        cursor: Option<UsageCursor>,
        first: bool,
        done: bool,
    }
    let start = Export {
        state,
        filter,
        cursor: None,
        first: true,
        done: false,
    };
    let body = stream::unfold(start, move |mut export| async move {
        if export.done {
            return None;
        }
        let page = export
            .state
            .store
            .usage_page(account_id, &export.filter, export.cursor, CSV_CHUNK)
            .await;
        let rows = match page {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(account = %account_id, %error, "usage export failed part-way");
                export.done = true;
                return Some((Err(std::io::Error::other("usage export failed")), export));
            }
        };
        export.done = (rows.len() as i64) < CSV_CHUNK;
        export.cursor = rows.last().map(UsageEntry::cursor);
        let chunk = csv_rows(&rows, export.first).map_err(|error| {
            tracing::error!(%error, "usage export could not write CSV");
            std::io::Error::other("usage export failed")
        });
        export.first = false;
        Some((chunk, export))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            "attachment; filename=\"tollgate-usage.csv\"",
        ))
        .streaming(body))
}

/// `GET /api/v1/usage/daily?from&to` → `{"data":[{"day","model","requests",...,"cost_usd"}]}`,
/// Usage summed over one UTC day and one model.
#[derive(Serialize, ToSchema)]
pub struct DailyRow<'a> {
    day: NaiveDate,
    model: &'a str,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_5m_tokens: i64,
    cache_write_1h_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "1.25")]
    cost_usd: Decimal,
}

/// The daily sums of a range, newest day first.
#[derive(Serialize, ToSchema)]
pub struct DailyPage<'a> {
    data: Vec<DailyRow<'a>>,
    /// The range summed: `from` and `to` as given, or their defaults.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// by UTC day and model, newest day first. Without `from`, the last 30 days.
#[utoipa::path(
    get,
    path = "/api/v1/usage/daily",
    operation_id = "daily_usage",
    tag = "usage",
    summary = "Sum usage by day and model",
    params(DailyQuery),
    responses(
        (status = 200, description = "One row per day and model", body = DailyPage),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn daily(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["from", "to"])?;
    let (from, to) = query.range()?;
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_DAILY_DAYS));
    if to - from > Duration::days(MAX_DAILY_DAYS) {
        return Err(ApiError::field(
            "from",
            format!("the range is longer than {MAX_DAILY_DAYS} days"),
        ));
    }
    let days = state
        .store
        .daily_usage(session.account_id, from, to)
        .await
        .map_err(ApiError::internal)?;
    let data = days
        .iter()
        .map(|day| DailyRow {
            day: day.day,
            model: &day.model,
            requests: day.requests,
            input_tokens: day.input_tokens,
            output_tokens: day.output_tokens,
            cache_read_tokens: day.cache_read_tokens,
            cache_write_5m_tokens: day.cache_write_5m_tokens,
            cache_write_1h_tokens: day.cache_write_1h_tokens,
            cost_usd: day.cost.normalize(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DailyPage { data, from, to }))
}

/// One change of the balance.
#[derive(Serialize, ToSchema)]
pub struct LedgerRow<'a> {
    /// The entry's number, as a string.
    #[schema(example = "42")]
    id: String,
    created_at: DateTime<Utc>,
    /// `credit`, `recharge`, `redemption`, `referral_reward`, `referral_reversal`, `usage`,
    /// `adjustment` or `forfeiture`.
    #[schema(example = "usage")]
    kind: &'a str,
    /// Signed: debits are negative.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "-0.25")]
    amount_usd: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "19.75")]
    balance_after: Decimal,
    /// What ties the entry to its cause: an operator's change id, or else the reason.
    reference: Option<String>,
    reason: Option<&'a str>,
    /// How many requests a `usage` entry sums (one entry per flush).
    usage_count: Option<i32>,
}

fn ledger_json(entry: &LedgerEntry) -> LedgerRow<'_> {
    // The reference is what ties the entry to its cause: an operator's change id (its
    // idempotency record), or else the stored reason.
    let reference = entry
        .change_id
        .map(|id| id.to_string())
        .or_else(|| entry.reason.clone());
    LedgerRow {
        id: entry.id.to_string(),
        created_at: entry.created_at,
        kind: &entry.kind,
        amount_usd: entry.amount.normalize(),
        balance_after: entry.balance_after.normalize(),
        reference,
        reason: entry.reason.as_deref(),
        usage_count: entry.usage_count,
    }
}

/// A page of the ledger, newest first.
#[derive(Serialize, ToSchema)]
pub struct LedgerPage<'a> {
    data: Vec<LedgerRow<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// `GET /api/v1/ledger?cursor&limit`: every change of the balance, newest first. Usage is one
/// entry per flush, summing that flush's requests (`usage_count`).
#[utoipa::path(
    get,
    path = "/api/v1/ledger",
    operation_id = "list_ledger",
    tag = "usage",
    summary = "List the changes of the balance",
    params(LedgerQuery),
    responses(
        (status = 200, description = "A page of ledger entries, newest first", body = LedgerPage),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn ledger(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["cursor", "limit"])?;
    let limit = query.limit()?;
    let before = query
        .get("cursor")
        .map(|raw| {
            raw.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::field("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    let rows = state
        .store
        .ledger_page(session.account_id, before, limit)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(last.id.to_string()),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(LedgerPage {
        data: rows.iter().map(ledger_json).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_cursor_reads_back_and_a_forged_one_is_refused() {
        let cursor = UsageCursor {
            started_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            request_id: Uuid::now_v7(),
        };
        assert_eq!(
            decode_usage_cursor(&encode_usage_cursor(cursor)).unwrap(),
            cursor
        );
        for forged in [
            "",
            "-300000000000000000_0193a8e0-0000-7000-8000-000000000000",
            "253402300800000001_0193a8e0-0000-7000-8000-000000000000",
            "x",
            "1_",
            "_0193",
            "99999999999999999999_abc",
            "1_not-a-uuid",
        ] {
            assert!(decode_usage_cursor(forged).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn a_cell_that_looks_like_a_formula_is_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("-1+2"), "'-1+2");
        assert_eq!(inert("claude-sonnet-4-5"), "claude-sonnet-4-5");
    }
}
