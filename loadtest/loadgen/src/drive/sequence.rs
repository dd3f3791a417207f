//! The whole scenario: preflight, tenants, the tollgate run, reconciliation, the reference
//! runs, and the report.

use chrono::Utc;

use super::{http_client, run_workload, KeySlot, RunOptions, RunTarget};
use crate::outcome::ScenarioReport;
use crate::provision;
use crate::reconcile::{self, Admin};
use crate::scenario::{Endpoints, Scenario};

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// Runs a whole scenario: preflight (nothing is provisioned if tollgate, the admin token or a
/// reference target fails it), tenants, the tollgate run, reconciliation (when the scenario
/// asks for it; `endpoints.database_url` is then required), then the same workload
/// against the references (`direct`, `passthrough`) when given.
///
/// Callable from any multi-threaded tokio runtime, actix's included.
pub async fn run_scenario(
    scenario: &Scenario,
    endpoints: &Endpoints,
) -> anyhow::Result<ScenarioReport> {
    run_scenario_with(scenario, endpoints, RunOptions { progress: true }).await
}

/// [`run_scenario`] with options.
pub async fn run_scenario_with(
    scenario: &Scenario,
    endpoints: &Endpoints,
    options: RunOptions,
) -> anyhow::Result<ScenarioReport> {
    scenario.validate()?;
    if scenario.reconcile && endpoints.database_url.is_none() {
        anyhow::bail!("the scenario reconciles (reconcile: true) but no --database-url was given");
    }
    // Read before anything is provisioned: a run that cannot be priced is not started.
    let prices = scenario.price_table()?;
    let client = http_client(scenario)?;
    let tollgate = trim(&endpoints.tollgate);
    let mut references = Vec::new();
    if scenario.baseline {
        if let Some(direct) = &endpoints.direct {
            references.push(("direct".to_string(), trim(direct)));
        }
        if let Some(passthrough) = &endpoints.passthrough {
            references.push(("passthrough".to_string(), trim(passthrough)));
        }
    }
    let database_url = endpoints
        .database_url
        .as_deref()
        .filter(|_| scenario.reconcile);
    provision::preflight(
        &client,
        &tollgate,
        &endpoints.admin_token,
        &references,
        database_url,
    )
    .await?;

    let started = Utc::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = run_id.get(..12).unwrap_or(&run_id).to_string();
    let provisioned = provision::provision(
        &client,
        &tollgate,
        &endpoints.admin_token,
        scenario,
        &run_id,
    )
    .await?;
    if options.progress {
        eprintln!(
            "{}: provisioned {} account(s), {} well-behaved and {} abusive key(s)",
            scenario.name,
            provisioned.tenants.len(),
            provisioned.well_behaved.len(),
            provisioned.abusers.len()
        );
    }
    let target = RunTarget {
        name: "tollgate".into(),
        base_url: tollgate.clone(),
        well_behaved: provisioned
            .well_behaved
            .iter()
            .map(KeySlot::of)
            .collect::<anyhow::Result<_>>()?,
        abusers: provisioned
            .abusers
            .iter()
            .map(KeySlot::of)
            .collect::<anyhow::Result<_>>()?,
    };
    let (tollgate_run, records) = run_workload(&client, scenario, target, options).await?;

    let reconciliation = match (&endpoints.database_url, scenario.reconcile) {
        (Some(database_url), true) => {
            if options.progress {
                eprintln!(
                    "{}: reconciling {} billed requests",
                    scenario.name,
                    records.len()
                );
            }
            let admin = Admin {
                base_url: tollgate.clone(),
                token: endpoints.admin_token.clone(),
            };
            Some(
                reconcile::reconcile(
                    &client,
                    &admin,
                    database_url,
                    &provisioned.tenants,
                    &records,
                    &prices,
                )
                .await?,
            )
        }
        _ => {
            if options.progress {
                eprintln!("reconciliation: skipped (reconcile: false)");
            }
            None
        }
    };

    let mut reference_runs = Vec::new();
    for (name, url) in references {
        let anonymous = KeySlot::anonymous(scenario.upstream.api_key.as_deref())?;
        let target = RunTarget {
            name,
            base_url: url,
            well_behaved: vec![anonymous.clone()],
            abusers: vec![anonymous; provisioned.abusers.len()],
        };
        let (run, _) = run_workload(&client, scenario, target, options).await?;
        reference_runs.push(run);
    }

    Ok(ScenarioReport::new(
        scenario,
        started,
        Utc::now(),
        provisioned.tenants.len(),
        records.len(),
        tollgate_run,
        reference_runs,
        reconciliation,
    ))
}
