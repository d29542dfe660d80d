//! How fast the provider sandbox generates realistic mailboxes, and how much
//! memory they take: the generator behind large sync tests and benchmarks.
//!
//! `bench-mailgen [N] [--seed S]` (default N = 100000) prints one JSON line:
//! `{"messages": N, "mime_mb": x, "seconds": y, "us_per_message": z, "rss_mb_after": r}`.
//! Build with `cargo build --release --workspace`.

use std::time::Instant;

use hirewire_sandbox::mailgen::{GenerateSpec, generate};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut n = 100_000usize;
    let mut seed = 1u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => seed = it.next().and_then(|s| s.parse().ok()).expect("--seed S"),
            other => {
                n = other.parse().unwrap_or_else(|_| {
                    panic!("usage: bench-mailgen [N] [--seed S], not {other:?}")
                })
            }
        }
    }
    let candidates: Vec<String> = (0..50)
        .map(|i| format!("candidate{i}@example.net"))
        .collect();
    let spec = GenerateSpec {
        owner: "adele@acme.example".into(),
        owner_name: "Adele Vance".into(),
        n,
        seed,
        candidates,
        candidate_share: 0.25,
        start: 1_764_201_600,
        end: 1_764_201_600 + 365 * 86_400,
    };
    let t0 = Instant::now();
    let messages = generate(&spec);
    let seconds = t0.elapsed().as_secs_f64();
    let bytes: usize = messages.iter().map(|m| m.raw.len()).sum();
    println!(
        "{}",
        serde_json::json!({
            "messages": messages.len(),
            "mime_mb": (bytes as f64 / 1e6 * 10.0).round() / 10.0,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "us_per_message": (seconds * 1e6 / messages.len().max(1) as f64 * 10.0).round() / 10.0,
            "rss_mb_after": (rss_mb() * 10.0).round() / 10.0,
        })
    );
}
