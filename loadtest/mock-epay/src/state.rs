//! What the handlers share: the merchant, the knobs, the orders and the notify client.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{Config, Knobs, KnobsPatch};
use crate::orders::Orders;

/// Each notify attempt gives up after this long.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Shared {
    pub pid: String,
    pub key: String,
    /// Without a trailing slash.
    pub public_url: String,
    knobs: Mutex<Knobs>,
    pub orders: Orders,
    pub http: reqwest::Client,
}

impl Shared {
    pub fn new(config: Config, public_url: String) -> anyhow::Result<Shared> {
        let http = reqwest::Client::builder()
            .timeout(NOTIFY_TIMEOUT)
            // A gateway posts to the merchant directly: never through the environment's
            // proxy (tests notify loopback receivers), and a redirect is not an answer.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the notify HTTP client")?;
        Ok(Shared {
            pid: config.pid,
            key: config.key,
            public_url: public_url.trim_end_matches('/').to_owned(),
            knobs: Mutex::new(config.knobs),
            orders: Orders::default(),
            http,
        })
    }

    fn knobs_lock(&self) -> MutexGuard<'_, Knobs> {
        self.knobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs_lock().clone()
    }

    pub fn set_knobs(&self, knobs: Knobs) -> Result<(), String> {
        knobs.validate()?;
        *self.knobs_lock() = knobs;
        Ok(())
    }

    /// Applies `patch` atomically; the knobs are unchanged when the result would be invalid.
    pub fn patch_knobs(&self, patch: &KnobsPatch) -> Result<Knobs, String> {
        let mut knobs = self.knobs_lock();
        let patched = knobs.patched(patch);
        patched.validate()?;
        *knobs = patched.clone();
        Ok(patched)
    }
}
