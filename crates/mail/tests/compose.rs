//! Property: whatever the composer builds parses back, with the mail core's own parser, to the same
//! recipients, subject, Message-ID, threading ids and attachments (names and bytes), for arbitrary Unicode
//! subjects, display names, file names and addresses.

use hirewire_mail::{
    ComposeLimits, Draft, FileAttachment, Mailbox, Recipient, ReplyTo, compose, parse_full,
};
use mail_parser::MessageParser;
use proptest::prelude::*;

fn address() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9_%+\u{e9}\u{fc}\u{4e2d}\u{6587}-]{1,12}(\\.[a-z0-9]{1,6})?",
        "[a-z0-9\u{e9}\u{fc}-]{1,12}\\.[a-z]{2,6}",
    )
        .prop_map(|(l, d)| format!("{l}@{d}"))
}

fn name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{1,40}")
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (name(), address()).prop_map(|(name, address)| Recipient { name, address })
}

fn msg_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.$_-]{0,24}@[a-z0-9][a-z0-9.-]{0,20}"
}

fn attachment() -> impl Strategy<Value = FileAttachment> {
    // Binary types carry any bytes; a text/plain file carries UTF-8 text (what the type promises).
    let binary = (
        prop_oneof![
            Just("application/pdf"),
            Just("image/png"),
            Just("application/octet-stream")
        ],
        proptest::collection::vec(any::<u8>(), 1..3000),
    );
    let text = (
        Just("text/plain"),
        "\\PC{1,500}".prop_map(String::into_bytes),
    );
    ("\\PC{1,40}", prop_oneof![binary.boxed(), text.boxed()]).prop_map(|(filename, (ct, bytes))| {
        FileAttachment {
            filename,
            content_type: ct.to_owned(),
            bytes,
        }
    })
}

prop_compose! {
    fn draft()(
        from in recipient(),
        to in proptest::collection::vec(recipient(), 1..4),
        cc in proptest::collection::vec(recipient(), 0..3),
        subject in "\\PC{0,120}",
        body in "\\PC{0,300}",
        attachments in proptest::collection::vec(attachment(), 0..3),
        message_id in msg_id(),
        reply in proptest::option::of((msg_id(), proptest::collection::vec(msg_id(), 0..4))),
        date in 0i64..4_000_000_000,
    ) -> Draft {
        Draft {
            from,
            to,
            cc,
            bcc: Vec::new(),
            subject,
            body_markdown: body,
            attachments,
            message_id,
            reply: reply.map(|(in_reply_to, references)| ReplyTo { in_reply_to, references }),
            date,
        }
    }
}

/// What a recipient should read back as. The mail core's parser trims whitespace and surrounding quotation
/// marks from display names (senders often double-quote them), and an empty name is none.
fn read_back(name: Option<&str>) -> Option<String> {
    name.map(|n| n.trim().trim_matches('"').trim())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

fn expected(rs: &[Recipient]) -> Vec<(Option<String>, String)> {
    rs.iter()
        .map(|r| (read_back(r.name.as_deref()), r.address.clone()))
        .collect()
}

fn got(ms: &[Mailbox]) -> Vec<(Option<String>, String)> {
    ms.iter()
        .map(|m| (m.name.clone(), m.address.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn anything_composed_parses_back_to_the_same_headers_and_attachments(d in draft()) {
        let c = compose(&d, &ComposeLimits::default()).unwrap();
        let p = parse_full(&c.raw);
        let env = &p.envelope;
        prop_assert!(p.problems.is_empty(), "problems: {:?}\n{}", p.problems, String::from_utf8_lossy(&c.raw));
        prop_assert_eq!(got(&env.participants.from), expected(std::slice::from_ref(&d.from)));
        prop_assert_eq!(got(&env.participants.to), expected(&d.to));
        prop_assert_eq!(got(&env.participants.cc), expected(&d.cc));
        prop_assert_eq!(env.subject.clone().unwrap_or_default(), d.subject.clone());
        prop_assert_eq!(env.message_id.as_deref(), Some(d.message_id.as_str()));
        prop_assert_eq!(env.date, Some(d.date));
        match &d.reply {
            None => {
                prop_assert!(env.in_reply_to.is_empty());
                prop_assert!(env.references.is_empty());
            }
            Some(r) => {
                let mut refs = r.references.clone();
                if refs.last() != Some(&r.in_reply_to) {
                    refs.push(r.in_reply_to.clone());
                }
                prop_assert_eq!(&env.in_reply_to, &vec![r.in_reply_to.clone()]);
                prop_assert_eq!(&env.references, &refs);
            }
        }
        let names: Vec<Option<String>> = p.attachments.iter().map(|a| a.filename.clone()).collect();
        let want: Vec<Option<String>> = d.attachments.iter().map(|a| Some(a.filename.clone())).collect();
        prop_assert_eq!(names, want);
        let parsed = MessageParser::default().parse(&c.raw).unwrap();
        let bytes: Vec<&[u8]> = parsed.attachments().map(|a| a.contents()).collect();
        let want: Vec<&[u8]> = d.attachments.iter().map(|a| a.bytes.as_slice()).collect();
        prop_assert_eq!(bytes, want);
        // The text part is the Markdown as written (line ends normalized).
        prop_assert_eq!(p.text.as_deref().map(|t| t.replace("\r\n", "\n")), Some(d.body_markdown.replace("\r\n", "\n").replace('\r', "\n")));
    }
}
