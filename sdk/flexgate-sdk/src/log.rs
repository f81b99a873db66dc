//! Structured logging through the host (`flexgate:plugin/host.log`).
//!
//! The host tags each line with plugin, version, route and request id, and rate-limits it.
//! Natively the lines are kept in a thread-local buffer so tests can assert on them.

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very verbose.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
}

/// Log `message` with extra `fields`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    imp::log(level, message, fields)
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[])
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[])
}

/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[])
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[])
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::flexgate::plugin::host;
    use crate::prelude::*;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        host::log(level, message, &fields);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn log(level: Level, message: &str, _fields: &[(&str, &str)]) {
        LINES.with(|l| l.borrow_mut().push((level, message.to_string())));
    }

    pub fn take() -> Vec<(Level, String)> {
        LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

/// Natively: the lines logged on this thread since the last call (for tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn take_captured() -> Vec<(Level, String)> {
    imp::take()
}
