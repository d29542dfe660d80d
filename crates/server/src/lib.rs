//! The hirewire web application: pages, REST API, sign-in, and (later) OAuth
//! callbacks and workers.
//!
//! The app is a library function: [`serve`] takes a [`Config`], an open
//! [`Store`](hirewire_store::Store), a [`Keyring`], a [`Clock`] and a bound
//! listener, and runs until the shutdown future resolves. The `hirewire`
//! binary only wires; tests start the same function through `testing::TestApp`.

pub mod api;
pub mod app;
pub mod auth;
pub mod booking_pages;
pub mod clock;
pub mod compose_pages;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod flag_admin;
pub mod flags;
pub mod health;
pub mod integration_pages;
pub mod integrations;
pub mod metrics;
pub mod outbox;
pub mod pace;
pub mod pages;
pub mod push_hooks;
pub mod scheduler_pages;
pub mod scheduling;
pub mod scheduling_api;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timeline;
pub mod users;

pub use app::{AppState, router, serve};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, SignInLimits};
pub use crypto::{Keyring, PasswordCost};
