//! Reading a scenario: YAML text or a file, with every unknown key refused and every
//! error naming its field.

use std::collections::BTreeSet;
use std::path::Path;

use mock_anthropic::MockConfig;

use super::validate::{bad, ScenarioError};
use super::Scenario;
use crate::prices::PriceTable;
use crate::yaml;

/// The keys of `upstream` that [`MockConfig`] does not know: it does not refuse unknown keys
/// itself, so they are found by comparing with what it serializes back.
fn unknown_upstream_keys(raw: &serde_norway::Value) -> Result<Vec<String>, ScenarioError> {
    let Some(map) = raw.as_mapping() else {
        return Ok(Vec::new());
    };
    let known: MockConfig = match serde_norway::from_value(raw.clone()) {
        Ok(known) => known,
        Err(e) => {
            let text = e.to_string();
            if let Some(rest) = text.strip_prefix("unknown field `") {
                if let Some((name, _)) = rest.split_once('`') {
                    return Ok(vec![name.to_string()]);
                }
            }
            return Err(bad("upstream", text));
        }
    };
    let back = serde_norway::to_value(&known).map_err(|e| bad("upstream", e.to_string()))?;
    let known_keys: BTreeSet<String> = back
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(map
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| !known_keys.contains(*k))
        .map(str::to_string)
        .collect())
}

impl Scenario {
    /// Parses and validates a scenario from YAML text; a `prices_file` is relative to the
    /// working directory.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("."))
    }

    /// Reads, parses and validates a scenario file; its name defaults to the file stem, and a
    /// `prices_file` is relative to its directory.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("", format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut scenario = Scenario::parse(&text, dir)
            .map_err(|e| bad(&e.field, format!("{} ({})", e.message, path.display())))?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(scenario)
    }

    fn parse(text: &str, dir: &Path) -> Result<Scenario, ScenarioError> {
        let raw: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| bad("", format!("invalid YAML: {e}")))?;
        if let Some(upstream) = raw.get("upstream") {
            if let Some(key) = unknown_upstream_keys(upstream)?.first() {
                return Err(bad(&format!("upstream.{key}"), "unknown field"));
            }
        }
        let mut scenario: Scenario = yaml::from_str(text).map_err(|e| {
            if e.path.is_empty() {
                bad("", format!("invalid scenario: {}", e.message))
            } else {
                bad(&e.path, e.message)
            }
        })?;
        scenario.read_prices_file(dir)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads the price file `prices_file` names, relative to `dir`, into `prices`.
    fn read_prices_file(&mut self, dir: &Path) -> Result<(), ScenarioError> {
        let Some(file) = &self.prices_file else {
            return Ok(());
        };
        if self.prices.is_some() {
            return Err(bad(
                "prices_file",
                "give the prices inline (prices) or in a file (prices_file), not both",
            ));
        }
        let table = PriceTable::load(&dir.join(file)).map_err(|e| bad("prices_file", e.0))?;
        self.prices = Some(table);
        Ok(())
    }
}
