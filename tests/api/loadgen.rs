//! The load-test harness against a real tollgate: the shipped scenarios' books must reconcile
//! exactly.

use std::path::Path;

use loadgen::prices::{PriceTable, TokenPrices};
use loadgen::{run_scenario_with, Endpoints, RunOptions, Scenario};
use tollgate_actors::pricing::{Prices, RateCard};

use crate::helpers::*;

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("loadtest/scenarios")
        .join(format!("{name}.yaml"));
    Scenario::load(&path).unwrap_or_else(|error| panic!("{name}: {error}"))
}

async fn run(mut scenario: Scenario, duration_secs: f64) {
    scenario.duration_secs = duration_secs;
    // The upstream is the scenario's own simulated one, so planned usage matches what it sends.
    let app = spawn_app_with(scenario.upstream.clone(), |settings| {
        settings.limits.requests_per_minute = 0;
        settings.limits.tokens_per_minute = 0;
        settings.limits.max_concurrent = 0;
    })
    .await;
    let endpoints = Endpoints {
        tollgate: app.base.clone(),
        admin_token: ADMIN_TOKEN.into(),
        database_url: Some(app.db.url.clone()),
        direct: Some(app.mock.base_url()),
        passthrough: None,
    };
    let report = run_scenario_with(&scenario, &endpoints, RunOptions { progress: false })
        .await
        .unwrap_or_else(|error| panic!("{}: {error:#}", scenario.name));
    let reconciliation = report
        .reconciliation
        .as_ref()
        .expect("the scenario reconciles");
    assert!(reconciliation.exact, "{}", report.render());
    assert!(
        reconciliation.accounts.iter().all(|a| !a.negative),
        "{}",
        report.render()
    );
    assert!(report.billed_requests > 20, "{}", report.render());
    assert!(report.passed(), "{}", report.render());
}

#[actix_web::test]
async fn the_smoke_scenario_reconciles_exactly() {
    run(scenario("smoke"), 2.0).await;
}

#[actix_web::test]
async fn a_flaky_upstream_is_billed_exactly_what_it_delivered() {
    run(scenario("upstream-faults"), 2.0).await;
}

fn same_prices(loadgen: &TokenPrices, tollgate: &Prices) -> bool {
    loadgen.input == tollgate.input
        && loadgen.output == tollgate.output
        && loadgen.cache_read == tollgate.cache_read
        && loadgen.cache_write_5m == tollgate.cache_write_5m
        && loadgen.cache_write_1h == tollgate.cache_write_1h
}

/// loadgen reconciles with its own price table, never with the rate card, so that a wrong
/// price cannot reconcile. The two are kept from drifting apart here: when this fails, one of
/// them is wrong, and shared/reference/anthropic-api.md says which.
#[test]
fn loadgens_shipped_prices_agree_with_the_rate_card_today() {
    let card = RateCard::builtin().expect("the built-in rate card");
    let now = chrono::Utc::now();
    let table = PriceTable::shipped().expect("the shipped price table");
    for model in &table.models {
        for id in &model.ids {
            let version = card
                .price_at(id, now)
                .unwrap_or_else(|| panic!("{id} is not on the rate card"));
            assert!(same_prices(&model.usd_per_mtok, &version.base), "{id}");
            assert_eq!(model.web_search_per_use, version.web_search_per_use, "{id}");
            match (&model.long_prompt, &version.long_prompt) {
                (None, None) => {}
                (Some(loadgen), Some(tollgate)) => {
                    assert_eq!(loadgen.above_tokens, tollgate.threshold_tokens, "{id}");
                    assert_eq!(loadgen.requires_beta, tollgate.requires_beta, "{id}");
                    assert!(same_prices(&loadgen.usd_per_mtok, &tollgate.prices), "{id}");
                }
                _ => panic!("{id}: only one side has a long-prompt tier"),
            }
        }
    }
}
