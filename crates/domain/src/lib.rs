//! Pure types and rules of hirewire: no I/O, no async.
//!
//! Everything here can be tested without a runtime: ids, validated newtypes,
//! address keys, and (in later modules) grant states and availability.

pub mod availability;
pub mod email;
pub mod ids;
pub mod retry;
