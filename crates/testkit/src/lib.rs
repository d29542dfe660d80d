//! Test-only helpers: one headless Chromium per test binary, shared by its tests.
//!
//! ```ignore
//! let b = hirewire_testkit::browser().await;   // waits for exclusive use of the tab
//! b.goto(&format!("{base}/sign-in")).await?;
//! ```
//!
//! Why this shape:
//! - Starting Chromium costs about a second, so a test binary starts it once
//!   (lazily, on first use) and its tests take turns: [`browser`] hands out a
//!   guard that holds a lock, so parallel tests never share the tab at once.
//! - A fantoccini `Client` lives on the runtime that created it, and each
//!   `#[tokio::test]` has its own runtime that dies with the test. So the
//!   session is created on a dedicated runtime kept for the life of the process.
//! - Nothing reaps a static when the process ends, so chromedriver runs under a
//!   small shell watchdog that kills its whole process group (driver and
//!   browser) as soon as the test process is gone.
//! - Only loopback pages are visited; the flags keep Chromium off the network.

pub mod page;
pub mod sandbox_pages;

use std::net::TcpListener;
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use tokio::sync::{Mutex, MutexGuard};

/// The launch flags every browser test uses.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

struct Shared {
    /// Kept, never awaited: the watchdog outlives every test by design.
    _watchdog: std::process::Child,
    _runtime: tokio::runtime::Runtime,
    client: Client,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static TURN: Mutex<()> = Mutex::const_new(());

/// Exclusive use of this test binary's browser tab until dropped.
pub struct BrowserGuard {
    client: Client,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for BrowserGuard {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Returns this test binary's browser, starting it on first use, with the
/// cookies of the previous user of the tab cleared.
///
/// Panics with a clear message when Chromium or chromedriver is missing.
pub async fn browser() -> BrowserGuard {
    let turn = TURN.lock().await;
    // `launch` blocks on its own runtime, which may not happen on a thread
    // that is driving the test's runtime: start it from a plain thread.
    let shared = SHARED.get_or_init(|| {
        std::thread::spawn(launch)
            .join()
            .expect("launch the browser")
    });
    let client = shared.client.clone();
    reset(&client).await;
    BrowserGuard {
        client,
        _turn: turn,
    }
}

async fn reset(client: &Client) {
    // Cookies are per host, not per port, and every test server shares
    // 127.0.0.1: clear them all through the DevTools protocol, which
    // (unlike WebDriver's per-page cookie calls) reaches every host at once.
    client
        .issue_cmd(ClearBrowserCookies)
        .await
        .expect("clear the browser's cookies");
    let _ = client.goto("about:blank").await;
}

/// chromedriver's `goog/cdp/execute` extension running `Network.clearBrowserCookies`.
#[derive(Debug)]
struct ClearBrowserCookies;

impl WebDriverCompatibleCommand for ClearBrowserCookies {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({ "cmd": "Network.clearBrowserCookies", "params": {} });
        (http::Method::POST, Some(body.to_string()))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn launch() -> Shared {
    let chromium =
        std::env::var("HIREWIRE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("HIREWIRE_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for (what, path) in [("Chromium", &chromium), ("chromedriver", &driver)] {
        assert!(
            std::path::Path::new(path).exists(),
            "{what} not found at {path}: run ./scripts/test, which installs Debian's chromium and chromium-driver"
        );
    }
    let port = free_port();
    let me = std::process::id();
    // The watchdog: chromedriver in its own process group, killed (with the
    // browsers it started) once this test process has exited.
    let script = format!(
        "\"{driver}\" --port={port} --allowed-ips=127.0.0.1 >/dev/null 2>&1 & \
         while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -TERM 0"
    );
    let watchdog = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("browser runtime");
    let client = runtime.block_on(async move {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": CHROMIUM_FLAGS }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    panic!("could not start a WebDriver session on chromedriver :{port}: {e}")
                }
            }
        }
    });
    Shared {
        _watchdog: watchdog,
        _runtime: runtime,
        client,
    }
}
