//! A throwaway `redis-server` on a free loopback port (the real server from the distribution, never a
//! mock), killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Where `SAVE` writes and a restart loads the dataset; `None`: nothing survives a restart.
    dir: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server, or returns `None` (after saying why on stderr) when `redis-server` is not
    /// installed and `FLEXGATE_REQUIRE_REDIS` is unset. With the variable set (CI), a missing server
    /// is a test failure.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        Self::start_in(test, None)
    }

    /// Like [`start_or_skip`](Self::start_or_skip), with the dataset file in `dir`: what a `SAVE`
    /// wrote is loaded again by [`restart`](Self::restart), as a persistent Redis would keep it.
    pub fn start_or_skip_persistent(test: &str, dir: &Path) -> Option<Self> {
        Self::start_in(test, Some(dir.to_path_buf()))
    }

    fn start_in(test: &str, dir: Option<PathBuf>) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            if std::env::var_os("FLEXGATE_REQUIRE_REDIS").is_some_and(|v| v != "0") {
                panic!("{test}: redis-server is not installed but FLEXGATE_REQUIRE_REDIS is set");
            }
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a skip
            // must not look like a silent pass.
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
                port: crate::free_port(),
                dir: dir.clone(),
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

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (a crash), and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port: with an empty dataset, or (persistent) the last `SAVE`d one.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }

    /// Sends one inline command on a fresh connection and returns the first reply line.
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
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"]);
        if let Some(dir) = &self.dir {
            cmd.args(["--dbfilename", "dump.rdb", "--dir"]).arg(dir);
        }
        let child = cmd
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
