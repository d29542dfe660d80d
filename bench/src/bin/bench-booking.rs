//! The booking page's slots endpoint under load, over loopback, from a second
//! process.
//!
//! ```text
//! cargo run --release -p hirewire-bench --bin bench-booking -- [--seconds 10] [--connections 32] [--links 100]
//! ```
//!
//! The parent process runs hirewire (SQLite, the built-in sandbox as the
//! calendar provider) with one recruiter whose sandbox calendar holds three
//! generated meetings a weekday, `--links` scheduling links, and free/busy
//! already cached (the server's clock stands still, so the cache stays fresh:
//! this measures the endpoint, not the provider). It then starts itself again
//! as the load generator (`load` mode), which keeps `--connections` HTTP/1.1
//! keep-alive connections busy with
//! `GET /api/v1/booking/{token}/slots?tz=&from=&to=`, varying the link, the
//! zone (eight, DST and half-hour ones included), the start day (0-20 days
//! ahead) and the window (1-7 days), so every response is computed. Responses
//! are checked (status 200 and a `"slots"` body). It prints requests/s and
//! latency percentiles; the acceptance figure is >= 10,000 requests/s with
//! p99 <= 10 ms on 2 cores.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ZONES: [&str; 8] = [
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "UTC",
    "America/Sao_Paulo",
];

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("load") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(load(&args));
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(&args));
    }
}

/// Parent: hirewire + sandbox, seeded; then the load generator as a child.
async fn serve(args: &[String]) {
    use hirewire_store::Backend;
    use hirewire_store::testing::TestDb;
    let seconds = arg(args, "--seconds", 10);
    let connections = arg(args, "--connections", 32);
    let n_links = arg(args, "--links", 100);

    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("a SQLite database");
    let world = hirewire_server::testing::World::start(&db).await;
    let r = world.recruiter_with_calendar("microsoft").await;
    let api = world.app.api(&r.token);
    // Three meetings a weekday for the next five weeks, 08:00-17:00 UTC.
    world
        .control(
            reqwest::Method::POST,
            &format!("/_sandbox/calendars/{}/events", r.calendar),
            Some(serde_json::json!({"generate": {"start": "2027-01-04", "end": "2027-02-08", "seed": 7, "per_day": 3, "hours": [8, 17]}})),
        )
        .await;
    let mut settings: serde_json::Value = api
        .get("/me/scheduling-settings")
        .send()
        .await
        .expect("settings")
        .json()
        .await
        .expect("json");
    settings["no_same_day"] = serde_json::json!(false);
    settings["minimum_notice_minutes"] = serde_json::json!(60);
    let res = api
        .put("/me/scheduling-settings")
        .json(&settings)
        .send()
        .await
        .expect("save settings");
    assert_eq!(res.status(), 200);
    let mut tokens = Vec::new();
    for i in 0..n_links {
        let c =
            world
                .app
                .store
                .create_candidate(
                    r.org,
                    &format!("Candidate {i}"),
                    &[hirewire_domain::email::EmailAddress::parse(&format!(
                        "c{i}@candidates.example"
                    ))
                    .expect("address")],
                    world.app.now(),
                )
                .await
                .expect("candidate");
        let kind = if i % 2 == 0 {
            "interview"
        } else {
            "phone_screen"
        };
        let link: serde_json::Value = api
            .post(&format!("/candidates/{}/scheduling-links", c.id))
            .json(&serde_json::json!({"meeting_kind": kind}))
            .send()
            .await
            .expect("link")
            .json()
            .await
            .expect("json");
        let url = link["url"].as_str().expect("url");
        tokens.push(url.rsplit('/').next().expect("token").to_owned());
    }
    // Warm: resolve every link and fill the free/busy cache.
    let client = reqwest::Client::new();
    for t in &tokens {
        let res = client
            .get(world.app.at(&format!("/api/v1/booking/{t}/slots")))
            .send()
            .await
            .expect("warm");
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }
    let file = std::env::temp_dir().join(format!("bench-booking-{}.tokens", std::process::id()));
    std::fs::write(&file, tokens.join("\n")).expect("write tokens");
    let addr = world.app.url.trim_start_matches("http://").to_owned();
    let rss_before = rss_kb();
    println!(
        "bench-booking: hirewire at {addr} (SQLite), {n_links} links, free/busy cached; load from a second process: {connections} connections, {seconds} s"
    );
    let status = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "load",
            &addr,
            file.to_str().expect("path"),
            &seconds.to_string(),
            &connections.to_string(),
        ])
        .status()
        .await
        .expect("start the load generator");
    let _ = std::fs::remove_file(&file);
    println!(
        "server RSS: {} MB before the load, {} MB after",
        rss_before / 1024,
        rss_kb() / 1024
    );
    assert!(status.success(), "the load generator failed");
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A tiny deterministic generator (xorshift): the load must not depend on a crate's RNG speed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Child: keeps `connections` keep-alive connections busy; prints the figures.
async fn load(args: &[String]) {
    let addr = args[2].clone();
    let tokens: Vec<String> = std::fs::read_to_string(&args[3])
        .expect("tokens")
        .lines()
        .map(str::to_owned)
        .collect();
    let seconds: u64 = args[4].parse().expect("seconds");
    let connections: u64 = args[5].parse().expect("connections");
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let addr = addr.clone();
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
            let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut lat = Vec::with_capacity(200_000);
            let mut buf = vec![0u8; 256 * 1024];
            let mut empty = 0u64;
            while Instant::now() < until {
                let token = &tokens[(rng.next() % tokens.len() as u64) as usize];
                let zone = ZONES[(rng.next() % ZONES.len() as u64) as usize];
                let start = jiff::civil::date(2027, 1, 4)
                    .checked_add(jiff::Span::new().days((rng.next() % 21) as i64))
                    .expect("date");
                let end = start
                    .checked_add(jiff::Span::new().days(1 + (rng.next() % 7) as i64))
                    .expect("date");
                let req = format!(
                    "GET /api/v1/booking/{token}/slots?tz={}&from={start}&to={end} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
                    zone.replace('/', "%2F")
                );
                let t0 = Instant::now();
                stream.write_all(req.as_bytes()).await.expect("write");
                // Read the head, then Content-Length bytes of body.
                let mut have = 0usize;
                let (head_end, body_len) = loop {
                    let n = stream.read(&mut buf[have..]).await.expect("read");
                    assert!(n > 0, "the server closed the connection");
                    have += n;
                    if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&buf[..i]).expect("ascii head");
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                            })
                            .expect("content-length");
                        break (i + 4, len);
                    }
                };
                while have < head_end + body_len {
                    let n = stream.read(&mut buf[have..]).await.expect("read body");
                    assert!(n > 0, "the server closed the connection");
                    have += n;
                }
                lat.push(t0.elapsed());
                let body = &buf[head_end..head_end + body_len];
                assert!(body.starts_with(b"{\"time_zone\""), "{}", String::from_utf8_lossy(body));
                if body.ends_with(b"\"slots\":[]}") {
                    empty += 1;
                }
            }
            (lat, empty)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut empty = 0;
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        empty += e;
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "requests: {} in {wall:.1} s = {:.0} requests/s ({} answered with no slot: a weekend or a full window)",
        all.len(),
        all.len() as f64 / wall,
        empty
    )
    .ok();
    writeln!(
        out,
        "latency: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all[all.len() - 1]
    )
    .ok();
}
