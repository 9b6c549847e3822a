//! A TCP proxy between a service and Postgres or Redis, to take the backend
//! away and bring it back: while down, live connections are cut and new
//! ones are closed at once, as when the server is restarting. A Postgres
//! proxy also counts the round trips and transactions passing through it
//! (the benchmarks' `trips`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy.
pub struct TcpProxy {
    /// Local port clients connect to.
    pub port: u16,
    up: Arc<watch::Sender<bool>>,
    counts: Option<Arc<Counts>>,
}

/// Postgres traffic through a proxy since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PostgresTraffic {
    /// Requests answered with a `ReadyForQuery`: one per `Sync` or simple
    /// query, the client waiting for each.
    pub round_trips: u64,
    /// Transactions ended: `BEGIN … COMMIT/ROLLBACK` blocks and statements
    /// run outside one.
    pub transactions: u64,
}

#[derive(Debug, Default)]
struct Counts {
    round_trips: AtomicU64,
    transactions: AtomicU64,
}

impl TcpProxy {
    /// Proxies a local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::listen(upstream, None).await
    }

    /// Proxies a local port to Postgres at `upstream`, counting its
    /// traffic. Clients must not ask for TLS (`sslmode=disable`): the
    /// messages are read as they pass.
    pub async fn postgres(upstream: SocketAddr) -> Self {
        Self::listen(upstream, Some(Arc::default())).await
    }

    async fn listen(upstream: SocketAddr, counts: Option<Arc<Counts>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        let counting = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(pipe(client, upstream, state.subscribe(), counting.clone()));
            }
        });
        Self { port, up, counts }
    }

    /// Takes the backend away (`false`) or brings it back (`true`).
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// The Postgres traffic so far (zero for a proxy made with [`Self::start`]).
    pub fn traffic(&self) -> PostgresTraffic {
        self.counts
            .as_ref()
            .map_or_else(PostgresTraffic::default, |c| PostgresTraffic {
                round_trips: c.round_trips.load(Ordering::Relaxed),
                transactions: c.transactions.load(Ordering::Relaxed),
            })
    }
}

async fn pipe(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut up: watch::Receiver<bool>,
    counts: Option<Arc<Counts>>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    match counts {
        None => {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = up.wait_for(|up| !*up) => {}
            }
        }
        Some(counts) => {
            let (mut from_client, mut to_client) = client.split();
            let (mut from_server, mut to_server) = server.split();
            let answers = async {
                let mut reader = BackendReader::default();
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = from_server.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    reader.read(&buf[..n], &counts);
                    to_client.write_all(&buf[..n]).await?;
                }
            };
            tokio::select! {
                _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
                _ = answers => {}
                _ = up.wait_for(|up| !*up) => {}
            }
        }
    }
}

/// Follows the backend's messages (a type byte, a length counting itself,
/// the body) across reads. Each `ReadyForQuery` ends a round trip; one
/// that reports idle ends a transaction when the one before reported a
/// transaction, or when a command completed since (a statement outside
/// one; a bare `Sync`, as a pool's ping, completes none).
#[derive(Debug)]
struct BackendReader {
    header: [u8; 5],
    have: usize,
    left: usize,
    want_status: bool,
    last_status: u8,
    completed: bool,
}

impl Default for BackendReader {
    fn default() -> Self {
        Self {
            header: [0; 5],
            have: 0,
            left: 0,
            want_status: false,
            last_status: b'I',
            completed: false,
        }
    }
}

impl BackendReader {
    fn read(&mut self, mut bytes: &[u8], counts: &Counts) {
        while !bytes.is_empty() {
            if self.want_status {
                self.want_status = false;
                self.ready(bytes[0], counts);
            } else if self.left == 0 {
                let take = (5 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 5 {
                    self.have = 0;
                    let [kind, length @ ..] = self.header;
                    self.left = (u32::from_be_bytes(length) as usize).saturating_sub(4);
                    match kind {
                        b'C' => self.completed = true,
                        b'Z' => self.want_status = self.left > 0,
                        _ => {}
                    }
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            self.left -= take;
            bytes = &bytes[take..];
        }
    }

    fn ready(&mut self, status: u8, counts: &Counts) {
        counts.round_trips.fetch_add(1, Ordering::Relaxed);
        if status == b'I' && (self.last_status != b'I' || self.completed) {
            counts.transactions.fetch_add(1, Ordering::Relaxed);
        }
        self.last_status = status;
        self.completed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn a_transaction_a_statement_outside_one_and_a_ping_are_told_apart_however_split() {
        let stream: Vec<u8> = [
            // BEGIN; SET LOCAL …
            message(b'C', b"BEGIN\0"),
            message(b'C', b"SET\0"),
            message(b'Z', b"T"),
            // a statement in it
            message(b'1', b""),
            message(b'2', b""),
            message(b'D', b"\0\x01\0\0\0\x01x"),
            message(b'C', b"SELECT 1\0"),
            message(b'Z', b"T"),
            // COMMIT
            message(b'C', b"COMMIT\0"),
            message(b'Z', b"I"),
            // a statement outside a transaction
            message(b'C', b"UPDATE 1\0"),
            message(b'Z', b"I"),
            // a ping
            message(b'Z', b"I"),
        ]
        .concat();
        for chunk in [1, 2, 3, 7, stream.len()] {
            let counts = Counts::default();
            let mut reader = BackendReader::default();
            for part in stream.chunks(chunk) {
                reader.read(part, &counts);
            }
            assert_eq!(
                counts.round_trips.load(Ordering::Relaxed),
                5,
                "chunk {chunk}"
            );
            assert_eq!(
                counts.transactions.load(Ordering::Relaxed),
                2,
                "chunk {chunk}"
            );
        }
    }
}
