//! Request bodies of the admin and customer APIs: JSON read into a typed request, with an error
//! that names the field it is about (`limits.max_concurrent`, `models[2]`), so a client can
//! tell which input to fix. A body that does not parse changes nothing: it is refused before a
//! handler does anything else.

use actix_web::web;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON body; an empty one reads as `{}`. A value of the wrong type, an unknown field (where
/// the type refuses them) or a missing one is a 400 whose `field` is the path to it, and so is
/// a string holding U+0000 ([`refuse_nul`]).
pub fn json_body<T: for<'de> Deserialize<'de>>(raw: &web::Bytes) -> Result<T, ApiError> {
    let raw: &[u8] = if raw.is_empty() { b"{}" } else { raw };
    let value: Value = serde_json::from_slice(raw)
        .map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?;
    refuse_nul(&value)?;
    let parsed: Result<T, _> = serde_path_to_error::deserialize(value);
    parsed.map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde's message says what was wrong ("invalid type: integer `7`, expected a
        // string"); it quotes a scalar at most, never the body.
        if path.is_empty() || path == "." {
            ApiError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::field(path, inner)
        }
    })
}

/// Refuses a body with U+0000 in any string, naming the field (`reason`, `models[2]`).
/// Postgres cannot store that character in text, so letting it through turns a bad input
/// into a failed write and a 500.
pub fn refuse_nul(value: &Value) -> Result<(), ApiError> {
    nul_refusal(find_nul(value, String::new()))
}

/// [`refuse_nul`] for a body already read as an object.
pub fn refuse_nul_in(map: &Map<String, Value>) -> Result<(), ApiError> {
    nul_refusal(find_nul_in(map, ""))
}

fn nul_refusal(found: Option<String>) -> Result<(), ApiError> {
    const PROBLEM: &str = "must not contain the NUL character (U+0000)";
    match found {
        None => Ok(()),
        Some(path) if path.is_empty() => Err(ApiError::invalid(format!("the body {PROBLEM}"))),
        Some(path) => Err(ApiError::field(path, PROBLEM)),
    }
}

/// The path to the first string holding U+0000, as serde_path_to_error writes paths; a key
/// holding it is named by the path of its object (empty at the top), since the key itself is
/// not printable.
fn find_nul(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then_some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_nul(item, format!("{path}[{index}]"))),
        Value::Object(map) => find_nul_in(map, &path),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

fn find_nul_in(map: &Map<String, Value>, path: &str) -> Option<String> {
    map.iter().find_map(|(key, item)| {
        if key.contains('\0') {
            return Some(path.to_string());
        }
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        find_nul(item, here)
    })
}

/// A decimal amount of money that must arrive as a JSON string (`"12.50"`), never a number:
/// a JSON number is read as a binary float by most clients, and `0.1` is then not `0.1`.
/// `null` or absence is `None`.
pub mod money_option {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
        }
        let Some(Wire::Text(text)) = Option::<Wire>::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("must be a decimal string such as \"12.50\", not a number")
        })?
        else {
            return Ok(None);
        };
        text.trim()
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("is not a decimal number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        name: Option<String>,
        #[serde(default, deserialize_with = "money_option::deserialize")]
        cap: Option<Decimal>,
        limits: Option<Limits>,
    }

    #[derive(Debug, Deserialize)]
    struct Limits {
        #[allow(dead_code)]
        max: u32,
    }

    fn field(body: &str) -> Option<String> {
        match json_body::<Request>(&web::Bytes::from(body.to_string())) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_refusal_names_the_path_to_its_field() {
        assert_eq!(field(r#"{"name":7}"#).as_deref(), Some("name"));
        assert_eq!(
            field(r#"{"limits":{"max":-1}}"#).as_deref(),
            Some("limits.max")
        );
        assert_eq!(field(r#"{"cap":12.5}"#).as_deref(), Some("cap"));
        assert_eq!(field(r#"{"cap":"twelve"}"#).as_deref(), Some("cap"));
        assert_eq!(field(r#"{"nmae":"x"}"#).as_deref(), Some("nmae"));
        assert_eq!(field("{").as_deref(), None);
        assert_eq!(field(r#"{} {}"#).as_deref(), None);
    }

    #[test]
    fn a_nul_character_is_refused_where_it_is() {
        assert_eq!(field(r#"{"name":"a\u0000b"}"#).as_deref(), Some("name"));
        assert_eq!(
            field(r#"{"limits":{"max":1},"list":["ok","\u0000"]}"#).as_deref(),
            Some("list[1]")
        );
        assert_eq!(field(r#"{"\u0000":1}"#).as_deref(), None);
        // An escaped backslash followed by "u0000" is text, not the character.
        let parsed: Request = json_body(&web::Bytes::from(r#"{"name":"\\u0000"}"#)).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("\\u0000"));
    }

    #[test]
    fn money_is_read_from_a_string_exactly() {
        let parsed: Request = json_body(&web::Bytes::from(r#"{"cap":"0.1"}"#)).unwrap();
        assert_eq!(parsed.cap, Some(Decimal::new(1, 1)));
        let absent: Request = json_body(&web::Bytes::new()).unwrap();
        assert_eq!(absent.cap, None);
        let null: Request = json_body(&web::Bytes::from(r#"{"cap":null}"#)).unwrap();
        assert_eq!(null.cap, None);
        assert!(absent.name.is_none() && absent.limits.is_none());
    }
}
