//! A fault on the wire between tollgate and Postgres: a loopback TCP relay that, once armed,
//! lets the next idempotent balance change reach Postgres and commit, then cuts the
//! connection before Postgres's answer gets back. tollgate sees what it sees when a network
//! drops just after COMMIT: an error, with the change stored.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

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

pub struct LoseCommitProxy {
    /// `127.0.0.1:port` of the relay.
    pub addr: String,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl LoseCommitProxy {
    /// Relays to the Postgres at `target` (`host:port`).
    pub async fn start(target: &str) -> LoseCommitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let target = target.to_string();
        let (armed_, cuts_) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed_.clone(), cuts_.clone()));
            }
        });
        LoseCommitProxy { addr, armed, cuts }
    }

    /// The next idempotent balance change commits and its answer is lost.
    pub fn lose_next_claim(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many answers were lost.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let state = Arc::new(AtomicU8::new(PASSING));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = {
        let state = state.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                match state.load(Ordering::SeqCst) {
                    PASSING
                        if chunk.windows(CLAIM.len()).any(|w| w == CLAIM)
                            && armed.swap(false, Ordering::SeqCst) =>
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
            if state.load(Ordering::SeqCst) == CUTTING {
                swallowed.extend_from_slice(chunk);
                if swallowed.windows(READY.len()).any(|w| w == READY) {
                    // Committed; the client never hears of it.
                    cuts.fetch_add(1, Ordering::SeqCst);
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
