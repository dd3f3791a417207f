//! Reading YAML into loadgen's types (scenarios, price tables) with errors that name the
//! field at fault, as `traffic.models[1].weight`, rather than a line and column only.

use serde::de::DeserializeOwned;

/// A document that does not fit the type: the path of the field at fault (empty when the
/// document as a whole is at fault) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Parses `text` as a `T`.
pub(crate) fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            FieldError {
                path: String::new(),
                message,
            }
        } else {
            let message = strip_path(&message, &path).to_string();
            FieldError { path, message }
        }
    })
}

/// `message` without the path the YAML parser puts in front of it (`traffic: unknown field
/// …`), when that path is `path` or one of its parents: the error names the field itself.
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
