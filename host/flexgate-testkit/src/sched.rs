//! Starvation detection for timing tests: how long the threads of a process were runnable but
//! waiting for a CPU (`/proc/PID/task/TID/schedstat`, second field, in ns).
//!
//! A latency sample taken while the gateway (or the test client) sat on the run queue measures the
//! machine, not the code. Tests take a [`RunqueueWait`] snapshot before a measurement and ask
//! afterwards how much run-queue wait it contained; when that explains the miss, the measurement
//! (never the assertion) is repeated a bounded number of times. Without schedstat (kernels without
//! `CONFIG_SCHED_INFO`) every figure is zero, so nothing is ever excused.

use std::collections::HashMap;
use std::time::Duration;

/// Per-thread run-queue wait of one process at one instant.
#[derive(Debug, Clone)]
pub struct RunqueueWait {
    pid: u32,
    by_thread: HashMap<u32, u64>,
}

impl RunqueueWait {
    /// A snapshot of process `pid`'s threads.
    pub fn of(pid: u32) -> Self {
        Self {
            pid,
            by_thread: read(pid),
        }
    }

    /// A snapshot of the test process itself.
    pub fn of_self() -> Self {
        Self::of(std::process::id())
    }

    /// The run-queue wait accumulated since this snapshot: the largest of any one thread (threads
    /// started since count from zero) and the sum over all threads.
    pub fn since(&self) -> Starved {
        let now = read(self.pid);
        let mut worst = 0u64;
        let mut total = 0u64;
        for (tid, ns) in now {
            let d = ns.saturating_sub(self.by_thread.get(&tid).copied().unwrap_or(0));
            worst = worst.max(d);
            total += d;
        }
        Starved {
            worst_thread: Duration::from_nanos(worst),
            total: Duration::from_nanos(total),
        }
    }
}

/// Run-queue wait over an interval (see [`RunqueueWait::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Starved {
    pub worst_thread: Duration,
    pub total: Duration,
}

impl Starved {
    /// The larger of two intervals' figures (e.g. the gateway's and the client's).
    pub fn max(self, other: Starved) -> Starved {
        Starved {
            worst_thread: self.worst_thread.max(other.worst_thread),
            total: self.total.max(other.total),
        }
    }
}

/// Whether schedstat is readable here (else [`RunqueueWait`] always reports zero).
pub fn available() -> bool {
    !read(std::process::id()).is_empty()
}

fn read(pid: u32) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            out.insert(tid, wait);
        }
    }
    out
}
