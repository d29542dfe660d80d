//! The shared browser starts, renders a loopback page, and forgets cookies between tests.

use std::io::{Read, Write};
use std::net::TcpListener;

/// A one-page HTTP server on loopback that sets a cookie and echoes the ones it receives.
fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let cookie = req
                .lines()
                .find_map(|l| l.strip_prefix("Cookie: "))
                .unwrap_or("none")
                .to_owned();
            let body = format!("<!doctype html><title>kit</title><p id=c>{cookie}</p>");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: seen=1; Path=/\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn the_browser_renders_a_loopback_page_and_starts_each_test_without_cookies() {
    let url = serve_page();
    for _ in 0..2 {
        let b = hirewire_testkit::browser().await;
        b.goto(&url).await.unwrap();
        assert_eq!(b.title().await.unwrap(), "kit");
        let first = b
            .find(fantoccini::Locator::Id("c"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            first, "none",
            "a new turn must not carry the previous turn's cookies"
        );
        b.refresh().await.unwrap();
        let second = b
            .find(fantoccini::Locator::Id("c"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(second, "seen=1");
    }
}
