//! The pacer's clock: the wall clock plus however far the app's [`Clock`] was
//! moved by hand.
//!
//! The shared [`Pacer`](hirewire_providers::Pacer) waits in real time (a
//! quota's next free unit is a real instant). In tests the app runs on a
//! manual clock, and a provider's `Retry-After` pause must end when the test
//! moves that clock past it, as the sync's own retry does; so the pacer's time
//! is real time plus [`Clock::moved_by_hand`] (zero in production). Both parts
//! only grow, so it stays monotonic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hirewire_providers::pacing::PaceClock;

use crate::clock::Clock;

pub struct AppPaceClock {
    app: Arc<dyn Clock>,
}

impl AppPaceClock {
    pub fn new(app: Arc<dyn Clock>) -> Self {
        Self { app }
    }

    fn at(app: &dyn Clock) -> Instant {
        let moved = Duration::try_from(app.moved_by_hand()).unwrap_or(Duration::ZERO);
        Instant::now() + moved
    }
}

impl PaceClock for AppPaceClock {
    fn now(&self) -> Instant {
        Self::at(self.app.as_ref())
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let app = self.app.clone();
        Box::pin(async move {
            loop {
                let now = Self::at(app.as_ref());
                if now >= deadline {
                    return;
                }
                // Woken at least every 100 ms, so moving the app's clock ends the wait too.
                tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
            }
        })
    }
}
