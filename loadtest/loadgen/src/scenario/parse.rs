//! Reading a scenario: YAML text or a file, with every unknown key refused and every
//! error naming its field.

use std::collections::BTreeSet;
use std::path::Path;

use mock_anthropic::MockConfig;

use super::validate::{bad, ScenarioError};
use super::Scenario;

/// The keys of `upstream` that [`MockConfig`] does not know: it does not refuse unknown keys
/// itself, so they are found by comparing with what it serializes back.
fn unknown_upstream_keys(raw: &serde_yaml::Value) -> Result<Vec<String>, ScenarioError> {
    let Some(map) = raw.as_mapping() else {
        return Ok(Vec::new());
    };
    let known: MockConfig = match serde_yaml::from_value(raw.clone()) {
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
    let back = serde_yaml::to_value(&known).map_err(|e| bad("upstream", e.to_string()))?;
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

/// `message` without the path serde_yaml puts in front of it (`traffic: unknown field …`),
/// when that path is `path` or one of its parents: [`ScenarioError`] names the field itself.
fn strip_path<'a>(message: &'a str, path: &str) -> &'a str {
    let Some((head, rest)) = message.split_once(": ") else {
        return message;
    };
    let parent = path
        .strip_prefix(head)
        .is_some_and(|tail| tail.is_empty() || tail.starts_with(['.', '[']));
    if parent {
        rest
    } else {
        message
    }
}

impl Scenario {
    /// Parses and validates a scenario from YAML text.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| bad("", format!("invalid YAML: {e}")))?;
        if let Some(upstream) = raw.get("upstream") {
            if let Some(key) = unknown_upstream_keys(upstream)?.first() {
                return Err(bad(&format!("upstream.{key}"), "unknown field"));
            }
        }
        let scenario: Scenario = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| {
            let path = e.path().to_string();
            let text = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                bad("", format!("invalid scenario: {text}"))
            } else {
                bad(&path, strip_path(&text, &path))
            }
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file; its name defaults to the file stem.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("", format!("{}: {e}", path.display())))?;
        let mut scenario = Scenario::from_yaml(&text)
            .map_err(|e| bad(&e.field, format!("{} ({})", e.message, path.display())))?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(scenario)
    }
}
