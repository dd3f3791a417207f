//! A small SMTP server on loopback that accepts every message and keeps it, so that a test
//! can read the email tollgate sent: the greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA up to
//! the lone dot, RSET, NOOP and QUIT.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as received: the envelope's recipients and the DATA text, dot-unstuffed.
#[derive(Debug, Clone)]
pub struct Received {
    pub recipients: Vec<String>,
    pub data: String,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, kept.clone()));
            }
        });
        SmtpSink { port, messages }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Waits for a message to `recipient` and returns it.
    pub async fn wait_for(&self, recipient: &str) -> Received {
        for _ in 0..400 {
            let found = self
                .messages
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.recipients.iter().any(|r| r.contains(recipient)))
                .cloned();
            if let Some(message) = found {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no email reached {recipient}");
    }

    /// The last message received.
    pub fn last(&self) -> Received {
        self.messages
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a message")
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

impl Received {
    /// The body as text: base64 and quoted-printable soft breaks undone, enough to read a
    /// link (whose characters are all ASCII).
    pub fn text(&self) -> String {
        let (head, body) = self.data.split_once("\n\n").unwrap_or(("", &self.data));
        if head
            .to_ascii_lowercase()
            .contains("content-transfer-encoding: base64")
        {
            String::from_utf8_lossy(&decode_base64(body)).into_owned()
        } else {
            body.replace("=\n", "").replace("=3D", "=")
        }
    }

    /// The token of the first link to `path` (`/verify-email`) in the message.
    pub fn token_of(&self, path: &str) -> String {
        let text = self.text();
        let marker = format!("{path}?token=");
        let start = text.find(&marker).expect("the link") + marker.len();
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }
}

async fn session(socket: tokio::net::TcpStream, messages: Arc<Mutex<Vec<Received>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let mut recipients = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
            b"250 sink\r\n"
        } else if verb.starts_with("MAIL FROM") || verb.starts_with("RSET") {
            recipients.clear();
            b"250 OK\r\n"
        } else if verb.starts_with("RCPT TO") {
            recipients.push(line.trim_end()[8..].trim().to_string());
            b"250 OK\r\n"
        } else if verb == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let text = line.trim_end_matches(['\r', '\n']);
                if text == "." {
                    break;
                }
                data.push_str(text.strip_prefix('.').unwrap_or(text));
                data.push('\n');
            }
            messages.lock().unwrap().push(Received {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            b"250 OK queued\r\n"
        } else if verb == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if verb == "NOOP" {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let Some(value) = ALPHABET.iter().position(|&a| a == byte) else {
            continue;
        };
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}
