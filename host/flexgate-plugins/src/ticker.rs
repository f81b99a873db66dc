//! The epoch ticker behind per-call deadlines: it bumps the engine's epoch when a call is due,
//! not on a fixed beat.
//!
//! Every store that calls plugins owns a [`CallSlot`] holding the wall-clock deadline of its call
//! in progress (0 when idle). A call arms its store to check on the next epoch bump; the ticker
//! reads the slots, sleeps until the earliest deadline, bumps the epoch, and the due call's
//! deadline callback interrupts it (the others find they still have time and wait for the next
//! bump). A 1 kHz ticker woke the gateway's core 1,000 times a second whenever plugins ran,
//! preempting the worker each time (~0.25 µs per proxied request at 40k req/s); this one wakes at
//! deadlines, and otherwise once per `look`, the shortest plugin timeout. A call that starts
//! while the ticker sleeps for `look` has a deadline at least `look` away, so the ticker is awake
//! again before that call can be due.
//!
//! With no call for [`IDLE_LOOKS`] looks, the ticker parks; a call starting then unparks it. Its
//! deadline store and the ticker's last look are not ordered, so a call racing the ticker into
//! sleep can miss its wake-up: the ticker never sleeps longer than [`NAP`], which bounds how much
//! later than its deadline such a call can be interrupted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// Looks without any call before the ticker parks.
const IDLE_LOOKS: u32 = 20;
/// Longest sleep between looks at the slots.
const NAP: Duration = Duration::from_millis(50);

/// The deadline of one store's call in progress, in nanoseconds since the heartbeat's base;
/// 0 while the store is not in a call.
#[derive(Debug)]
pub struct CallSlot {
    deadline: AtomicU64,
    heartbeat: Arc<Heartbeat>,
}

impl CallSlot {
    /// A call starts and must be interrupted after `deadline`.
    #[inline]
    pub fn start(&self, deadline: Instant) {
        let hb = &self.heartbeat;
        let at = deadline.saturating_duration_since(hb.base).as_nanos();
        self.deadline.store(
            u64::try_from(at).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        if hb.sleeping.load(Ordering::Relaxed)
            && let Some(t) = hb.thread.get()
        {
            t.unpark();
        }
    }

    /// The call is over.
    #[inline]
    pub fn end(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }
}

/// What calls and the ticker share.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Every live store's slot (dead ones are dropped as the ticker finds them).
    slots: Mutex<Vec<Weak<CallSlot>>>,
    /// Longest sleep while no call is in progress: the shortest plugin timeout loaded.
    look_ns: AtomicU64,
    /// Finest interruption step: after a deadline, the ticker bumps again this often.
    tick: Duration,
    sleeping: AtomicBool,
    /// Set once the ticker thread is spawned.
    thread: OnceLock<Thread>,
    stop: AtomicBool,
    /// Times the ticker thread woke (tests and diagnostics).
    wakeups: AtomicU64,
}

impl Heartbeat {
    /// A slot for a new store, watched by the ticker for as long as the store lives.
    pub fn slot(self: &Arc<Self>) -> Arc<CallSlot> {
        let slot = Arc::new(CallSlot {
            deadline: AtomicU64::new(0),
            heartbeat: self.clone(),
        });
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// A plugin with this timeout is loaded: look at least this often. A ticker already asleep
    /// for longer is woken to look again sooner.
    pub fn watch_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.max(self.tick).as_nanos()).unwrap_or(u64::MAX);
        if self.look_ns.fetch_min(ns, Ordering::Relaxed) > ns
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// Whether the ticker is parked (tests).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// How many times the ticker thread has woken (tests).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// The earliest deadline of a call in progress (ns since `base`), dropping dead slots.
    fn earliest(&self) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut earliest = None;
        slots.retain(|w| match w.upgrade() {
            Some(slot) => {
                let d = slot.deadline.load(Ordering::Relaxed);
                if d != 0 {
                    earliest = Some(earliest.map_or(d, |e: u64| e.min(d)));
                }
                true
            }
            None => false,
        });
        earliest
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Owns the ticker thread; stops and joins it on drop.
pub struct Ticker {
    heartbeat: Arc<Heartbeat>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the ticker thread for `engine`; `tick` is the step between bumps once a call is due.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let tick = tick.max(Duration::from_micros(100));
        let heartbeat = Arc::new(Heartbeat {
            base: Instant::now(),
            slots: Mutex::new(Vec::new()),
            look_ns: AtomicU64::new(u64::try_from(NAP.as_nanos()).unwrap_or(u64::MAX)),
            tick,
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
            stop: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
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
    let mut idle = 0u32;
    while !hb.stop.load(Ordering::Relaxed) {
        let look = Duration::from_nanos(hb.look_ns.load(Ordering::Relaxed)).min(NAP);
        let wait = match hb.earliest() {
            Some(deadline) => {
                idle = 0;
                let now = hb.now_ns();
                if deadline <= now {
                    // Due: the callback of every call past its deadline interrupts it.
                    engine.increment_epoch();
                    hb.tick
                } else {
                    Duration::from_nanos(deadline - now).min(look)
                }
            }
            None if idle >= IDLE_LOOKS => {
                hb.sleeping.store(true, Ordering::SeqCst);
                if hb.earliest().is_none() {
                    std::thread::park_timeout(NAP);
                }
                hb.sleeping.store(false, Ordering::SeqCst);
                // Still `idle`: with no call meanwhile, straight back to sleep.
                hb.wakeups.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {
                idle += 1;
                look
            }
        };
        std::thread::park_timeout(wait);
        hb.wakeups.fetch_add(1, Ordering::Relaxed);
    }
}
