//! Test helper: a throwaway `redis-server` on a free loopback port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Start a server, or return `None` (after printing why) when `redis-server`
    /// is not installed and `FLEXGATE_REQUIRE_REDIS` is unset. With the variable set
    /// (CI), a missing server is a failure.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            if std::env::var_os("FLEXGATE_REQUIRE_REDIS").is_some() {
                panic!("{test}: redis-server is not installed but FLEXGATE_REQUIRE_REDIS is set");
            }
            // Written to the stderr handle directly: libtest captures `eprintln!`
            // of passing tests, and a skip must not look like a silent pass.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: redis-server is not installed \
                 (set FLEXGATE_REQUIRE_REDIS=1 to make this a failure)"
            );
            return None;
        }
        // The port is released before `redis-server` binds it, so another process can take it in
        // between: then the server is started again on another port (at most 5 times).
        let mut attempt = 1;
        loop {
            let mut server = Self {
                child: None,
                port: free_port(),
            };
            match server.try_spawn() {
                Ok(()) => return Some(server),
                Err(e) if attempt < 5 => {
                    let _ = writeln!(std::io::stderr(), "{e}: again on another port");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL the server (simulated crash) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port (fresh, empty dataset).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Send one inline command on a fresh connection and return the first reply line.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port));
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).trim().to_owned()
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts `redis-server` on `self.port` and waits for PONG (not just a connection: the port
    /// could be another process's listener); an error when it exits or stays silent for 10 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited with {status}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "redis-server on port {} did not answer PING",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Run-queue wait of this process's threads since a snapshot (`/proc/self/task/*/schedstat`,
/// second field): time they were runnable but had no CPU. A timing sample that misses its bound
/// by less than this was disturbed by the machine, not by the code (as `flexgate_testkit::sched`).
/// Zero where schedstat is unavailable, so nothing is excused there.
pub struct RunqueueWait(std::collections::HashMap<u32, u64>);

impl RunqueueWait {
    pub fn of_self() -> Self {
        Self(read_runqueue_wait())
    }

    /// Summed over the threads (those started since count from zero).
    pub fn since(&self) -> Duration {
        let total: u64 = read_runqueue_wait()
            .into_iter()
            .map(|(tid, ns)| ns.saturating_sub(self.0.get(&tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(total)
    }
}

fn read_runqueue_wait() -> std::collections::HashMap<u32, u64> {
    let mut out = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = text.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            out.insert(tid, ns);
        }
    }
    out
}
