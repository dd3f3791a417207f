//! Faults on the wire between tollgate and Postgres: a loopback TCP relay that, once armed,
//! either
//! - lets the next idempotent balance change reach Postgres and commit, then cuts the
//!   connection before Postgres's answer gets back: tollgate sees what it sees when a network
//!   drops just after COMMIT, an error with the change stored ([`PgRelay::lose_next_claim`]);
//! - or hangs at a statement: from it on, every connection, open or new, is accepted and kept
//!   open and nothing more passes either way, as with a Postgres that accepts TCP but never
//!   answers ([`PgRelay::hang_at`]);
//! - or goes down: every connection is cut and new ones are closed at once, as with a
//!   Postgres that stopped, until it comes back up ([`PgRelay::go_down`]).

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
    /// Down: connections are closed as they come.
    down: AtomicBool,
    /// Fired when the relay goes down: every open connection is cut.
    outage: tokio::sync::Notify,
}

impl Faults {
    /// Whether the latest read on its way to Postgres holds the statement the relay hangs at;
    /// if so, it hangs now. A statement split across two reads is found in the second, whose
    /// part is then swallowed: Postgres, holding half a message, answers nothing either.
    fn hangs_at(&self, sent: &Sent) -> bool {
        let mut hang_at = self.hang_at.lock().unwrap();
        let found = hang_at.is_some_and(|text| sent.holds(text));
        if found {
            *hang_at = None;
            self.hung.store(true, Ordering::SeqCst);
        }
        found
    }
}

/// At most this much of a read is kept for the next: more than any statement text looked for.
const CARRIED: usize = 1024;

/// What a connection sent towards Postgres in its latest read, behind the end of the read
/// before it, so that a statement text that a read boundary splits is still found.
#[derive(Default)]
struct Sent {
    bytes: Vec<u8>,
    /// How many of `bytes` came before the latest read.
    carried: usize,
}

impl Sent {
    fn read(&mut self, chunk: &[u8]) {
        let carried = self.bytes.len().min(CARRIED);
        self.bytes.drain(..self.bytes.len() - carried);
        self.carried = carried;
        self.bytes.extend_from_slice(chunk);
    }

    /// Whether `text` ends in the latest read (it may begin in the one before). One that
    /// ended in the read before was found then, and is not found again.
    fn holds(&self, text: &[u8]) -> bool {
        assert!(!text.is_empty() && text.len() <= CARRIED, "{text:?}");
        let from = self.carried.saturating_sub(text.len() - 1);
        self.bytes[from..].windows(text.len()).any(|w| w == text)
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
                if shared.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
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

    /// Postgres is gone: every open connection is cut, and new ones are closed at once.
    pub fn go_down(&self) {
        self.faults.down.store(true, Ordering::SeqCst);
        self.faults.outage.notify_waiters();
    }

    /// Postgres is back: connections pass again.
    pub fn come_up(&self) {
        self.faults.down.store(false, Ordering::SeqCst);
    }

    /// Whether the relay has hung.
    pub fn has_hung(&self) -> bool {
        self.faults.hung.load(Ordering::SeqCst)
    }
}

/// Ends when the relay goes down (at once if it is down already).
async fn faults_outage(faults: &Faults) {
    let notified = faults.outage.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if !faults.down.load(Ordering::SeqCst) {
        notified.await;
    }
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let faults_for_outage = faults.clone();
    let state = Arc::new(AtomicU8::new(PASSING));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = {
        let state = state.clone();
        let faults = faults.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = Sent::default();
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                sent.read(chunk);
                // Read and dropped: the socket stays open, and its closing is still seen.
                if faults.hung.load(Ordering::SeqCst) || faults.hangs_at(&sent) {
                    continue;
                }
                match state.load(Ordering::SeqCst) {
                    PASSING if sent.holds(CLAIM) && faults.armed.swap(false, Ordering::SeqCst) => {
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
    // Either direction ending ends the relay, and so does an outage: both sockets close.
    let outage = faults_outage(&faults_for_outage);
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
        () = outage => {}
    }
}

#[test]
fn a_statement_split_across_two_reads_hangs_the_relay_at_the_second_and_only_once() {
    let statement: &'static [u8] = b"UPDATE accounts SET balance = balance + $2 WHERE id = $1";
    let faults = Faults::default();
    *faults.hang_at.lock().unwrap() = Some(statement);
    let (head, rest) = statement.split_at(20);
    let mut sent = Sent::default();
    sent.read(&[b"P\0\0\0\x40".as_slice(), head].concat());
    assert!(!faults.hangs_at(&sent));
    sent.read(&[rest, b"\0\0\0D"].concat());
    assert!(faults.hangs_at(&sent), "the split statement was not found");
    assert!(faults.hung.load(Ordering::SeqCst));
    // Still in what is carried over, but found already.
    sent.read(b"S\0\0\0\x04");
    assert!(!sent.holds(statement));
}
