//! Small steps of a browser walk, shared by every test binary that drives
//! Chromium: wait for an element, click a link or button that loads a new
//! page and wait until it has, fill a field, read text.

use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, Locator};

/// Waits (up to 10 s) for an element: a click that submits a form returns
/// before the next page has loaded.
pub async fn element(b: &Client, css: &str) -> Element {
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks `css`.
pub async fn click(b: &Client, css: &str) {
    element(b, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Clicks something that loads a new page, and waits until it has: the old
/// page's root element goes stale.
pub async fn follow(b: &Client, css: &str) {
    let old = b.find(Locator::Css("html")).await.expect("a page is open");
    click(b, css).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "clicking {css} loaded no new page"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    element(b, "body").await;
}

/// Replaces a field's text.
pub async fn fill(b: &Client, css: &str, text: &str) {
    let field = element(b, css).await;
    field.clear().await.expect("clear the field");
    field.send_keys(text).await.expect("type into the field");
}

/// The visible text of `css`.
pub async fn text(b: &Client, css: &str) -> String {
    element(b, css).await.text().await.expect("read the text")
}
