//! Where account actors run: the threads that host them, and which one a new actor starts on.

use actix::prelude::*;

use super::{Engine, EngineError};
use crate::account::AccountId;

/// Where account actors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorPlacement {
    /// On the threads that registered with [`Engine::host_actors_here`] (the HTTP workers),
    /// spread by account id. A request served by its account's own worker reaches the actor
    /// without waking another thread. Until a thread registers, actors start on one
    /// dedicated arbiter.
    Workers,
    /// On this many threads of their own, spread by account id.
    Dedicated(usize),
}

impl ActorPlacement {
    /// How many threads of its own the engine starts for this placement: at least one, the
    /// fallback of [`ActorPlacement::Workers`] before any worker registered.
    pub(super) fn own_arbiters(self) -> usize {
        match self {
            ActorPlacement::Workers => 1,
            ActorPlacement::Dedicated(n) => n.max(1),
        }
    }
}

impl Engine {
    /// Offers the current thread's arbiter (an HTTP worker's) to host account actors. Does
    /// nothing unless the placement is [`ActorPlacement::Workers`]. Actors already running
    /// stay where they are; the placement only decides where new ones start.
    pub fn host_actors_here(&self) {
        if self.inner.config.placement != ActorPlacement::Workers {
            return;
        }
        let mut hosts = match self.inner.hosts.write() {
            Ok(hosts) => hosts,
            Err(poisoned) => poisoned.into_inner(),
        };
        hosts.push(Arbiter::current());
    }

    /// The arbiter a new actor for `id` starts on. A host whose thread has stopped (it no
    /// longer accepts work) is forgotten rather than given actors that would never run.
    ///
    /// Fails only if the engine has no thread of its own, which [`Engine::start`] rules out
    /// (it starts at least one).
    pub(super) fn home_of(&self, id: AccountId) -> Result<ArbiterHandle, EngineError> {
        let mut hosts = match self.inner.hosts.write() {
            Ok(hosts) => hosts,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((index, host)) = spread(id, &hosts) {
            // An empty task is the probe: the arbiter of a stopped thread refuses it.
            if host.spawn(async {}) {
                return Ok(host.clone());
            }
            tracing::warn!("an HTTP worker that hosted account actors has stopped");
            hosts.swap_remove(index);
        }
        spread(id, &self.inner.own_arbiters)
            .map(|(_, own)| own.handle())
            .ok_or(EngineError::Stopped)
    }
}

/// The item of `items` that `id` maps to, and its index; `None` only when there are none.
fn spread<T>(id: AccountId, items: &[T]) -> Option<(usize, &T)> {
    // UUIDv7 ids start with a timestamp; the low bits are random, so they spread evenly.
    let low_bits = id.as_u128() as u64;
    let index = low_bits.checked_rem(items.len() as u64)? as usize;
    items.get(index).map(|item| (index, item))
}
