//! The request probe on any bytes: it never panics, and whenever it accepts a body that
//! serde_json also decodes, its media and server-tool counts equal the same counts done on
//! the decoded `serde_json::Value` (`probe::reference`). The hold built from them never
//! panics either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_actors::hold::HoldPolicy;
use tollgate_actors::pricing::RateCard;
use tollgate_actors::probe::{reference, RequestProbe};

fuzz_target!(|data: &[u8]| {
    let watched = ["speed".to_string(), "service_tier".to_string()];
    let Ok(probe) = RequestProbe::read(data, &watched) else {
        return;
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(probe.media, reference::media(&value));
        assert_eq!(probe.server_tools, reference::server_tools(&value));
    }
    let policy = HoldPolicy::default();
    let max_tokens = probe.max_tokens.and_then(|n| n.as_u64()).unwrap_or(0);
    let shape = policy.shape(data.len(), max_tokens, probe.media, &probe.server_tools);
    if let Ok(card) = RateCard::builtin() {
        if let Some(model) = card.models().next() {
            for version in &model.versions {
                let _ = policy.initial_hold(version, &shape);
            }
        }
    }
});
