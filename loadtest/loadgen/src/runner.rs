//! One closed-loop run: `concurrency` clients send back to back to one target for
//! `warmup + duration`; what ends inside the measured window is recorded.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use tokio::time::Instant;

use super::stats::{Outcome, Recorder, RunStats};
use super::target::Target;
use super::workload::Mode;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub target: Target,
    pub mode: Mode,
    pub body: Bytes,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// A request not finished after this long counts as a timeout.
    pub timeout: Duration,
    /// Shown at the start of the progress line, e.g. `round 1/3 stream tollgate`.
    pub label: String,
    pub progress: bool,
}

/// The request, prepared once per run.
struct Prepared {
    url: String,
    headers: HeaderMap,
    body: Bytes,
    stream: bool,
}

impl Prepared {
    fn new(target: &Target, mode: Mode, body: Bytes) -> anyhow::Result<Prepared> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        );
        if let Some(key) = &target.key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_str(key)?,
            );
        }
        Ok(Prepared {
            url: target.messages_url(),
            headers,
            body,
            stream: mode.is_stream(),
        })
    }
}

/// Counters the progress line reads; clients bump them after every request.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    ok: AtomicU64,
}

/// How many trailing bytes of a stream are kept to find its last event.
const TAIL_BYTES: usize = 256;

/// Watches a stream's bytes go by and tells whether its last event was `message_stop`.
#[derive(Debug, Default)]
pub struct StreamEnd {
    tail: Vec<u8>,
}

impl StreamEnd {
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL_BYTES {
            self.tail.clear();
            let last = chunk.get(chunk.len() - TAIL_BYTES..).unwrap_or_default();
            self.tail.extend_from_slice(last);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > TAIL_BYTES {
                let excess = self.tail.len() - TAIL_BYTES;
                self.tail.drain(..excess);
            }
        }
    }

    /// True if the body ended with a complete `message_stop` event.
    pub fn ended_with_message_stop(&self) -> bool {
        let tail = &self.tail;
        if !(tail.ends_with(b"\n\n") || tail.ends_with(b"\r\n\r\n")) {
            return false;
        }
        let needle = b"event:";
        let Some(last_event) = tail.windows(needle.len()).rposition(|w| w == needle) else {
            return false;
        };
        let name = tail.get(last_event + needle.len()..).unwrap_or_default();
        let name = name.strip_prefix(b" ").unwrap_or(name);
        name.strip_prefix(b"message_stop")
            .is_some_and(|rest| rest.starts_with(b"\n") || rest.starts_with(b"\r"))
    }
}

/// Sends one request and reads the whole response.
async fn send_one(client: &reqwest::Client, request: &Prepared) -> Outcome {
    let start = Instant::now();
    let response = client
        .post(&request.url)
        .headers(request.headers.clone())
        .body(request.body.clone())
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(_) => return Outcome::Transport,
    };
    let status = response.status().as_u16();
    let mut ttfb = None;
    let mut end = StreamEnd::default();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if ttfb.is_none() {
                    ttfb = Some(start.elapsed());
                }
                if request.stream {
                    end.push(&chunk);
                }
            }
            Ok(None) => break,
            Err(_) => return Outcome::Incomplete(status),
        }
    }
    let total = start.elapsed();
    if status != 200 {
        return Outcome::Status(status);
    }
    if request.stream && !end.ended_with_message_stop() {
        return Outcome::Incomplete(status);
    }
    Outcome::Success {
        ttfb: ttfb.unwrap_or(total),
        total,
    }
}

/// One client of the closed loop: sends until `end`, recording what ends in `[from, end]`.
async fn client_loop(
    client: reqwest::Client,
    request: Arc<Prepared>,
    progress: Arc<Progress>,
    from: Instant,
    end: Instant,
    timeout: Duration,
) -> Recorder {
    let mut recorder = Recorder::new();
    while Instant::now() < end {
        let outcome = match tokio::time::timeout(timeout, send_one(&client, &request)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout,
        };
        let done = Instant::now();
        if done >= from && done <= end {
            recorder.record(outcome);
        }
        progress.done.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Success { .. }) {
            progress.ok.fetch_add(1, Ordering::Relaxed);
        } else if outcome == Outcome::Transport {
            // A refused connection fails at once; do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    recorder
}

/// Prints the progress line until aborted: in place on a terminal, every 5 s otherwise.
async fn show_progress(
    label: String,
    progress: Arc<Progress>,
    start: Instant,
    warmup: Duration,
    duration: Duration,
) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let mut ticker = tokio::time::interval_at(start + every, every);
    let mut last_done = 0;
    let mut last_at = start;
    loop {
        let now = ticker.tick().await;
        let done = progress.done.load(Ordering::Relaxed);
        let ok = progress.ok.load(Ordering::Relaxed);
        let elapsed = now.duration_since(start);
        let phase = if elapsed < warmup {
            format!(
                "warmup {:.1}/{:.0}s",
                elapsed.as_secs_f64(),
                warmup.as_secs_f64()
            )
        } else {
            format!(
                "measure {:.1}/{:.0}s",
                (elapsed - warmup).as_secs_f64(),
                duration.as_secs_f64()
            )
        };
        let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        let failed = done - ok;
        let line = format!("{label}: {phase}  {done} requests  {rate:.0}/s  {failed} failed");
        let mut stderr = std::io::stderr().lock();
        // A progress line that cannot be written is not worth failing the run for.
        let _ = if tty {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
        last_done = done;
        last_at = now;
    }
}

/// Runs `spec` and returns what the measured window saw.
pub async fn run(client: &reqwest::Client, spec: &RunSpec) -> anyhow::Result<RunStats> {
    let request = Arc::new(Prepared::new(&spec.target, spec.mode, spec.body.clone())?);
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let from = start + spec.warmup;
    let end = from + spec.duration;

    let reporter = spec.progress.then(|| {
        tokio::spawn(show_progress(
            spec.label.clone(),
            Arc::clone(&progress),
            start,
            spec.warmup,
            spec.duration,
        ))
    });
    let clients: Vec<_> = (0..spec.concurrency.max(1))
        .map(|_| {
            tokio::spawn(client_loop(
                client.clone(),
                Arc::clone(&request),
                Arc::clone(&progress),
                from,
                end,
                spec.timeout,
            ))
        })
        .collect();

    let mut recorder = Recorder::new();
    for client in clients {
        recorder.merge(&client.await?)?;
    }
    if let Some(reporter) = reporter {
        reporter.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
    Ok(recorder.stats(spec.duration))
}

/// Sends one request and describes what came back, for a check before measuring.
pub async fn probe(
    client: &reqwest::Client,
    target: &Target,
    mode: Mode,
    body: Bytes,
) -> anyhow::Result<()> {
    let request = Prepared::new(target, mode, body)?;
    let response = client
        .post(&request.url)
        .headers(request.headers.clone())
        .body(request.body.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{} ({mode}): {e}", target.name))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("{} ({mode}): reading the body: {e}", target.name))?;
    let mut end = StreamEnd::default();
    end.push(&body);
    if !status.is_success() || (mode.is_stream() && !end.ended_with_message_stop()) {
        let shown = body.get(..500).unwrap_or(&body);
        let text = String::from_utf8_lossy(shown).into_owned();
        anyhow::bail!("{} ({mode}) answered {status}: {text}", target.name);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STREAM_END: &[u8] = b"event: message_delta\ndata: {\"type\":\"message_delta\"}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn finds_message_stop_across_chunks() {
        for split in 0..STREAM_END.len() {
            let mut end = StreamEnd::default();
            end.push(&[b'x'; 1000]);
            end.push(&STREAM_END[..split]);
            end.push(&STREAM_END[split..]);
            assert!(end.ended_with_message_stop(), "split at {split}");
        }
    }

    #[test]
    fn refuses_cut_or_errored_streams() {
        let mut cut = StreamEnd::default();
        cut.push(&STREAM_END[..STREAM_END.len() - 3]);
        assert!(!cut.ended_with_message_stop());

        let mut errored = StreamEnd::default();
        errored.push(STREAM_END);
        errored.push(b"event: error\ndata: {\"type\":\"error\"}\n\n");
        assert!(!errored.ended_with_message_stop());

        assert!(!StreamEnd::default().ended_with_message_stop());
    }
}
