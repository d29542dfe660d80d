//! Shared helpers for the benchmark binaries.

pub mod live;
