//! The out-of-process compiler protocol (`RuntimeOptions::compiler`), with `sh` scripts standing
//! in for the gateway binary: a refusal keeps its reason, a crash or a hang is a clear error that
//! leaves the caller running, the child gets nothing of the caller's environment, and a compiler
//! that cannot be started falls back to compiling in process. The real child (`flexgate plugin
//! compile`) is exercised by `host/flexgate/tests/compile_process.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use flexgate_plugins::{CompilerCommand, PluginError, PluginRuntime, PluginSpec, RuntimeOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A runtime with its own empty cache folder whose compiler is `sh -c script`.
fn runtime(test: &str, compiler: CompilerCommand) -> (Arc<PluginRuntime>, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("compiler-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = RuntimeOptions {
        cache_dir: Some(dir.clone()),
        max_instances: 8,
        compiler: Some(compiler),
        ..RuntimeOptions::default()
    };
    (
        PluginRuntime::new(opts, &prometheus::Registry::new()).unwrap(),
        dir,
    )
}

fn sh(script: &str) -> CompilerCommand {
    CompilerCommand::new("/bin/sh", ["-c", script])
}

fn load(rt: &PluginRuntime, bytes: &[u8]) -> Result<(), PluginError> {
    let mut spec = PluginSpec::new("p", "1.0.0", bytes.to_vec());
    spec.timeout = common::RELAXED;
    rt.load(spec).map(drop)
}

#[test]
fn a_refusal_is_invalid_with_the_childs_reason_and_the_child_sees_only_its_input() {
    // Echoes the input size and its environment as the "reason". `$0`... are the protocol's
    // arguments (`sh -c` takes them as positional parameters).
    let script = r#"n=$(wc -c | tr -d ' '); printf '%s bytes; args: %s %s %s; env: ' "$n" "$0" "$2" "$4"; env | tr '\n' ' '; exit 65"#;
    let (rt, _) = runtime("refusal", sh(script));
    let err = load(&rt, &[7; 100_000]).unwrap_err();
    let PluginError::Invalid { plugin, reason } = err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(plugin, "p");
    assert!(
        reason.starts_with(
            "100000 bytes; args: --out --max-instances --max-memory-per-instance; env: "
        ),
        "{reason}"
    );
    assert!(
        !reason.contains("CARGO") && !reason.contains("HOME=") && !reason.contains("PATH="),
        "the caller's environment leaked: {reason}"
    );
}

#[test]
fn a_crash_is_a_clear_error_not_a_fallback() {
    let (rt, dir) = runtime("crash", sh("echo 'about to fail' >&2; kill -SEGV $$"));
    let err = load(&rt, b"\0asm\x0d\x00\x01\x00").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::Engine(_)), "{text}");
    assert!(
        text.contains("crashed (signal 11)") && text.contains("about to fail"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn a_hung_compiler_is_killed_at_its_deadline() {
    let mut cmd = sh("exec sleep 30");
    cmd.timeout = Duration::from_millis(300);
    let (rt, _) = runtime("hang", cmd);
    let start = Instant::now();
    let err = load(&rt, b"\0asm\x0d\x00\x01\x00").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.to_string()
            .contains("did not finish within 300ms and was killed"),
        "{err}"
    );
}

#[test]
fn a_compiler_that_cannot_start_falls_back_to_compiling_in_process() {
    let (rt, dir) = runtime(
        "missing",
        CompilerCommand::new("/nonexistent/flexgate", ["plugin", "compile"]),
    );
    load(&rt, &common::wasm("headers")).unwrap();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "cached in process"
    );
    // The same invalid-component message as with the child.
    let err = load(&rt, b"\0asm\x01\x00\x00\x00").unwrap_err();
    assert!(
        err.to_string()
            .contains("attempted to parse a wasm module with a component parser"),
        "{err}"
    );
}
