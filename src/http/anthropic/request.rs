//! Reading a request body and parsing and pricing a Messages request: the steps between
//! authentication and admission.

use std::borrow::Cow;

use actix_web::{web, HttpRequest};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate_actors::pricing::{PriceVersion, RateCard};

use crate::http::error::ProxyError;

/// Reads the whole body, refusing one larger than `limit` before reading it where the client
/// declared its length.
pub(super) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match payload.to_bytes_limited(limit).await {
        Err(_) => Err(ProxyError::BodyTooLarge { limit }),
        Ok(Err(error)) => Err(ProxyError::bad_request(format!(
            "could not read the request body: {error}"
        ))),
        Ok(Ok(body)) => Ok(body),
    }
}

/// The fields of a Messages request that tollgate reads. Everything else passes through
/// unseen; the body is forwarded byte for byte.
#[derive(Deserialize)]
struct MessagesProbe<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    max_tokens: Option<serde_json::Number>,
    /// Read only to refuse a non-boolean early; whether a response streams is decided by what
    /// the upstream sends.
    #[allow(dead_code)]
    stream: Option<bool>,
}

/// Parsed and checked: what the hold and the relay need to know.
#[derive(Debug)]
pub(super) struct Checked {
    pub model: String,
    pub max_tokens: u64,
}

pub(super) fn check_messages_body(body: &[u8]) -> Result<Checked, ProxyError> {
    let probe: MessagesProbe<'_> = serde_json::from_slice(body)
        .map_err(|error| ProxyError::bad_request(format!("invalid request body: {error}")))?;
    let model = probe
        .model
        .ok_or_else(|| ProxyError::field("model", "field required"))?;
    let max_tokens = probe
        .max_tokens
        .ok_or_else(|| ProxyError::field("max_tokens", "field required"))?
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| ProxyError::field("max_tokens", "must be a positive integer"))?;
    Ok(Checked {
        model: model.into_owned(),
        max_tokens,
    })
}

/// A checked request and the price it will be billed at.
pub(super) struct Priced {
    /// The canonical model id from the rate card.
    pub model: String,
    pub max_tokens: u64,
    /// The rate-card version in force when the request started.
    pub version: PriceVersion,
    pub started_at: DateTime<Utc>,
}

/// Parses the body and finds the price in force now for its model.
pub(super) fn parse_and_price(card: &RateCard, body: &[u8]) -> Result<Priced, ProxyError> {
    let checked = check_messages_body(body)?;
    let started_at = Utc::now();
    let model = card.model(&checked.model).ok_or(ProxyError::UnknownModel {
        model: checked.model,
    })?;
    let version = model
        .version_at(started_at)
        .ok_or_else(|| ProxyError::NoPriceInForce {
            model: model.id.clone(),
        })?;
    Ok(Priced {
        model: model.id.clone(),
        max_tokens: checked.max_tokens,
        version: version.clone(),
        started_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn a_messages_body_needs_a_model_and_a_positive_max_tokens() {
        let ok =
            check_messages_body(br#"{"model":"m","max_tokens":5,"stream":true,"x":[1]}"#).unwrap();
        assert_eq!((ok.model.as_str(), ok.max_tokens), ("m", 5));
        for bad in [
            &br#"{"max_tokens":5}"#[..],
            br#"{"model":"m"}"#,
            br#"{"model":"m","max_tokens":0}"#,
            br#"{"model":"m","max_tokens":-3}"#,
            br#"{"model":"m","max_tokens":1.5}"#,
            br#"{"model":"m","max_tokens":5"#,
            br#"[1,2]"#,
            b"",
        ] {
            assert_eq!(
                check_messages_body(bad).unwrap_err().failure().status,
                StatusCode::BAD_REQUEST
            );
        }
    }
}
