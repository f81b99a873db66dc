//! The epoch ticker behind per-call deadlines, asleep while no plugin runs.
//!
//! Deadlines are epoch-based: a thread bumps the engine's epoch every tick (1 ms). Ticking for
//! nothing cost the gateway ~1.8% of a core at 1 kHz, idle or serving routes without plugins (~0.35
//! µs per proxied request at 50k req/s). So the ticker parks after [`IDLE_TICKS`] ticks without a
//! plugin call and every call [`beat`](Heartbeat::beat)s: a relaxed store, plus an unpark only when
//! the ticker sleeps. The store and the ticker's check are not ordered, so a call racing the ticker
//! into sleep can miss its wake-up; the ticker therefore never sleeps longer than [`NAP`], which
//! bounds how much later than its deadline such a call can be interrupted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// Ticks without a call before the ticker sleeps.
const IDLE_TICKS: u32 = 100;
/// Longest sleep between looks at the heartbeat.
const NAP: Duration = Duration::from_millis(50);

/// What calls and the ticker share.
#[derive(Debug)]
pub struct Heartbeat {
    /// Set by every call, cleared by the ticker each tick.
    busy: AtomicBool,
    sleeping: AtomicBool,
    /// Set once the ticker thread is spawned.
    thread: OnceLock<Thread>,
    /// The epoch tick: deadline granularity.
    tick: Duration,
    stop: AtomicBool,
}

impl Heartbeat {
    /// A call is starting: make sure epochs advance while it runs.
    #[inline]
    pub fn beat(&self) {
        self.busy.store(true, Ordering::Relaxed);
        if self.sleeping.load(Ordering::Relaxed)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// How often the epoch advances while calls run.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Whether the ticker is asleep (tests).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }
}

/// Owns the ticker thread; stops and joins it on drop.
pub struct Ticker {
    heartbeat: Arc<Heartbeat>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking `engine`'s epoch every `tick`.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let heartbeat = Arc::new(Heartbeat {
            busy: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
            tick: tick.max(Duration::from_micros(100)),
            stop: AtomicBool::new(false),
        });
        let handle = {
            let hb = heartbeat.clone();
            std::thread::Builder::new()
                .name("flexgate-plugin-epoch".into())
                .spawn(move || run(&engine, &hb))?
        };
        let _ = heartbeat.thread.set(handle.thread().clone());
        Ok(Ticker {
            heartbeat,
            handle: Some(handle),
        })
    }

    pub fn heartbeat(&self) -> &Arc<Heartbeat> {
        &self.heartbeat
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.heartbeat.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn run(engine: &Engine, hb: &Heartbeat) {
    let (tick, stop) = (hb.tick, &hb.stop);
    let mut idle = 0u32;
    // Epochs track wall time: after an oversleep (a loaded machine) catch up, so a deadline of N
    // ticks is never much longer than N × tick.
    let mut start = Instant::now();
    let mut epochs: u128 = 0;
    while !stop.load(Ordering::Relaxed) {
        if hb.busy.swap(false, Ordering::Relaxed) {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
        }
        if idle >= IDLE_TICKS {
            hb.sleeping.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) && !hb.busy.load(Ordering::SeqCst) {
                std::thread::park_timeout(NAP);
            }
            hb.sleeping.store(false, Ordering::SeqCst);
            idle = 0;
            // Count from a fresh base: no burst of catch-up epochs for the time asleep.
            start = Instant::now();
            epochs = 0;
            continue;
        }
        std::thread::sleep(tick);
        let due = start.elapsed().as_nanos() / tick.as_nanos();
        while epochs < due {
            engine.increment_epoch();
            epochs += 1;
        }
    }
}
