//! Parsing and participant extraction on well-formed (if varied) messages.

use hirewire_mail::{
    Mailbox, Problem, Role, ThreadKey, parse_envelope, parse_full, threading_keys,
};

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

fn mb(name: Option<&str>, address: &str) -> Mailbox {
    Mailbox {
        name: name.map(str::to_string),
        address: address.to_string(),
    }
}

#[test]
fn participants_of_every_field_with_encoded_and_quoted_names() {
    let raw = crlf(
        "From: =?utf-8?q?Fran=C3=A7ois_M=C3=BCller?= <francois@acme.io>\n\
Sender: \"Smith, Anna\" <anna@acme.io>\n\
Reply-To: jobs@acme.io (Recruiting Team)\n\
To: Zoë Dubois <zoe@example.com>, <bare@example.com>, plain@example.com,\n\
\t=?ISO-8859-1?Q?J=F6rg?= <jorg@example.de>\n\
Cc: =?utf-8?b?5p2OIOWwjw==?= <li@example.cn>\n\
Bcc: hidden@example.com\n\
Message-ID: <abc@acme.io>\n\
Subject: =?utf-8?q?Entretien_=E2=80=93_ok?=\n\
Date: Mon, 1 Jun 2026 08:00:00 +0000\n\
\n\
Hello\n",
    );
    let env = parse_envelope(&raw);
    let p = &env.participants;
    assert_eq!(
        p.from,
        vec![mb(Some("François Müller"), "francois@acme.io")]
    );
    assert_eq!(p.sender, vec![mb(Some("Smith, Anna"), "anna@acme.io")]);
    assert_eq!(p.reply_to.len(), 1);
    assert_eq!(p.reply_to[0].address, "jobs@acme.io");
    // `addr (Comment)`: the comment is used as the name when there is no display name.
    assert_eq!(p.reply_to[0].name.as_deref(), Some("Recruiting Team"));
    assert_eq!(
        p.to,
        vec![
            mb(Some("Zoë Dubois"), "zoe@example.com"),
            mb(None, "bare@example.com"),
            mb(None, "plain@example.com"),
            mb(Some("Jörg"), "jorg@example.de"),
        ]
    );
    assert_eq!(p.cc, vec![mb(Some("李 小"), "li@example.cn")]);
    assert_eq!(p.bcc, vec![mb(None, "hidden@example.com")]);
    assert_eq!(env.message_id.as_deref(), Some("abc@acme.io"));
    assert_eq!(env.subject.as_deref(), Some("Entretien – ok"));
    assert_eq!(env.date, Some(1_780_300_800));
    assert!(env.problems.is_empty(), "{:?}", env.problems);
    let roles: Vec<Role> = p.iter().map(|(r, _)| r).collect();
    assert_eq!(roles.len(), 9);
    assert_eq!(roles[0], Role::From);
}

#[test]
fn empty_group_gives_an_empty_list_and_group_members_are_flattened() {
    let raw = crlf(
        "From: a@x.com\nTo: undisclosed-recipients:;\nCc: Team: b@x.com, \"C\" <c@x.com>;, d@x.com\nMessage-ID: <1@x>\n\nbody\n",
    );
    let env = parse_envelope(&raw);
    assert!(env.participants.to.is_empty());
    let cc: Vec<&str> = env
        .participants
        .cc
        .iter()
        .map(|m| m.address.as_str())
        .collect();
    assert_eq!(cc, ["b@x.com", "c@x.com", "d@x.com"]);
    assert!(env.problems.is_empty(), "{:?}", env.problems);
}

#[test]
fn full_parse_reads_nested_multiparts_charsets_and_attachments() {
    let raw = crlf(
        "From: a@x.com\nTo: b@y.com\nMessage-ID: <m1@x.com>\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"MIX\"\n\n\
--MIX\n\
Content-Type: multipart/alternative; boundary=\"ALT\"\n\n\
--ALT\n\
Content-Type: text/plain; charset=iso-8859-1\n\
Content-Transfer-Encoding: quoted-printable\n\n\
Gr=FC=DFe aus K=F6ln\n\
--ALT\n\
Content-Type: text/html; charset=utf-8\n\
Content-Transfer-Encoding: base64\n\n\
PHA+R3LDvMOfZTwvcD4=\n\
--ALT--\n\
--MIX\n\
Content-Type: application/pdf; name=\"ignored.pdf\"\n\
Content-Disposition: attachment; filename*=utf-8''Lebenslauf_M%C3%BCller.pdf\n\
Content-Transfer-Encoding: base64\n\n\
SGVsbG8gV29ybGQh\n\
--MIX\n\
Content-Type: text/plain; charset=koi8-r; name=\"note.txt\"\n\
Content-Disposition: attachment; filename=\"=?utf-8?q?n=C3=B6te.txt?=\"\n\n\
\u{f0}\u{d2}\u{c9}\u{d7}\u{c5}\u{d4}\n\
--MIX--\n",
    );
    // The KOI8-R bytes above went through `str`, re-encode them as raw bytes.
    let raw = String::from_utf8(raw).unwrap();
    let raw: Vec<u8> = raw
        .chars()
        .map(|c| {
            if (c as u32) < 256 {
                c as u32 as u8
            } else {
                b'?'
            }
        })
        .collect();
    let msg = parse_full(&raw);
    assert_eq!(msg.text.as_deref().map(str::trim), Some("Grüße aus Köln"));
    assert_eq!(msg.html.as_deref(), Some("<p>Grüße</p>"));
    assert_eq!(msg.attachments.len(), 2, "{:?}", msg.attachments);
    let pdf = &msg.attachments[0];
    assert_eq!(pdf.filename.as_deref(), Some("Lebenslauf_Müller.pdf"));
    assert_eq!(pdf.content_type, "application/pdf");
    assert_eq!(pdf.size, "Hello World!".len());
    let note = &msg.attachments[1];
    assert_eq!(note.content_type, "text/plain");
    assert!(note.size > 0);
    assert!(msg.problems.is_empty(), "{:?}", msg.problems);
    // Both stages agree on the envelope.
    assert_eq!(msg.envelope, parse_envelope(&raw));
}

#[test]
fn legacy_charsets_decode_in_bodies_and_encoded_words() {
    // Shift_JIS "ハロー" and an ISO-2022-JP encoded-word name.
    let mut raw = b"From: =?iso-2022-jp?b?GyRCJU8lbSE8GyhC?= <jp@example.jp>\r\nTo: b@y.com\r\nMessage-ID: <j@x>\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n".to_vec();
    raw.extend_from_slice(b"\x83n\x83\x8D\x81[\r\n");
    let msg = parse_full(&raw);
    assert_eq!(
        msg.envelope.participants.from[0].name.as_deref(),
        Some("ハロー")
    );
    assert_eq!(msg.text.as_deref().map(str::trim), Some("ハロー"));
    // windows-1252 in a plain single-part body
    let raw = b"From: a@x.com\r\nMessage-ID: <w@x>\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\ncaf\xe9 \x93quoted\x94\r\n";
    assert_eq!(
        parse_full(raw).text.as_deref().map(str::trim),
        Some("café \u{201c}quoted\u{201d}")
    );
}

#[test]
fn html_only_message_gets_a_text_fallback() {
    let raw = crlf(
        "From: a@x.com\nMessage-ID: <h@x>\nContent-Type: text/html; charset=utf-8\n\n<p>Hello <b>there</b></p><script>x()</script>\n",
    );
    let msg = parse_full(&raw);
    assert!(msg.text.is_none());
    assert!(msg.html.as_deref().unwrap().contains("<b>there</b>"));
    let text = msg.text_or_from_html().unwrap();
    assert!(text.contains("Hello there"), "{text}");
    assert!(!text.contains("x()"), "{text}");
}

#[test]
fn threading_prefers_provider_ids_then_references_root() {
    let raw = crlf(
        "From: a@x.com\nMessage-ID: <c@x>\nIn-Reply-To: <b@x>\nReferences: <a@x>\n <b@x>\n\nhi\n",
    );
    let env = parse_envelope(&raw);
    assert_eq!(env.references, ["a@x", "b@x"]);
    let keys = threading_keys(&env, None);
    assert_eq!(keys.key, Some(ThreadKey::Root("a@x".into())));
    assert_eq!(keys.parents, ["a@x", "b@x"]);
    assert_eq!(
        threading_keys(&env, Some("18c0ffee")).key,
        Some(ThreadKey::Provider("18c0ffee".into()))
    );
    assert_eq!(
        threading_keys(&env, Some("  ")).key,
        Some(ThreadKey::Root("a@x".into()))
    );
    let lone = parse_envelope(&crlf("From: a@x.com\nMessage-ID: <solo@x>\n\nhi\n"));
    assert_eq!(
        threading_keys(&lone, None).key,
        Some(ThreadKey::Root("solo@x".into()))
    );
    let reply = parse_envelope(&crlf(
        "From: a@x.com\nMessage-ID: <r@x>\nIn-Reply-To: <p@x>\n\nhi\n",
    ));
    assert_eq!(
        threading_keys(&reply, None).key,
        Some(ThreadKey::Root("p@x".into()))
    );
}

#[test]
fn missing_from_and_message_id_are_listed() {
    let env = parse_envelope(b"Subject: hi\r\n\r\nbody");
    assert!(env.problems.contains(&Problem::MissingFrom));
    assert!(env.problems.contains(&Problem::MissingMessageId));
}

#[test]
fn generated_corpus_sample_matches_expected_when_present() {
    // The 10,000-message check is bench-mail + compare.py; here a tiny inline sample
    // in the generator's style guards the same decoding rules in `cargo test`.
    let raw = crlf(
        "From: =?utf-8?q?Chlo=C3=A9_O=27Brien?= <chloe.obrien+tag@acme.io>\nTo: \"Smith, Ben\" <ben.smith@example.com>,\n mia.tanaka42@example.org (Mia Tanaka), <x@y.io>\nMessage-ID: <00ff.1@acme.io>\n\nb\n",
    );
    let env = parse_envelope(&raw);
    assert_eq!(
        env.participants.from,
        vec![mb(Some("Chloé O'Brien"), "chloe.obrien+tag@acme.io")]
    );
    let to: Vec<(Option<&str>, &str)> = env
        .participants
        .to
        .iter()
        .map(|m| (m.name.as_deref(), m.address.as_str()))
        .collect();
    assert_eq!(
        to,
        [
            (Some("Smith, Ben"), "ben.smith@example.com"),
            (Some("Mia Tanaka"), "mia.tanaka42@example.org"),
            (None, "x@y.io")
        ]
    );
}

#[test]
fn rfc2231_continuations_and_charset_in_attachment_names() {
    let raw = crlf(
        "From: a@x.com\nMessage-ID: <p@x>\nContent-Type: multipart/mixed; boundary=\"B\"\n\n\
--B\nContent-Type: text/plain\n\nsee attached\n\
--B\nContent-Type: application/pdf\n\
Content-Disposition: attachment;\n\tfilename*0*=iso-8859-1''Lebensl%E4uf_;\n\tfilename*1*=J%F6rg.pdf\n\
Content-Transfer-Encoding: base64\n\nAAEC\n\
--B\nContent-Type: image/png; name=\"=?utf-8?q?F=C3=B6to.png?=\"\nContent-ID: <img1@x>\nContent-Disposition: inline\nContent-Transfer-Encoding: base64\n\niVBORw==\n\
--B--\n",
    );
    let m = parse_full(&raw);
    assert_eq!(m.text.as_deref().map(str::trim), Some("see attached"));
    let names: Vec<Option<&str>> = m
        .attachments
        .iter()
        .map(|a| a.filename.as_deref())
        .collect();
    assert_eq!(names, [Some("Lebensläuf_Jörg.pdf"), Some("Föto.png")]);
    assert_eq!(m.attachments[0].size, 3);
    assert_eq!(m.attachments[1].content_id.as_deref(), Some("img1@x"));
    assert!(m.attachments[1].inline && !m.attachments[0].inline);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
}

#[test]
fn utf8_character_split_across_rfc2231_sections() {
    // "Müller" with the two bytes of "ü" (C3 BC) in different sections.
    let raw = crlf(
        "From: a@x.com\nMessage-ID: <s@x>\nContent-Type: multipart/mixed; boundary=\"B\"\n\n\
--B\nContent-Type: text/plain\n\nx\n\
--B\nContent-Type: application/pdf\nContent-Disposition: attachment; filename*0*=utf-8''M%C3;\n filename*1*=%BCller.pdf\n\n\
AAAA\n--B--\n",
    );
    let m = parse_full(&raw);
    assert_eq!(m.attachments[0].filename.as_deref(), Some("Müller.pdf"));
}

#[test]
fn display_keeps_the_local_part_and_folds_the_domain_while_keys_fold_everything() {
    let m = mb(None, "Jane.Doe@BÜCHER.Example");
    assert_eq!(m.display_address(), "Jane.Doe@bücher.example");
    assert_eq!(m.key().as_str(), "jane.doe@bücher.example");
    assert_eq!(mb(None, "no-at").display_address(), "no-at");
}
