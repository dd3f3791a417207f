//! Reading a request body, bounded three ways: in size (`server.max_body_bytes`, 413), in
//! time (`server.body_read_timeout_ms`, 408), and in how many bodies one key may be uploading
//! at once (`server.max_uploads_per_key`, 429). A client that declares a large body and then
//! sends it slowly, or not at all, holds memory and a connection only that long, and one key
//! can hold only so many (docs/adr/0013-check-before-reading.md). The checks that need no
//! byte of the body (the declared size, an upload slot) are a step of their own,
//! [`BodyReader::begin`], so that a handler can put a check between them and the reading.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest};
use bytes::Bytes;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tollgate_actors::limits::{Slot, Slots};
use uuid::Uuid;

use crate::config::ServerSettings;
use crate::http::error::{Limit, ProxyError};

/// When an upload slot frees up is unknown; clients are told to come back after this.
const UPLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Reads request bodies within their limits. Shared by every worker.
pub struct BodyReader {
    limit: usize,
    deadline: Duration,
    per_key: u32,
    /// Uploads in progress, per key id. An entry is a few dozen bytes; one with no upload in
    /// progress is dropped by [`BodyReader::prune_idle`], so they follow the keys uploading
    /// lately, not every key that ever did (nor every key id of a key since revoked).
    uploads: DashMap<Uuid, Arc<Slots>>,
    /// Fired when shutdown's drain bound has passed: a body still arriving is not waited for.
    interrupt: CancellationToken,
}

impl BodyReader {
    pub fn new(settings: &ServerSettings, interrupt: CancellationToken) -> BodyReader {
        BodyReader {
            limit: settings.max_body_bytes,
            deadline: Duration::from_millis(settings.body_read_timeout_ms),
            per_key: settings.max_uploads_per_key,
            uploads: DashMap::new(),
            interrupt,
        }
    }

    /// Reads the whole body of a request authenticated as `key_id`: [`BodyReader::begin`],
    /// then [`Upload::finish`].
    pub async fn read(
        &self,
        key_id: Uuid,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<Bytes, ProxyError> {
        self.begin(key_id, req)?.finish(payload).await
    }

    /// Begins reading the body of a request authenticated as `key_id`, before any byte of it
    /// is read: a body declared larger than the limit is refused (413), and one of the key's
    /// upload slots is taken (429 when none is free) for as long as the [`Upload`] lives.
    pub fn begin(&self, key_id: Uuid, req: &HttpRequest) -> Result<Upload<'_>, ProxyError> {
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.limit) {
            return Err(ProxyError::BodyTooLarge { limit: self.limit });
        }
        Ok(Upload {
            reader: self,
            _slot: self.start_upload(key_id)?,
        })
    }

    /// Takes one of the key's upload slots, for as long as its body is being read. The slot
    /// is taken while the map's entry is locked, so [`BodyReader::prune_idle`] never drops a
    /// count between its lookup and its taking.
    fn start_upload(&self, key_id: Uuid) -> Result<Option<Slot>, ProxyError> {
        if self.per_key == 0 {
            return Ok(None);
        }
        let taken = match self.uploads.get(&key_id) {
            Some(slots) => slots.try_take(),
            None => self
                .uploads
                .entry(key_id)
                .or_insert_with(|| Arc::new(Slots::new(self.per_key)))
                .try_take(),
        };
        taken.map(Some).ok_or(ProxyError::Throttled {
            limit: Limit::UploadsInProgress,
            retry_after: UPLOAD_RETRY_AFTER,
        })
    }

    /// Forgets the keys with no upload in progress (run by the service's prune loop).
    pub fn prune_idle(&self) {
        self.uploads.retain(|_, slots| slots.taken() > 0);
        self.uploads.shrink_to_fit();
    }
}

/// A body whose reading has begun ([`BodyReader::begin`]): it holds one of its key's upload
/// slots until it is read or dropped.
#[must_use = "dropping it gives the upload slot back without reading the body"]
pub struct Upload<'a> {
    reader: &'a BodyReader,
    _slot: Option<Slot>,
}

impl Upload<'_> {
    /// Reads the whole body, within the size limit and the read deadline; a body still
    /// arriving when shutdown's drain bound passes is answered 529.
    pub async fn finish(self, payload: web::Payload) -> Result<Bytes, ProxyError> {
        let (limit, deadline) = (self.reader.limit, self.reader.deadline);
        let read = tokio::time::timeout(deadline, payload.to_bytes_limited(limit));
        // The read first: a body that has already arrived (the usual case) is taken without
        // registering with the timer or the interrupt.
        let read = tokio::select! {
            biased;
            read = read => read,
            () = self.reader.interrupt.cancelled() => return Err(ProxyError::ShuttingDown),
        };
        match read {
            Err(_) => Err(ProxyError::BodyReadTimeout { deadline }),
            Ok(Err(_)) => Err(ProxyError::BodyTooLarge { limit }),
            Ok(Ok(Err(error))) => Err(ProxyError::bad_request(format!(
                "could not read the request body: {error}"
            ))),
            Ok(Ok(Ok(body))) => Ok(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn pruning_forgets_keys_with_no_upload_in_progress_and_keeps_the_others_counted() {
        let settings = ServerSettings {
            max_uploads_per_key: 1,
            ..Settings::default().server
        };
        let bodies = BodyReader::new(&settings, CancellationToken::new());
        let (idle, busy) = (Uuid::now_v7(), Uuid::now_v7());
        drop(bodies.start_upload(idle).unwrap());
        let uploading = bodies.start_upload(busy).unwrap();
        assert_eq!(bodies.uploads.len(), 2);
        bodies.prune_idle();
        assert_eq!(bodies.uploads.len(), 1, "the idle key is forgotten");
        assert!(
            bodies.start_upload(busy).is_err(),
            "the busy key's upload is still counted"
        );
        drop(uploading);
        assert!(bodies.start_upload(busy).unwrap().is_some());
    }
}
