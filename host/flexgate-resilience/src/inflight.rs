//! Lock-free cap on concurrent requests to an upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
struct Inner {
    max: AtomicU32,
    current: AtomicU32,
}

/// At most `max` requests in flight at once; cheap to clone (shared counter).
///
/// Admission is a compare-and-swap loop, so the cap is exact: concurrent callers
/// never overshoot it, even transiently.
#[derive(Debug, Clone)]
pub struct InFlightLimit {
    inner: Arc<Inner>,
}

/// Holds one in-flight slot; releases it on drop (including on panic or
/// cancellation of the request future).
#[derive(Debug)]
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl InFlightLimit {
    /// A limit of `max` concurrent requests (`0` rejects everything).
    pub fn new(max: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                max: AtomicU32::new(max),
                current: AtomicU32::new(0),
            }),
        }
    }

    /// Take a slot, or `None` when `max` requests are already in flight.
    #[inline]
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        let max = self.inner.max.load(Ordering::Relaxed);
        self.inner
            .current
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |c| {
                (c < max).then_some(c + 1)
            })
            .ok()
            .map(|_| InFlightGuard {
                inner: self.inner.clone(),
            })
    }

    /// Requests currently holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.inner.current.load(Ordering::Relaxed)
    }

    /// The configured cap.
    pub fn max(&self) -> u32 {
        self.inner.max.load(Ordering::Relaxed)
    }

    /// Change the cap on config reload. Lowering it below the current count
    /// rejects new requests until enough in-flight ones finish; nothing is cut off.
    pub fn set_max(&self, max: u32) {
        self.inner.max.store(max, Ordering::Relaxed);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.inner.current.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let l = InFlightLimit::new(2);
        let a = l.try_acquire();
        let b = l.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        let c = l.try_acquire();
        assert!(c.is_some());
        l.set_max(1);
        drop(b);
        assert!(l.try_acquire().is_none(), "still 1 in flight with max 1");
        drop(c);
        assert!(l.try_acquire().is_some());
        assert_eq!(l.in_flight(), 0);
        assert!(InFlightLimit::new(0).try_acquire().is_none());
    }

    #[test]
    fn concurrent_never_exceeds_max() {
        let l = InFlightLimit::new(3);
        let peak = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let l = l.clone();
                let peak = peak.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(g) = l.try_acquire() {
                            peak.fetch_max(l.in_flight(), Ordering::Relaxed);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(l.in_flight(), 0);
    }
}
