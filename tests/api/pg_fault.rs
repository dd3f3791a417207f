//! Faults on the wire between tollgate and Postgres: a loopback TCP relay that, once armed,
//! either
//! - lets the next idempotent balance change reach Postgres and commit, then cuts the
//!   connection before Postgres's answer gets back: tollgate sees what it sees when a network
//!   drops just after COMMIT, an error with the change stored ([`PgRelay::lose_next_claim`]);
//! - or hangs at a statement: from it on, every connection, open or new, is accepted and kept
//!   open and nothing more passes either way, as with a Postgres that accepts TCP but never
//!   answers ([`PgRelay::hang_at`]).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The claiming statement's text, as it travels in the Parse message that prepares it.
const CLAIM: &[u8] = b"INSERT INTO idempotency_keys";
/// ReadyForQuery: Postgres has finished the statement (and, outside a transaction block,
/// committed it).
const READY: &[u8] = b"Z\x00\x00\x00\x05";

/// A connection's progress towards the cut.
const PASSING: u8 = 0;
/// The claim was prepared; its execution is the next thing the client sends.
const PREPARED: u8 = 1;
/// The claim is executing: Postgres's answer is swallowed and the connection cut.
const CUTTING: u8 = 2;

pub struct PgRelay {
    /// `127.0.0.1:port` of the relay.
    pub addr: String,
    faults: Arc<Faults>,
}

/// What the relay's connections share.
#[derive(Default)]
struct Faults {
    /// The next claim's answer is lost.
    armed: AtomicBool,
    cuts: AtomicUsize,
    /// The statement text whose first sighting hangs the relay.
    hang_at: Mutex<Option<&'static [u8]>>,
    /// Nothing passes any more, on any connection.
    hung: AtomicBool,
}

impl Faults {
    /// Whether `chunk`, on its way to Postgres, is the one the relay hangs at; if so, it
    /// hangs now.
    fn hangs_at(&self, chunk: &[u8]) -> bool {
        let mut hang_at = self.hang_at.lock().unwrap();
        let found = hang_at.is_some_and(|text| chunk.windows(text.len()).any(|w| w == text));
        if found {
            *hang_at = None;
            self.hung.store(true, Ordering::SeqCst);
        }
        found
    }
}

impl PgRelay {
    /// Relays to the Postgres at `target` (`host:port`).
    pub async fn start(target: &str) -> PgRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Faults::default());
        let target = target.to_string();
        let shared = faults.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, shared.clone()));
            }
        });
        PgRelay { addr, faults }
    }

    /// `url` (a database on 127.0.0.1:5432) reached through this relay instead.
    pub fn url_of(&self, url: &str) -> String {
        let relayed = url.replacen("127.0.0.1:5432", &self.addr, 1);
        assert_ne!(relayed, url, "the test Postgres is 127.0.0.1:5432");
        relayed
    }

    /// The next idempotent balance change commits and its answer is lost.
    pub fn lose_next_claim(&self) {
        self.faults.armed.store(true, Ordering::SeqCst);
    }

    /// How many answers were lost.
    pub fn cuts(&self) -> usize {
        self.faults.cuts.load(Ordering::SeqCst)
    }

    /// The first message to Postgres that holds `statement` is swallowed, and from then on
    /// nothing passes: every connection, open or new, stays open and unanswered.
    pub fn hang_at(&self, statement: &'static [u8]) {
        *self.faults.hang_at.lock().unwrap() = Some(statement);
    }

    /// Whether the relay has hung.
    pub fn has_hung(&self) -> bool {
        self.faults.hung.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let state = Arc::new(AtomicU8::new(PASSING));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = {
        let state = state.clone();
        let faults = faults.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                // Read and dropped: the socket stays open, and its closing is still seen.
                if faults.hung.load(Ordering::SeqCst) || faults.hangs_at(chunk) {
                    continue;
                }
                match state.load(Ordering::SeqCst) {
                    PASSING
                        if chunk.windows(CLAIM.len()).any(|w| w == CLAIM)
                            && faults.armed.swap(false, Ordering::SeqCst) =>
                    {
                        state.store(PREPARED, Ordering::SeqCst)
                    }
                    // Set before the execution is sent, so that its answer is swallowed.
                    PREPARED => state.store(CUTTING, Ordering::SeqCst),
                    _ => {}
                }
                if server_write.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let to_client = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut swallowed = Vec::new();
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if faults.hung.load(Ordering::SeqCst) {
                continue;
            }
            if state.load(Ordering::SeqCst) == CUTTING {
                swallowed.extend_from_slice(chunk);
                if swallowed.windows(READY.len()).any(|w| w == READY) {
                    // Committed; the client never hears of it.
                    faults.cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                continue;
            }
            if client_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending ends the relay: both sockets close.
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
    }
}
