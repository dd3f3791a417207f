//! What the clients send: one Messages request body, built once and reused for every request.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;

/// Whether requests ask for a streamed (SSE) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    NonStream,
    Stream,
}

impl Mode {
    pub fn is_stream(self) -> bool {
        self == Mode::Stream
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::NonStream => "non-stream",
            Mode::Stream => "stream",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request every client sends, apart from the `stream` flag, which the [`Mode`] sets.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub model: String,
    pub max_tokens: u64,
    /// The user message is padded to roughly this many bytes (0: a one-line prompt).
    pub prompt_bytes: usize,
}

/// Filler that pads the prompt: plain words, so that a JSON encoder has nothing to escape.
const FILLER: &str = "the quick brown fox jumps over the lazy dog while the meter keeps count ";
const OPENING: &str = "Benchmark request: reply with anything. ";

impl Workload {
    /// The user message: an opening line padded with filler to about `prompt_bytes` bytes.
    pub fn prompt(&self) -> String {
        let mut text = String::with_capacity(self.prompt_bytes.max(OPENING.len()));
        text.push_str(OPENING);
        while text.len() < self.prompt_bytes {
            let missing = self.prompt_bytes - text.len();
            // FILLER is ASCII, so any prefix of it is a valid string.
            text.push_str(&FILLER[..missing.min(FILLER.len())]);
        }
        text
    }

    /// The JSON body of one request.
    pub fn body(&self, mode: Mode) -> Bytes {
        let body = serde_json::json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": mode.is_stream(),
            "messages": [{"role": "user", "content": self.prompt()}],
        });
        Bytes::from(body.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pads_the_prompt() {
        let w = Workload {
            model: "m".into(),
            max_tokens: 16,
            prompt_bytes: 1000,
        };
        assert_eq!(w.prompt().len(), 1000);
        let small = Workload {
            prompt_bytes: 0,
            ..w.clone()
        };
        assert_eq!(small.prompt(), OPENING);
        let body: serde_json::Value = serde_json::from_slice(&w.body(Mode::Stream)).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 16);
        assert!(w.body(Mode::NonStream).len() > 1000);
    }
}
