//! The load-test harness against a real tollgate: the shipped scenarios' books must reconcile
//! exactly.

use std::path::Path;

use loadgen::{run_scenario_with, Endpoints, RunOptions, Scenario};

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
