//! A raw HTTP/1.1 upstream for resilience tests: it counts accepted connections exactly (one request
//! per connection, answered with `Connection: close`) and misbehaves on demand, switchable while it
//! runs: close every connection at once, or answer with a status chosen per request index.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

type StatusFn = Arc<dyn Fn(u64) -> u16 + Send + Sync>;

struct Script {
    close_on_accept: bool,
    status: StatusFn,
    delay: Duration,
}

/// See the module docs. Stopped (with its connections) when dropped.
pub struct ScriptedUpstream {
    addr: SocketAddr,
    accepts: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedUpstream")
            .field("addr", &self.addr)
            .field("accepts", &self.accepts())
            .finish_non_exhaustive()
    }
}

impl ScriptedUpstream {
    /// On a fresh loopback port, answering `200 ok`.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `addr` (e.g. the port a [`crate::RefusedPort`] released), answering `200 ok`.
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let script = Arc::new(Mutex::new(Script {
            close_on_accept: false,
            status: Arc::new(|_| 200),
            delay: Duration::ZERO,
        }));
        let (a, r, s) = (accepts.clone(), requests.clone(), script.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (close, status, delay) = match s.lock() {
                    Ok(s) => (s.close_on_accept, s.status.clone(), s.delay),
                    Err(_) => continue,
                };
                if close {
                    drop(stream);
                    continue;
                }
                let r = r.clone();
                conns.spawn(answer(stream, r, status, delay));
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            accepts,
            requests,
            script,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (including closed-at-once ones).
    pub fn accepts(&self) -> u64 {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests answered (or being answered) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Close every new connection as soon as it is accepted (a broken target).
    pub fn set_close_on_accept(&self, on: bool) {
        if let Ok(mut s) = self.script.lock() {
            s.close_on_accept = on;
        }
    }

    /// The status for request number `n` (0-based, counted over the upstream's life).
    pub fn set_status_fn(&self, f: impl Fn(u64) -> u16 + Send + Sync + 'static) {
        if let Ok(mut s) = self.script.lock() {
            s.status = Arc::new(f);
        }
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut s) = self.script.lock() {
            s.delay = delay;
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut s: TcpStream, requests: Arc<AtomicU64>, status: StatusFn, delay: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let code = status(n);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let head = format!(
        "HTTP/1.1 {code} Scripted\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.shutdown().await;
}
