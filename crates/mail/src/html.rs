//! Safe HTML for email bodies, in two steps, plus a second wall at display time.
//!
//! 1. [`sanitize_for_storage`] runs once when a message is stored. It removes
//!    everything that can execute or submit (scripts, event handlers, forms,
//!    iframes, objects, `javascript:` and non-image `data:` URLs, script-capable
//!    CSS, `<base>`, `<meta>`, SVG/MathML), denies relative URLs and adds
//!    `rel="noopener noreferrer"` and `target="_blank"` to links. Remote image
//!    URLs are *kept*, so the viewer can still choose to show them.
//! 2. [`render_html`] runs when a body is shown. Unless the viewer chose "show
//!    images" for this message, every remote image is replaced by a local
//!    placeholder, so opening a mail does not call tracking pixels.
//! 3. The result is served inside a sandboxed iframe ([`IFRAME_SANDBOX`]) with
//!    the [`BODY_CSP`] header: even if something slipped through the sanitizer,
//!    the browser would neither run script nor load remote content.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ammonia::{Builder, UrlRelative};

/// `Content-Security-Policy` for the response that carries a message body
/// (remote images blocked: the default view).
///
/// How the server must use it:
/// * serve the rendered body from its own route (e.g. `GET /messages/{id}/body`)
///   with this header, `Content-Type: text/html; charset=utf-8` and the other
///   headers of [`body_response_headers`];
/// * embed that route with
///   `<iframe sandbox="{IFRAME_SANDBOX}" src="/messages/{id}/body" referrerpolicy="no-referrer">`:
///   never `allow-scripts`, never `allow-same-origin`, never `srcdoc` with the
///   app's own origin;
/// * with "show images" on, serve [`BODY_CSP_SHOW_IMAGES`] instead, and pass
///   `show_remote_images = true` to [`render_html`].
///
/// `sandbox` in the CSP applies the sandbox even when the route is opened on
/// its own, outside the iframe.
pub const BODY_CSP: &str = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
font-src data:; media-src 'none'; object-src 'none'; script-src 'none'; base-uri 'none'; \
form-action 'none'; frame-src 'none'; frame-ancestors 'self'; \
sandbox allow-popups allow-popups-to-escape-sandbox";

/// [`BODY_CSP`] for a message whose viewer chose "show images": HTTPS images allowed.
pub const BODY_CSP_SHOW_IMAGES: &str = "default-src 'none'; img-src data: https:; \
style-src 'unsafe-inline'; font-src data:; media-src 'none'; object-src 'none'; \
script-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'; \
frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox";

/// The `sandbox` attribute of the iframe that shows a body: links may open in a
/// new, unsandboxed tab; no scripts, no same-origin, no forms, no top navigation.
pub const IFRAME_SANDBOX: &str = "allow-popups allow-popups-to-escape-sandbox";

/// The CSP for a body response.
pub fn body_csp(show_remote_images: bool) -> &'static str {
    if show_remote_images {
        BODY_CSP_SHOW_IMAGES
    } else {
        BODY_CSP
    }
}

/// All headers for a body response (`name`, `value`).
pub fn body_response_headers(show_remote_images: bool) -> [(&'static str, &'static str); 5] {
    [
        ("Content-Security-Policy", body_csp(show_remote_images)),
        ("Content-Type", "text/html; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]
}

/// What a blocked remote image shows instead: a 1×1 transparent GIF.
pub const IMAGE_PLACEHOLDER: &str =
    "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

/// CSS properties allowed in `style` attributes. None of them can take a URL
/// (no `background`, `background-image`, `list-style-image`, `content`,
/// `cursor`, `border-image`, `behavior`, `-moz-binding`).
const STYLE_PROPERTIES: &[&str] = &[
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "font-variant",
    "line-height",
    "letter-spacing",
    "word-spacing",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "white-space",
    "vertical-align",
    "direction",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-radius",
    "border-collapse",
    "border-spacing",
    "width",
    "height",
    "max-width",
    "min-width",
    "max-height",
    "min-height",
    "display",
    "float",
    "clear",
    "overflow",
    "list-style-type",
    "table-layout",
];

/// Inline image types allowed as `data:` URLs in `<img src>` (no SVG).
const DATA_IMAGE_PREFIXES: &[&str] = &[
    "data:image/png;",
    "data:image/gif;",
    "data:image/jpeg;",
    "data:image/jpg;",
    "data:image/webp;",
    "data:image/bmp;",
];

/// How a URL-ish attribute value looks to a browser: ASCII tab/newline removed
/// anywhere, C0 controls and spaces trimmed, lowercased.
fn url_view(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>()
        .trim_matches(|c: char| c <= ' ')
        .to_ascii_lowercase()
}

/// The filter shared by storage and render: drops `data:` URLs except inline
/// images, and style attributes that try escapes, comments or script-capable CSS.
fn storage_filter<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    match attribute {
        "href" | "src" | "cite" | "action" | "background" | "poster" | "xlink:href" => {
            let v = url_view(value);
            if v.starts_with("data:") {
                let inline_image = element == "img"
                    && attribute == "src"
                    && DATA_IMAGE_PREFIXES.iter().any(|p| v.starts_with(p));
                if !inline_image {
                    return None;
                }
            }
            if v.starts_with("javascript:") || v.starts_with("vbscript:") {
                return None;
            }
            Some(Cow::Borrowed(value))
        }
        "style" => {
            let v = value.to_ascii_lowercase();
            let hostile = [
                "\\",
                "/*",
                "expression",
                "javascript",
                "behavior",
                "binding",
                "url(",
                "@import",
                "&#",
            ];
            if hostile.iter().any(|h| v.contains(h)) {
                None
            } else {
                Some(Cow::Borrowed(value))
            }
        }
        _ => Some(Cow::Borrowed(value)),
    }
}

fn builder<'a>() -> Builder<'a> {
    let mut b = Builder::default();
    b.add_tags(["font", "center", "big", "small", "caption", "tfoot"])
        .add_generic_attributes([
            "style", "align", "dir", "title", "lang", "bgcolor", "valign", "width", "height",
        ])
        .add_tag_attributes("font", ["color", "face", "size"])
        .add_tag_attributes("table", ["border", "cellpadding", "cellspacing"])
        .add_tag_attributes("img", ["border", "hspace", "vspace"])
        .add_clean_content_tags([
            "title", "noscript", "template", "textarea", "select", "xmp", "noembed", "noframes",
        ])
        .url_schemes(HashSet::from([
            "http", "https", "mailto", "tel", "cid", "data",
        ]))
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .filter_style_properties(STYLE_PROPERTIES.iter().copied().collect())
        .strip_comments(true);
    b
}

/// Sanitizes an email's HTML for storage. Remote image URLs are kept; use
/// [`render_html`] when showing the result.
pub fn sanitize_for_storage(html: &str) -> String {
    let mut b = builder();
    b.attribute_filter(storage_filter);
    b.clean(html).to_string()
}

/// The HTML to put in the body iframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedHtml {
    pub html: String,
    /// How many remote images were replaced by the placeholder (0 with "show images").
    /// The UI offers "show images" when this is not 0.
    pub blocked_remote_images: usize,
}

/// Prepares stored (already sanitized) HTML for display. The storage rules are
/// applied again (cheap insurance against stale rules), and unless
/// `show_remote_images`, every remote `<img src>` becomes [`IMAGE_PLACEHOLDER`].
pub fn render_html(stored: &str, show_remote_images: bool) -> RenderedHtml {
    let blocked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&blocked);
    let mut b = builder();
    b.attribute_filter(move |element, attribute, value| {
        let kept = storage_filter(element, attribute, value)?;
        if !show_remote_images && element == "img" && attribute == "src" {
            let v = url_view(&kept);
            // Anything that is not an inline image would be fetched: block it.
            if !(v.starts_with("data:") || v.starts_with("cid:")) {
                counter.fetch_add(1, Ordering::Relaxed);
                return Some(Cow::Borrowed(IMAGE_PLACEHOLDER));
            }
        }
        Some(kept)
    });
    let html = b.clean(stored).to_string();
    RenderedHtml {
        html,
        blocked_remote_images: blocked.load(Ordering::Relaxed),
    }
}

/// Plain text from HTML (used when a message has no text part).
pub fn html_to_text(html: &str) -> String {
    mail_parser::decoders::html::html_to_text(html)
}

/// Safe HTML from plain text: everything escaped, line breaks kept, `http(s)`
/// URLs turned into links (with `rel="noopener noreferrer"`).
pub fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 64);
    out.push_str("<div style=\"white-space:pre-wrap\">");
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("<br>\n");
        }
        linkify_line(line, &mut out);
    }
    out.push_str("</div>");
    out
}

fn linkify_line(line: &str, out: &mut String) {
    let mut rest = line;
    while let Some(pos) = find_url_start(rest) {
        escape_into(&rest[..pos], out);
        let url_part = &rest[pos..];
        let end = url_part
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
            .unwrap_or(url_part.len());
        let mut url = &url_part[..end];
        // Trailing punctuation belongs to the sentence.
        while let Some(last) = url.chars().last()
            && matches!(last, '.' | ',' | ';' | ':' | ')' | '!' | '?')
        {
            url = &url[..url.len() - last.len_utf8()];
        }
        if url.len() <= "https://".len() {
            escape_into(&url_part[..end.max(1)], out);
            rest = &url_part[end.max(1)..];
            continue;
        }
        out.push_str("<a href=\"");
        escape_into(url, out);
        out.push_str("\" rel=\"noopener noreferrer\" target=\"_blank\">");
        escape_into(url, out);
        out.push_str("</a>");
        rest = &url_part[url.len()..];
    }
    escape_into(rest, out);
}

fn find_url_start(s: &str) -> Option<usize> {
    let a = s.find("https://");
    let b = s.find("http://");
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}
