//! Parsing and pricing a Messages request: the step between reading its body (`body`) and
//! taking its hold.

use actix_web::http::header::HeaderMap;
use chrono::{DateTime, Utc};
use tollgate_actors::pricing::{PriceVersion, RateCard};
use tollgate_actors::probe::{MediaCount, OptionValue, RequestProbe, ServerTool};

use crate::config::{PriceAction, PriceOption};
use crate::http::error::ProxyError;

/// Parsed and checked: what the hold and the relay need to know.
#[derive(Debug)]
pub(super) struct Checked {
    pub model: String,
    pub max_tokens: u64,
    pub media: MediaCount,
    pub server_tools: Vec<ServerTool>,
}

/// Reads the body once ([`RequestProbe`]): `model`, a positive integer `max_tokens`, the
/// media and server tools the hold allows for, and the watched price options, which must
/// not be refused ones.
pub(super) fn check_messages_body(
    body: &[u8],
    options: &PriceOptions,
) -> Result<Checked, ProxyError> {
    let probe = RequestProbe::read(body, &options.body_fields)
        .map_err(|error| ProxyError::bad_request(format!("invalid request body: {error}")))?;
    options.check_body(&probe.options)?;
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
        media: probe.media,
        server_tools: probe.server_tools,
    })
}

/// The refused price options of `metering.price_options`, in the shape the request path
/// checks them: priced ones pass, so only refusals are kept.
#[derive(Debug, Default, Clone)]
pub struct PriceOptions {
    /// `anthropic-beta` flags that are refused.
    betas: Vec<String>,
    /// Top-level body fields the probe captures, for `refused_fields`.
    body_fields: Vec<String>,
    /// (field, value or any) pairs that are refused.
    refused_fields: Vec<(String, Option<String>)>,
}

impl PriceOptions {
    pub fn new(options: &[PriceOption]) -> PriceOptions {
        let mut refused = PriceOptions::default();
        for option in options.iter().filter(|o| o.action == PriceAction::Refused) {
            if let Some(beta) = &option.beta {
                refused.betas.push(beta.clone());
            }
            if let Some(field) = &option.body {
                if !refused.body_fields.contains(field) {
                    refused.body_fields.push(field.clone());
                }
                refused
                    .refused_fields
                    .push((field.clone(), option.value.clone()));
            }
        }
        refused
    }

    /// Refuses a request whose `anthropic-beta` header names a refused flag. Cheap when no
    /// flag is refused or the request sends none.
    pub(super) fn check_headers(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        if self.betas.is_empty() {
            return Ok(());
        }
        for flag in sent_betas(headers) {
            if self
                .betas
                .iter()
                .any(|refused| refused.eq_ignore_ascii_case(flag))
            {
                return Err(refused_option(format!("the anthropic-beta flag `{flag}`")));
            }
        }
        Ok(())
    }

    fn check_body(&self, present: &[(String, OptionValue)]) -> Result<(), ProxyError> {
        for (field, value) in present {
            let refused = self.refused_fields.iter().any(|(name, wanted)| {
                name == field
                    && match (wanted, value) {
                        (None, _) => true,
                        (Some(wanted), OptionValue::Text(text)) => wanted == text,
                        (Some(_), OptionValue::Other) => false,
                    }
            });
            if refused {
                let shown = match value {
                    OptionValue::Text(text) => format!("`{field}: {text}`"),
                    OptionValue::Other => format!("`{field}`"),
                };
                return Err(refused_option(format!("the option {shown}")));
            }
        }
        Ok(())
    }
}

/// Every flag of the request's `anthropic-beta` headers (comma-separated lists), trimmed.
fn sent_betas(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all("anthropic-beta")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
}

fn refused_option(what: String) -> ProxyError {
    ProxyError::bad_request(format!(
        "{what} changes the price of a request, and this service does not sell it; send the request without it"
    ))
}

/// A checked request and the price it will be billed at.
pub(super) struct Priced {
    /// The canonical model id from the rate card.
    pub model: String,
    pub max_tokens: u64,
    /// The rate-card version in force when the request started.
    pub version: PriceVersion,
    pub started_at: DateTime<Utc>,
    pub media: MediaCount,
    pub server_tools: Vec<ServerTool>,
}

/// Parses the body and finds the price in force now for its model, as it applies to a request
/// with the `anthropic-beta` flags of `headers` (a long-prompt tier that requires a beta the
/// request did not send is left out: [`PriceVersion::for_betas`]).
pub(super) fn parse_and_price(
    card: &RateCard,
    options: &PriceOptions,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Priced, ProxyError> {
    let checked = check_messages_body(body, options)?;
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
        version: version.for_betas(sent_betas(headers)),
        started_at,
        media: checked.media,
        server_tools: checked.server_tools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use actix_web::http::StatusCode;

    fn betas(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-beta"),
            HeaderValue::from_static(value),
        );
        headers
    }

    #[test]
    fn a_refused_beta_is_refused_in_any_case_among_others() {
        let options = PriceOptions::new(&crate::config::default_price_options());
        let refused = betas("interleaved-thinking-2025-05-14, Fast-Mode-2026-02-01");
        assert!(options.check_headers(&refused).is_err());
        let priced = betas("context-1m-2025-08-07,interleaved-thinking-2025-05-14");
        assert!(options.check_headers(&priced).is_ok());
    }

    #[test]
    fn the_long_tier_that_requires_a_beta_is_kept_only_when_it_was_sent() {
        let card = RateCard::builtin().unwrap();
        let none = PriceOptions::default();
        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":5}"#;
        let without = parse_and_price(&card, &none, &betas("other"), body).unwrap();
        assert_eq!(without.version.long_prompt, None);
        let with = parse_and_price(&card, &none, &betas("other, CONTEXT-1M-2025-08-07"), body);
        assert!(with.unwrap().version.long_prompt.is_some());
        let haiku = br#"{"model":"claude-haiku-5-5","max_tokens":5}"#;
        let tier = parse_and_price(&card, &none, &HeaderMap::new(), haiku).unwrap();
        assert!(tier.version.long_prompt.is_some());
    }

    #[test]
    fn a_messages_body_needs_a_model_and_a_positive_max_tokens() {
        let none = PriceOptions::default();
        let ok = check_messages_body(
            br#"{"model":"m","max_tokens":5,"stream":true,"x":[1]}"#,
            &none,
        )
        .unwrap();
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
                check_messages_body(bad, &none)
                    .unwrap_err()
                    .failure()
                    .status,
                StatusCode::BAD_REQUEST
            );
        }
    }
}
