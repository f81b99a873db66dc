//! The black-box harness: runs the real `flexgate` binary on its own loopback ports with a YAML config
//! in a temp dir, captures its output, and kills it on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;

use crate::BoxError;
use crate::client::{HttpClient, RawConn};
use crate::tls::TestCerts;
use crate::upstream::free_port;

/// Which output stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How long [`Gateway::start`] waits for `/health/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

type Lines = Arc<Mutex<Vec<(Stream, String)>>>;

/// Configures and starts a [`Gateway`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    bin: PathBuf,
    body: String,
    tls: Option<String>,
    env: Vec<(String, String)>,
    wait_ready: bool,
    ready_timeout: Duration,
}

impl GatewayBuilder {
    /// The YAML after the harness's own header (`version`, `listen`, `admin`, `metrics`): `upstreams`,
    /// `routes`, `server`, `log`, ... at top level.
    pub fn config(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
    /// Serve TLS on the proxy port with these certificates.
    pub fn tls(mut self, certs: &TestCerts) -> Self {
        self.tls = Some(certs.yaml());
        self
    }
    /// An environment variable for the process (`RUST_LOG` is removed unless set here).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Do not wait for `/health/ready` (for tests of startup failures).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
    /// How long to wait for `/health/ready` (default [`READY_TIMEOUT`]), e.g. for a cold plugin
    /// compile cache.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
    /// Starts the process and waits until it is ready; the error carries the captured output.
    ///
    /// The listener ports come from [`free_port`], which releases them before the gateway binds:
    /// another process can take one in between (an outgoing connection's ephemeral port, another
    /// test's listener). A gateway that exits before it is ready because a port was taken is
    /// started again on fresh ports, at most 5 times. (Not with [`GatewayBuilder::no_wait`].)
    pub async fn try_start(self) -> Result<Gateway, BoxError> {
        let mut attempt = 1;
        loop {
            let gw = self.spawn()?;
            if !self.wait_ready {
                return Ok(gw);
            }
            match gw.wait_ready(self.ready_timeout).await {
                Ok(()) => return Ok(gw),
                Err(_)
                    if attempt < 5
                        && gw.try_wait().is_some()
                        && gw.logs_text().contains("Address already in use") =>
                {
                    let _ = writeln!(
                        std::io::stderr(),
                        "flexgate: a listener port was taken before the gateway bound it; starting again on fresh ports"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&self) -> Result<Gateway, BoxError> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("flexgate.yaml");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let header = format!(
            "version: 1\nlisten: \"{proxy}\"\nadmin:\n  listen: \"{admin}\"\nmetrics:\n  listen: \"{metrics}\"\n{}",
            self.tls.clone().unwrap_or_default()
        );
        std::fs::write(&config_path, format!("{header}{}", self.body))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--log-format")
            .arg("json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let lines: Lines = Arc::default();
        let readers = vec![
            spawn_reader(
                child.stdout.take().expect("stdout"),
                Stream::Stdout,
                lines.clone(),
            ),
            spawn_reader(
                child.stderr.take().expect("stderr"),
                Stream::Stderr,
                lines.clone(),
            ),
        ];
        Ok(Gateway {
            pid: child.id(),
            child: Mutex::new(child),
            dir,
            config_path,
            header,
            proxy,
            admin,
            metrics,
            lines,
            readers,
        })
    }
    /// [`GatewayBuilder::try_start`], panicking with the captured output on failure.
    pub async fn start(self) -> Gateway {
        match self.try_start().await {
            Ok(g) => g,
            Err(e) => panic!("gateway did not start: {e}"),
        }
    }
}

fn spawn_reader(
    src: impl Read + Send + 'static,
    which: Stream,
    lines: Lines,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(src);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            if let Ok(mut l) = lines.lock() {
                l.push((which, text));
            }
        }
    })
}

/// A running `flexgate serve` process. Killed (SIGKILL) when dropped; its output is printed then if
/// the test is panicking.
#[derive(Debug)]
pub struct Gateway {
    child: Mutex<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    header: String,
    proxy: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    lines: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// A builder for the binary at `bin` (pass `env!("CARGO_BIN_EXE_flexgate")`).
    pub fn builder(bin: impl AsRef<Path>) -> GatewayBuilder {
        GatewayBuilder {
            bin: bin.as_ref().to_path_buf(),
            body: String::new(),
            tls: None,
            env: Vec::new(),
            wait_ready: true,
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// Starts `bin` with `body` as the config (after the harness's header) and waits until ready.
    pub async fn start(bin: impl AsRef<Path>, body: &str) -> Gateway {
        Self::builder(bin).config(body).start().await
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// `http://PROXY{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }
    /// `https://localhost:PORT{path}`
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.proxy.port())
    }
    /// `http://ADMIN{path}`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
    /// `http://METRICS{path}`
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// The temp dir holding the config (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The harness's config header (version, listeners, tls).
    pub fn config_header(&self) -> &str {
        &self.header
    }

    /// Resident set size from `/proc/PID/status` (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Runs `fut` while sampling [`Gateway::rss_kib`] every `every`; returns its output and the peak
    /// RSS seen (KiB), the first sample taken before `fut` starts.
    pub async fn sample_rss<F: std::future::Future>(
        &self,
        every: Duration,
        fut: F,
    ) -> (F::Output, u64) {
        let mut peak = self.rss_kib();
        let mut tick = tokio::time::interval(every);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return (out, peak.max(self.rss_kib())),
                _ = tick.tick() => peak = peak.max(self.rss_kib()),
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
    }

    /// Replaces the config (header kept, new `body`) atomically: written to a sibling file, then renamed
    /// over the config. Sends no signal.
    pub fn rewrite_config(&self, body: &str) {
        self.rewrite_config_raw(&format!("{}{body}", self.header));
    }

    /// Replaces the whole config file text atomically (for deliberately broken files).
    pub fn rewrite_config_raw(&self, text: &str) {
        let tmp = self.dir.path().join(".flexgate.yaml.tmp");
        std::fs::write(&tmp, text).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Rewrites the config file in place (truncate + write, same inode), as an editor might.
    pub fn edit_config_in_place(&self, body: &str) {
        std::fs::write(&self.config_path, format!("{}{body}", self.header)).expect("write config");
    }

    /// Every captured output line so far, stdout and stderr interleaved in arrival order.
    pub fn logs(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    /// Captured lines of one stream.
    pub fn lines_of(&self, which: Stream) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(w, _)| *w == which)
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All captured output as one text.
    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Stdout lines that parse as JSON objects.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.lines_of(Stream::Stdout)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// JSON stdout lines whose `target` is `flexgate::access`.
    pub fn access_logs(&self) -> Vec<serde_json::Value> {
        self.json_logs()
            .into_iter()
            .filter(|v| v.get("target").and_then(|t| t.as_str()) == Some("flexgate::access"))
            .collect()
    }

    /// Polls the captured JSON logs until `pred` holds for `count` lines or `timeout` passes; returns
    /// the matching lines.
    pub async fn wait_for_logs(
        &self,
        count: usize,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<_> = self.json_logs().into_iter().filter(|v| pred(v)).collect();
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The process's exit status, if it exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `GET /health/ready` on the admin port answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "flexgate exited with {status} before it was ready\n--- output ---\n{}",
                    self.logs_text()
                )
                .into());
            }
            let last = match probe(self.admin, "/health/ready").await {
                Ok(200) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "flexgate not ready after {timeout:?} (GET http://{}/health/ready: {last})\n--- output ---\n{}",
                    self.admin,
                    self.logs_text()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /metrics` on the metrics port.
    pub async fn metrics_text(&self) -> String {
        let resp = HttpClient::http1_fresh()
            .get(&self.metrics_url("/metrics"))
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(resp.status, 200, "GET /metrics: {}", resp.text());
        resp.text()
    }

    /// The value of the sample whose name-and-labels text is exactly `series` (e.g.
    /// `flexgate_config_reloads_total{result="success"}`), or `None`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics_text().await, series)
    }

    /// Polls [`Gateway::metric`] until `pred` holds or `timeout` passes; returns the last value.
    pub async fn wait_metric(
        &self,
        series: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(series).await;
            if v.is_some_and(&pred) || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of the sample `series` (name with its labels, as printed) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `GET path` over a new connection; the status code.
async fn probe(addr: SocketAddr, path: &str) -> Result<u16, BoxError> {
    let fut = async {
        let mut c = RawConn::connect(addr).await?;
        c.write(format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ))
        .await?;
        Ok::<u16, BoxError>(c.read_head(Duration::from_secs(2)).await?.status)
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .map_err(|_| "probe timed out")?
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- flexgate config {} ---\n{}\n--- flexgate output (pid {}) ---\n{}\n--- end of flexgate output ---",
                self.config_path.display(),
                std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                self.pid,
                self.logs_text()
            );
        }
    }
}
