//! `bench-mail DIR [--iters N] [--warmup W] [--out OUT] [--candidates N] [--full]`
//!
//! The mail participants contract (shared bench README, section 2). Loads every
//! `DIR/*.eml` into memory, then times, per repeat, the first stage of the sync
//! pipeline on every message: `hirewire_mail::parse_envelope` (headers only,
//! participants decoded). With `--candidates N` (N > 0) each envelope is also
//! matched against an index of N candidate addresses. With `--full` the timed
//! stage is `parse_full` (whole MIME tree, bodies decoded) instead. Prints one JSON line;
//! `--out` receives one participants line per message for `compare.py`.

use std::io::Write;
use std::time::Instant;

use hirewire_mail::{
    AddressNormalizer, AddressOptions, CandidateIndex, Envelope, Mailbox, Role, parse_envelope,
    parse_full,
};

struct Args {
    dir: String,
    iters: usize,
    warmup: usize,
    out: Option<String>,
    candidates: usize,
    full: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        dir: String::new(),
        iters: 10,
        warmup: 2,
        out: None,
        candidates: 0,
        full: false,
    };
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--iters" => args.iters = num("--iters")?.max(1),
            "--warmup" => args.warmup = num("--warmup")?,
            "--candidates" => args.candidates = num("--candidates")?,
            "--full" => args.full = true,
            "--out" => args.out = Some(it.next().ok_or("--out needs a path")?),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if args.dir.is_empty() => args.dir = a,
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if args.dir.is_empty() {
        return Err(
            "usage: bench-mail DIR [--iters N] [--warmup W] [--out OUT] [--candidates N]".into(),
        );
    }
    Ok(args)
}

fn load(dir: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "eml") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

fn json_line(file: &str, env: &Envelope) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("file".into(), file.into());
    if let Some(id) = &env.message_id {
        obj.insert("message_id".into(), format!("<{id}>").into());
    }
    for role in Role::ALL {
        let list: &[Mailbox] = env.participants.field(role);
        if list.is_empty() {
            continue;
        }
        let arr: Vec<serde_json::Value> = list
            .iter()
            .map(|m| serde_json::json!([m.name.as_deref().unwrap_or(""), m.address]))
            .collect();
        obj.insert(role.as_str().into(), arr.into());
    }
    serde_json::Value::Object(obj).to_string()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let files = match load(&args.dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot read {}: {e}", args.dir);
            std::process::exit(1);
        }
    };
    let n = files.len();

    // Optional: an index of N candidate addresses, built outside the timed region.
    let index = (args.candidates > 0).then(|| {
        let normalizer = AddressNormalizer::new(
            AddressOptions::default().with_internal_domains(["example.com"]),
        );
        let addrs = (0..args.candidates).map(|i| {
            // Every 50th candidate is a corpus-like address, so some messages match.
            if i % 50 == 0 {
                (format!("anna.smith{}@acme.io", i / 50 % 1000), i)
            } else {
                (format!("candidate{i}@talent{}.example", i % 97), i)
            }
        });
        CandidateIndex::build(normalizer, addrs).0
    });

    let mut rates = Vec::with_capacity(args.iters);
    let mut last: Vec<Envelope> = Vec::new();
    let mut matched_total = 0usize;
    for round in 0..args.warmup + args.iters {
        let mut out: Vec<Envelope> = Vec::with_capacity(n);
        let start = Instant::now();
        for (_, raw) in &files {
            let env = if args.full {
                parse_full(raw).envelope
            } else {
                parse_envelope(raw)
            };
            if let Some(index) = &index {
                matched_total += index.involvement(&env.participants).candidates.len();
            }
            out.push(env);
        }
        let elapsed = start.elapsed().as_secs_f64();
        if round >= args.warmup {
            rates.push(n as f64 / elapsed.max(1e-9));
        }
        last = std::hint::black_box(out);
    }
    std::hint::black_box(matched_total);

    if let Some(path) = &args.out {
        let write = || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
            for ((name, _), env) in files.iter().zip(&last) {
                writeln!(w, "{}", json_line(name, env))?;
            }
            w.flush()
        };
        if let Err(e) = write() {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }

    rates.sort_by(|a, b| a.total_cmp(b));
    let best = rates.last().copied().unwrap_or(0.0);
    let median = rates[rates.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "peer": "hirewire",
            "input": args.dir,
            "messages": n,
            "msgs_per_s": {"best": best.round(), "median": median.round()},
        })
    );
}
