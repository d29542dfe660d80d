//! The one source of "now". Handlers, the store and workers read time through
//! it, so tests move time forward instead of sleeping.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// How far this clock was moved by hand in all ([`ManualClock::advance`]);
    /// zero for clocks that follow the wall clock. Real-time waits (the
    /// provider pacer's) add it, so moving a test's clock also ends them.
    fn moved_by_hand(&self) -> SignedDuration {
        SignedDuration::ZERO
    }
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>, Arc<Mutex<SignedDuration>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(
            Arc::new(Mutex::new(start)),
            Arc::new(Mutex::new(SignedDuration::ZERO)),
        )
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut t = self.0.lock().expect("clock lock");
        *t = t.checked_add(by).expect("clock stays in range");
        let mut moved = self.1.lock().expect("clock lock");
        *moved = moved.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }

    fn moved_by_hand(&self) -> SignedDuration {
        *self.1.lock().expect("clock lock")
    }
}
