//! Malformed input: nothing panics, each gives a best-effort result and lists its problems.

use hirewire_mail::{
    MAX_MAILBOXES_PER_FIELD, ParsedMessage, Problem, Role, parse_envelope, parse_full,
};

fn both(raw: &[u8]) -> ParsedMessage {
    let env = parse_envelope(raw);
    let full = parse_full(raw);
    assert_eq!(
        full.envelope, env,
        "the two stages disagree on the envelope"
    );
    for p in &env.problems {
        assert!(
            full.problems.contains(p),
            "{p:?} missing from the full parse"
        );
    }
    full
}

const HEAD: &str =
    "From: Anna <anna@acme.io>\r\nTo: ben@example.com\r\nMessage-ID: <m@acme.io>\r\n";

#[test]
fn truncated_in_the_headers() {
    let raw = b"From: Anna <anna@acme.io>\r\nTo: ben@exa";
    let m = both(raw);
    assert_eq!(m.envelope.participants.from[0].address, "anna@acme.io");
    assert!(
        m.problems.contains(&Problem::UnterminatedHeaders),
        "{:?}",
        m.problems
    );
}

#[test]
fn truncated_in_a_multipart_body() {
    let raw = format!(
        "{HEAD}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nHello wor"
    );
    let m = both(raw.as_bytes());
    assert_eq!(m.envelope.participants.to[0].address, "ben@example.com");
    assert!(
        m.text.as_deref().unwrap_or("").contains("Hello wor"),
        "{m:?}"
    );
    assert!(
        m.problems
            .iter()
            .any(|p| matches!(p, Problem::MissingClosingBoundary { .. })),
        "{:?}",
        m.problems
    );
}

#[test]
fn bad_base64_is_listed_and_the_rest_survives() {
    let raw = format!(
        "{HEAD}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nreadable\r\n--B\r\nContent-Type: application/pdf; name=cv.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not*base64$$$\r\n--B--\r\n"
    );
    let m = both(raw.as_bytes());
    assert_eq!(m.text.as_deref().map(str::trim), Some("readable"));
    assert!(
        m.problems
            .iter()
            .any(|p| matches!(p, Problem::BadTransferEncoding { .. })),
        "{:?}",
        m.problems
    );
}

#[test]
fn invalid_charset_falls_back_to_utf8() {
    let raw = format!(
        "{HEAD}Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nplain ascii \u{e9}\r\n"
    );
    let m = both(raw.as_bytes());
    assert_eq!(m.text.as_deref().map(str::trim), Some("plain ascii \u{e9}"));
    assert!(
        m.problems.contains(&Problem::UnknownCharset {
            part: 0,
            charset: "x-no-such-charset".into()
        }),
        "{:?}",
        m.problems
    );
    // An unknown charset in an encoded word keeps the header usable.
    let raw = b"From: =?x-bogus?q?Caf=E9?= <cafe@x.com>\r\nMessage-ID: <c@x>\r\n\r\nb";
    let m = both(raw);
    assert_eq!(m.envelope.participants.from[0].address, "cafe@x.com");
}

#[test]
fn five_thousand_recipients() {
    let to: Vec<String> = (0..5000)
        .map(|i| format!("\"R {i}\" <r{i}@example.com>"))
        .collect();
    let raw = format!(
        "From: a@acme.io\r\nTo: {}\r\nMessage-ID: <big@x>\r\n\r\nhi\r\n",
        to.join(",\r\n ")
    );
    let m = both(raw.as_bytes());
    assert_eq!(m.envelope.participants.to.len(), 5000);
    assert_eq!(
        m.envelope.participants.to[4999].address,
        "r4999@example.com"
    );
    assert_eq!(
        m.envelope.participants.to[4999].name.as_deref(),
        Some("R 4999")
    );
    assert!(m.problems.is_empty(), "{:?}", m.problems);
}

#[test]
fn more_mailboxes_than_the_cap_are_cut_and_listed() {
    let n = MAX_MAILBOXES_PER_FIELD + 5;
    let to: Vec<String> = (0..n).map(|i| format!("r{i}@e.com")).collect();
    let raw = format!(
        "From: a@acme.io\r\nCc: {}\r\nMessage-ID: <big@x>\r\n\r\nhi\r\n",
        to.join(",")
    );
    let env = parse_envelope(raw.as_bytes());
    assert_eq!(env.participants.cc.len(), MAX_MAILBOXES_PER_FIELD);
    assert!(env.problems.contains(&Problem::TooManyMailboxes {
        role: Role::Cc,
        total: n
    }));
}

#[test]
fn hundred_deep_nested_multiparts() {
    let mut raw = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 1..=100 {
        raw.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n",
            i - 1
        ));
    }
    raw.push_str("--b100\r\nContent-Type: text/plain\r\n\r\ndeep inside\r\n--b100--\r\n");
    for i in (0..100).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let m = both(raw.as_bytes());
    assert_eq!(m.text.as_deref().map(str::trim), Some("deep inside"));
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    // And unclosed: every level lacks its closing boundary.
    let cut = raw.find("deep inside").unwrap() + 4;
    let m = both(&raw.as_bytes()[..cut]);
    assert!(
        m.problems
            .iter()
            .filter(|p| matches!(p, Problem::MissingClosingBoundary { .. }))
            .count()
            >= 100
    );
}

#[test]
fn ten_megabyte_body() {
    let mut raw = format!("{HEAD}Content-Type: text/plain; charset=utf-8\r\n\r\n").into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while raw.len() < 10 * 1024 * 1024 {
        raw.extend_from_slice(line);
    }
    let env = parse_envelope(&raw);
    assert_eq!(env.participants.from[0].address, "anna@acme.io");
    let m = parse_full(&raw);
    assert!(m.text.as_ref().unwrap().len() >= 10 * 1000 * 1000);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
}

#[test]
fn nul_bytes_everywhere() {
    let raw = b"From: An\0na <an\0na@acme.io>\r\nTo: \0\r\nMessage-ID: <\0@x>\r\nSubject: a\0b\r\n\r\nbo\0dy\0\r\n";
    let m = both(raw);
    assert_eq!(m.envelope.participants.from.len(), 1);
    assert!(m.text.as_deref().unwrap().contains("bo\0dy"));
    let only_nuls = vec![0u8; 4096];
    let _ = both(&only_nuls);
}

#[test]
fn local_part_with_a_leading_dot_is_kept_and_listed() {
    let raw =
        b"From: .anna@acme.io\r\nTo: ok@example.com, no-at-sign\r\nMessage-ID: <d@x>\r\n\r\nb";
    let m = both(raw);
    assert_eq!(m.envelope.participants.from[0].address, ".anna@acme.io");
    assert!(
        m.problems.contains(&Problem::InvalidAddress {
            role: Role::From,
            address: ".anna@acme.io".into()
        }),
        "{:?}",
        m.problems
    );
    assert_eq!(m.envelope.participants.to[0].address, "ok@example.com");
    assert!(
        m.problems.iter().any(|p| matches!(
            p,
            Problem::InvalidAddress { role: Role::To, .. }
                | Problem::MissingAddress { role: Role::To }
        )),
        "{:?}",
        m.problems
    );
}

#[test]
fn empty_and_garbage_inputs() {
    for raw in [
        &b""[..],
        b"\r\n\r\n",
        b"\xff\xfe\xfd",
        b"::::",
        b"From:",
        b"From: <>\r\n\r\n",
        b"To: ;;;,,,<<<>>>\r\n\r\n",
    ] {
        let m = both(raw);
        assert!(!m.problems.is_empty(), "{raw:?} listed no problem");
    }
    assert_eq!(parse_envelope(b"").problems, vec![Problem::NoHeaders]);
}

#[test]
fn duplicate_and_unparsable_address_headers() {
    let raw =
        b"From: a@x.com\r\nFrom: b@x.com\r\nTo: \"only a name\"\r\nMessage-ID: <d@x>\r\n\r\nb";
    let m = both(raw);
    assert_eq!(m.envelope.participants.from.len(), 2);
    assert!(
        m.problems
            .contains(&Problem::DuplicateHeader { role: Role::From })
    );
    assert!(m.envelope.participants.to.is_empty());
    assert!(
        m.problems.iter().any(|p| matches!(
            p,
            Problem::MissingAddress { role: Role::To }
                | Problem::UnparsableAddressHeader { role: Role::To }
        )),
        "{:?}",
        m.problems
    );
}
