//! Health and metrics for whoever runs tollgate.

use std::net::IpAddr;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use tollgate_actors::journal::{JournalHealth, COMMIT_THRESHOLDS_US};

use super::error::ApiError;
use super::extract::{bearer_token, client_addr, tokens_match};
use super::forwarded::TrustedProxy;
use super::AppState;
use crate::config::MetricsSettings;

/// Whether `peer` is on this host or a private network: loopback, RFC 1918, link local, IPv6
/// unique local, or an IPv4 one of those mapped into IPv6.
fn is_private(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Whether this request may read `/metrics` (`metrics.allow_private`, `metrics.token`). The
/// client's address is the one a trusted proxy forwarded, if any (`server.trusted_proxies`):
/// behind a reverse proxy on the private network, the peer is always private. An address the
/// walk could not get past a trusted proxy's is not counted as private: the client may have
/// hidden behind an unreadable entry or sent none.
fn may_read_metrics(
    req: &HttpRequest,
    settings: &MetricsSettings,
    trusted: &[TrustedProxy],
) -> bool {
    let private =
        client_addr(req, trusted).is_some_and(|client| client.seen && is_private(client.ip));
    if settings.allow_private && private {
        return true;
    }
    !settings.token.is_empty()
        && bearer_token(req.headers()).is_some_and(|token| tokens_match(token, &settings.token))
}

/// `GET /healthz`: 200 when Postgres answers, the ledger is being written and the journal (if
/// there is one) takes settles.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await.is_ok();
    let ledger = !state.engine.flusher_stats().failing;
    let journal = state.engine.journal().map(|journal| journal.health());
    let journal_ok = journal.as_ref().is_none_or(JournalHealth::admits);
    let healthy = database && ledger && journal_ok;
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "database": if database { "ok" } else { "unreachable" },
        "ledger": if ledger { "ok" } else { "failing" },
        "journal": journal.as_ref().map_or("off", journal_word),
    });
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The journal's health in a word, for `/healthz`.
fn journal_word(health: &JournalHealth) -> &'static str {
    match health {
        JournalHealth::Healthy => "ok",
        JournalHealth::Full { .. } => "full",
        JournalHealth::Stalled { .. } => "stalled",
        JournalHealth::Overloaded { .. } => "overloaded",
        JournalHealth::Stopped => "stopped",
        JournalHealth::Failed { .. } => "failed",
    }
}

/// `GET /metrics`: Prometheus text, for loopback and private addresses or the bearer of
/// `metrics.token`.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !may_read_metrics(
        &req,
        &state.settings.metrics,
        &state.settings.server.trusted_proxies,
    ) {
        return ApiError::Forbidden(
            "metrics are served to loopback and private addresses, or with metrics.token as a bearer token",
        )
        .error_response();
    }
    let flusher = state.engine.flusher_stats();
    metrics::gauge!("tollgate_unflushed_usage_records").set(flusher.backlog as f64);
    metrics::gauge!("tollgate_flushed_usage_records").set(flusher.flushed_records as f64);
    metrics::gauge!("tollgate_flushes").set(flusher.flushes as f64);
    // Only ever grows: a counter, so that rate() and increase() apply.
    metrics::counter!("tollgate_failed_flushes_total").absolute(flusher.failed_flushes);
    metrics::gauge!("tollgate_ledger_failing").set(if flusher.failing { 1.0 } else { 0.0 });
    metrics::gauge!("tollgate_active_accounts").set(state.engine.active_accounts() as f64);
    metrics::gauge!("tollgate_orphaned_accounts").set(state.engine.orphaned_accounts() as f64);
    metrics::gauge!("tollgate_api_keys").set(state.keys.len() as f64);
    metrics::counter!("tollgate_settles_not_durable_total")
        .absolute(state.engine.settles_not_durable());
    if let Some(journal) = state.engine.journal() {
        let stats = journal.stats();
        let healthy = journal.health().admits();
        metrics::gauge!("tollgate_journal_healthy").set(if healthy { 1.0 } else { 0.0 });
        metrics::counter!("tollgate_journal_appended_total").absolute(stats.appended);
        metrics::counter!("tollgate_journal_written_total").absolute(stats.written);
        metrics::counter!("tollgate_journal_commits_total").absolute(stats.commits);
        metrics::counter!("tollgate_journal_syncs_total").absolute(stats.syncs);
        metrics::gauge!("tollgate_journal_queued").set(stats.queued as f64);
        metrics::gauge!("tollgate_journal_unflushed_records").set(stats.unflushed as f64);
        metrics::gauge!("tollgate_journal_bytes").set(stats.bytes as f64);
        metrics::gauge!("tollgate_journal_segments").set(stats.segments as f64);
        metrics::counter!("tollgate_journal_spares_total").absolute(stats.spares);
        for (threshold, count) in COMMIT_THRESHOLDS_US.iter().zip(stats.commits_slower_than) {
            let micros = i64::try_from(*threshold).unwrap_or(i64::MAX);
            let seconds = rust_decimal::Decimal::new(micros, 6)
                .normalize()
                .to_string();
            metrics::counter!("tollgate_journal_commits_slower_than_total", "seconds" => seconds)
                .absolute(count);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_this_host_and_private_networks_only() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "169.254.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
