//! The traffic mix: what each request asks for (stream or not, model, prompt size) and whether
//! the client drops it mid-stream, drawn from a seeded generator.

use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;

use super::scenario::Traffic;

/// One request's draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSpec {
    pub stream: bool,
    /// Index into the scenario's models.
    pub model: usize,
    pub prompt_bytes: usize,
    /// Drop the response after this many body chunks (streams only).
    pub disconnect_after: Option<u32>,
}

/// Filler that pads prompts: plain words, so that nothing needs JSON escaping.
const FILLER: &str = "the quick brown fox jumps over the lazy dog while the meter keeps count ";

/// Draws requests and renders their bodies.
#[derive(Debug, Clone)]
pub struct Mix {
    traffic: Traffic,
    /// Cumulative model weights, normalised to end at 1.
    cumulative: Vec<f64>,
    /// JSON-encoded model names.
    model_json: Vec<String>,
    /// `prompt_bytes.max` bytes of filler, sliced for each prompt.
    filler: Arc<str>,
}

impl Mix {
    pub fn new(traffic: &Traffic) -> Mix {
        let total: f64 = traffic.models.iter().map(|m| m.weight).sum();
        let mut acc = 0.0;
        let cumulative = traffic
            .models
            .iter()
            .map(|m| {
                acc += m.weight / total;
                acc
            })
            .collect();
        let model_json = traffic
            .models
            .iter()
            .map(|m| serde_json::Value::String(m.name.clone()).to_string())
            .collect();
        let max = traffic.prompt_bytes.max;
        let filler: String = FILLER.chars().cycle().take(max).collect();
        Mix {
            traffic: traffic.clone(),
            cumulative,
            model_json,
            filler: Arc::from(filler),
        }
    }

    pub fn model_name(&self, index: usize) -> &str {
        self.traffic
            .models
            .get(index)
            .map_or("", |m| m.name.as_str())
    }

    /// Draws one request.
    pub fn draw(&self, rng: &mut StdRng) -> RequestSpec {
        // Streams are the first `stream_share` of [0, 1), drops the first `disconnect_share`.
        let u: f64 = rng.gen();
        let stream = u < self.traffic.stream_share;
        let disconnect = u < self.traffic.disconnect_share;
        let pick: f64 = rng.gen();
        let model = self
            .cumulative
            .iter()
            .position(|c| pick < *c)
            .unwrap_or(self.cumulative.len().saturating_sub(1));
        let range = self.traffic.prompt_bytes;
        let prompt_bytes = rng.gen_range(range.min..=range.max);
        RequestSpec {
            stream,
            model,
            prompt_bytes,
            disconnect_after: (stream && disconnect)
                .then_some(self.traffic.disconnect_after_chunks.max(1)),
        }
    }

    /// The `max_tokens` every request asks for.
    pub fn max_tokens(&self) -> u64 {
        self.traffic.max_tokens
    }

    /// The JSON body of `spec`. `nonce` goes into `metadata.user_id`, so that every request
    /// body differs and meets its own seeded fate in the mock.
    pub fn body(&self, spec: &RequestSpec, nonce: &str) -> Bytes {
        let prompt = &self.filler[..spec.prompt_bytes.min(self.filler.len())];
        let model = self
            .model_json
            .get(spec.model)
            .map_or("\"\"", String::as_str);
        let mut out = String::with_capacity(prompt.len() + 160);
        out.push_str("{\"model\":");
        out.push_str(model);
        out.push_str(",\"max_tokens\":");
        out.push_str(&self.traffic.max_tokens.to_string());
        out.push_str(",\"stream\":");
        out.push_str(if spec.stream { "true" } else { "false" });
        out.push_str(",\"messages\":[{\"role\":\"user\",\"content\":\"");
        out.push_str(prompt);
        out.push_str("\"}],\"metadata\":{\"user_id\":");
        out.push_str(&serde_json::Value::String(nonce.to_string()).to_string());
        out.push_str("}}");
        Bytes::from(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::scenario::{ByteRange, ModelWeight};
    use rand::SeedableRng;

    fn traffic() -> Traffic {
        Traffic {
            stream_share: 0.6,
            models: vec![
                ModelWeight {
                    name: "a".into(),
                    weight: 3.0,
                },
                ModelWeight {
                    name: "b".into(),
                    weight: 1.0,
                },
            ],
            prompt_bytes: ByteRange { min: 10, max: 500 },
            max_tokens: 32,
            disconnect_share: 0.2,
            disconnect_after_chunks: 2,
        }
    }

    #[test]
    fn draws_follow_the_shares() {
        let mix = Mix::new(&traffic());
        let mut rng = StdRng::seed_from_u64(5);
        let draws: Vec<_> = (0..20_000).map(|_| mix.draw(&mut rng)).collect();
        let share = |f: &dyn Fn(&RequestSpec) -> bool| {
            draws.iter().filter(|d| f(d)).count() as f64 / draws.len() as f64
        };
        assert!((share(&|d| d.stream) - 0.6).abs() < 0.02);
        assert!((share(&|d| d.disconnect_after.is_some()) - 0.2).abs() < 0.02);
        assert!((share(&|d| d.model == 0) - 0.75).abs() < 0.02);
        assert!(draws
            .iter()
            .all(|d| d.disconnect_after.is_none() || d.stream));
        assert!(draws.iter().all(|d| (10..=500).contains(&d.prompt_bytes)));
        let mut again = StdRng::seed_from_u64(5);
        assert_eq!(mix.draw(&mut again), draws[0]);
    }

    #[test]
    fn bodies_are_valid_json_of_the_asked_size() {
        let mix = Mix::new(&traffic());
        let spec = RequestSpec {
            stream: true,
            model: 1,
            prompt_bytes: 321,
            disconnect_after: None,
        };
        let body: serde_json::Value = serde_json::from_slice(&mix.body(&spec, "n-1")).unwrap();
        assert_eq!(body["metadata"]["user_id"], "n-1");
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["messages"][0]["content"].as_str().unwrap().len(), 321);
    }
}
