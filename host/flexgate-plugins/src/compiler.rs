//! Out-of-process plugin compilation, as `wasmtime compile` / Spin do ahead of time.
//!
//! Why: compiling in the gateway leaves Cranelift behind for the life of the process (~17 MiB of
//! compiler code pages touched in the binary, ~10–20 MiB of malloc arenas from the parallel
//! compilation threads), doubling idle RSS with a few plugins. A child process compiles instead and
//! writes the artifact into the disk cache; the gateway only deserializes it, exactly as on a
//! restart with a warm cache. The child's memory goes back to the OS when it exits.
//!
//! Protocol (both ends live in this file): the parent runs `PROGRAM ARGS... --out PATH
//! --max-instances N --max-memory-per-instance BYTES` with the component on stdin, an empty
//! environment and a deadline. Exit 0: the artifact is at PATH (cache format). Exit [`INVALID`]:
//! the bytes are not a usable component, stdout holds the reason (the same text as an in-process
//! compile). Anything else is a compiler failure, reported with the start of its stderr.

use crate::cache;
use crate::runtime::{RuntimeOptions, engine_config};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Exit status of a child that refused the bytes (`EX_DATAERR`; clap's usage errors exit 2).
const INVALID: u8 = 65;
/// At most this much of the child's stdout (the reason) and stderr is kept.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// How to start the plugin compiler: normally the gateway binary itself with the arguments of its
/// hidden compile subcommand, which must call [`compiler_main`] with the arguments that follow.
#[derive(Debug, Clone)]
pub struct CompilerCommand {
    /// The executable (e.g. `std::env::current_exe()`).
    pub program: PathBuf,
    /// Leading arguments selecting the compile mode (e.g. `["plugin", "compile"]`).
    pub args: Vec<OsString>,
    /// The child is killed after this long (a compile of a large plugin takes seconds).
    pub timeout: Duration,
}

impl CompilerCommand {
    /// `program args...` with the default 120 s deadline.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        CompilerCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Why an out-of-process compile did not produce an artifact.
pub(crate) enum ChildError {
    /// The child could not be started: the caller compiles in process instead.
    Spawn(std::io::Error),
    /// The bytes are not a usable component; the compiler's message.
    Invalid(String),
    /// The child crashed, timed out or failed otherwise: not retried in process, since the same
    /// input could take the gateway down.
    Failed(String),
}

/// Compile `bytes` in a child process into the cache file `out`. `Ok(pid)` of the child once
/// the artifact is written.
pub(crate) fn compile(
    cmd: &CompilerCommand,
    opts: &RuntimeOptions,
    bytes: &[u8],
    out: &Path,
) -> Result<u32, ChildError> {
    let dir = out.parent().unwrap_or(Path::new("/"));
    cache::ensure_dir(dir).map_err(ChildError::Spawn)?;
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .arg("--out")
        .arg(out)
        .arg("--max-instances")
        .arg(opts.max_instances.to_string())
        .arg("--max-memory-per-instance")
        .arg(opts.max_memory_per_instance.to_string())
        // Nothing of the gateway's environment (tokens, store URLs) is needed to compile.
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ChildError::Spawn)?;
    let pid = child.id();
    let io = start_io(&mut child, bytes);
    let (stdout, stderr) = match io {
        Ok(rx) => rx,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ChildError::Spawn(e));
        }
    };
    let status = wait(&mut child, cmd.timeout);
    // Readers end when the pipes close; a grandchild holding them must not block us.
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        let bytes = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim_end().to_owned()
    };
    let (stdout, stderr) = (text(stdout), text(stderr));
    let stderr = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    match status {
        Err(e) => Err(ChildError::Failed(format!(
            "waiting for the plugin compiler: {e}{stderr}"
        ))),
        Ok(None) => Err(ChildError::Failed(format!(
            "the plugin compiler did not finish within {:?} and was killed{stderr}",
            cmd.timeout
        ))),
        Ok(Some(s)) if s.success() => Ok(pid),
        Ok(Some(s)) if s.code() == Some(i32::from(INVALID)) => Err(ChildError::Invalid(stdout)),
        Ok(Some(s)) => Err(ChildError::Failed(format!(
            "the plugin compiler {}{stderr}",
            describe(s)
        ))),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("crashed (signal {sig})"),
        (Some(code), _) => format!("failed (exit status {code})"),
        _ => format!("failed ({status})"),
    }
}

type Output = mpsc::Receiver<Vec<u8>>;

/// Feed stdin and drain stdout/stderr on threads (pipes hold 64 KiB; components are larger).
fn start_io(child: &mut Child, bytes: &[u8]) -> std::io::Result<(Output, Output)> {
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(mut stdin), Some(stdout), Some(stderr)) = pipes else {
        return Err(std::io::Error::other(
            "the plugin compiler's pipes are missing",
        ));
    };
    let input = bytes.to_vec();
    spawn_io(move || {
        // A child that exits early closes the pipe: the error is its exit status's business.
        let _ = stdin.write_all(&input);
    })?;
    Ok((
        spawn_io(move || read_bounded(stdout))?,
        spawn_io(move || read_bounded(stderr))?,
    ))
}

fn spawn_io<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<mpsc::Receiver<T>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("flexgate-plugin-compiler-io".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    Ok(rx)
}

/// Everything up to EOF is read (so the child never blocks on a full pipe); the first
/// [`OUTPUT_LIMIT`] bytes are kept.
fn read_bounded(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = r.read(&mut buf) {
        let room = OUTPUT_LIMIT - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// The child's exit status, or `None` after killing it at the deadline.
fn wait(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The child side: parse the arguments the parent appended, compile stdin with the same engine
/// configuration as the gateway (so the artifact deserializes there) and write it to `--out`.
/// Parallel compilation is on: its threads' memory dies with this process.
pub fn compiler_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match child(args.into_iter().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refusal::Invalid(reason)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(reason.as_bytes()).and_then(|()| out.flush());
            ExitCode::from(INVALID)
        }
        Err(Refusal::Failed(message)) => {
            eprintln!("flexgate plugin compiler: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why the child wrote no artifact.
enum Refusal {
    /// Not a usable component (exit [`INVALID`], the reason on stdout).
    Invalid(String),
    /// Anything else (exit 1, the message on stderr).
    Failed(String),
}

fn child(args: Vec<OsString>) -> Result<(), Refusal> {
    use Refusal::{Failed, Invalid};
    let mut out = None;
    let mut opts = RuntimeOptions::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| Failed(format!("{flag:?} needs a value")))?;
        let number = || value.to_str().and_then(|v| v.parse::<u64>().ok());
        let bad = || Failed(format!("bad value {value:?} for {flag:?}"));
        match flag.to_str() {
            Some("--out") => out = Some(PathBuf::from(&value)),
            Some("--max-instances") => {
                opts.max_instances = number()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)?;
            }
            Some("--max-memory-per-instance") => {
                opts.max_memory_per_instance = number().ok_or_else(bad)?;
            }
            _ => return Err(Failed(format!("unknown argument {flag:?}"))),
        }
    }
    let out = out.ok_or_else(|| Failed("--out is required".to_owned()))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| Failed(format!("reading the component: {e}")))?;
    let mut cfg = engine_config(&opts);
    cfg.parallel_compilation(true);
    let engine = Engine::new(&cfg).map_err(|e| Failed(format!("engine: {e:#}")))?;
    let component = Component::new(&engine, &bytes).map_err(|e| Invalid(format!("{e:#}")))?;
    let dir = out.parent().unwrap_or(Path::new("."));
    cache::write(dir, &out, &component)
        .map_err(|e| Failed(format!("writing {}: {e}", out.display())))
}
