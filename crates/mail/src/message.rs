//! Two-stage parsing on top of `mail-parser`.
//!
//! * [`parse_envelope`] reads the header block only (participants, ids, subject,
//!   date). It is the cheap first stage of the sync pipeline: match the
//!   participants against the org's candidates, and drop the message when it
//!   involves none.
//! * [`parse_full`] parses the whole MIME tree for the few messages that are
//!   kept: bodies (plain text and HTML, charsets decoded), attachments listed by
//!   name, type and size (bytes are not kept).
//!
//! Neither function panics on any input; what was wrong is listed in `problems`.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;

use hirewire_domain::email::AddressKey;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{
    Addr, Address, Header, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};
use serde::Serialize;

/// A participant field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    From,
    Sender,
    ReplyTo,
    To,
    Cc,
    Bcc,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::From,
        Role::Sender,
        Role::ReplyTo,
        Role::To,
        Role::Cc,
        Role::Bcc,
    ];

    /// The JSON / header-ish field name (`reply_to`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::From => "from",
            Role::Sender => "sender",
            Role::ReplyTo => "reply_to",
            Role::To => "to",
            Role::Cc => "cc",
            Role::Bcc => "bcc",
        }
    }

    /// A one-bit mask, for [`crate::RoleSet`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One mailbox as written in a header: display name decoded to Unicode (RFC 2047
/// and raw UTF-8), address trimmed with its case kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    /// The plain comparison key (trimmed, Unicode-lowercased). Org-specific
    /// matching uses [`crate::AddressNormalizer::key`] instead.
    pub fn key(&self) -> AddressKey {
        AddressKey::of(&self.address)
    }

    /// The address for display: the local part as written (it may be case-sensitive),
    /// the domain case-folded with Unicode rules (domains never are).
    pub fn display_address(&self) -> String {
        match self.address.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
            None => self.address.clone(),
        }
    }
}

/// The participants of a message, field by field, in header order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Participants {
    pub from: Vec<Mailbox>,
    pub sender: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
}

impl Participants {
    pub fn field(&self, role: Role) -> &[Mailbox] {
        match role {
            Role::From => &self.from,
            Role::Sender => &self.sender,
            Role::ReplyTo => &self.reply_to,
            Role::To => &self.to,
            Role::Cc => &self.cc,
            Role::Bcc => &self.bcc,
        }
    }

    fn field_mut(&mut self, role: Role) -> &mut Vec<Mailbox> {
        match role {
            Role::From => &mut self.from,
            Role::Sender => &mut self.sender,
            Role::ReplyTo => &mut self.reply_to,
            Role::To => &mut self.to,
            Role::Cc => &mut self.cc,
            Role::Bcc => &mut self.bcc,
        }
    }

    /// Every mailbox with its role.
    pub fn iter(&self) -> impl Iterator<Item = (Role, &Mailbox)> + '_ {
        Role::ALL
            .into_iter()
            .flat_map(move |r| self.field(r).iter().map(move |m| (r, m)))
    }

    pub fn len(&self) -> usize {
        Role::ALL.iter().map(|&r| self.field(r).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Something wrong with a message. Parsing carries on; these are listed so the
/// sync pipeline can log, count or quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// No header could be read at all.
    NoHeaders,
    /// The header block does not end with an empty line (truncated message).
    UnterminatedHeaders,
    /// A multipart has no closing boundary (truncated or mangled message).
    MissingClosingBoundary { part: usize },
    /// A part's transfer encoding could not be decoded (e.g. bad base64); its raw text was kept.
    BadTransferEncoding { part: usize },
    /// A text part names a charset that is not known; it was decoded as UTF-8, lossily.
    UnknownCharset { part: usize, charset: String },
    /// A participant header is present but yielded no address although it is not empty.
    UnparsableAddressHeader { role: Role },
    /// A participant header appears more than once; the lists were concatenated.
    DuplicateHeader { role: Role },
    /// A mailbox whose address is not a plausible `local@domain` (kept as is).
    InvalidAddress { role: Role, address: String },
    /// A group or name without any address.
    MissingAddress { role: Role },
    /// More mailboxes than [`MAX_MAILBOXES_PER_FIELD`] in one field; the rest were dropped.
    TooManyMailboxes { role: Role, total: usize },
    /// No `From` header.
    MissingFrom,
    /// No `Message-ID` header.
    MissingMessageId,
    /// The MIME parser failed internally; the result is empty apart from this.
    ParserFailure,
}

/// Mailboxes kept per participant field; beyond that a [`Problem::TooManyMailboxes`] is listed.
pub const MAX_MAILBOXES_PER_FIELD: usize = 10_000;

/// What the headers say: participants, threading ids, subject and date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// `In-Reply-To` ids, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// `References` ids, oldest first, without angle brackets.
    pub references: Vec<String>,
    pub subject: Option<String>,
    /// `Date` as Unix seconds.
    pub date: Option<i64>,
    pub participants: Participants,
    pub problems: Vec<Problem>,
}

/// An attachment as listed (its bytes are not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Index of the MIME part in the parsed tree.
    pub part: usize,
    /// File name (RFC 2231 / RFC 2047 decoded), from `Content-Disposition` or `Content-Type`.
    pub filename: Option<String>,
    /// `type/subtype`, lowercased; `application/octet-stream` when absent.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// `Content-ID` without angle brackets (inline images referenced as `cid:`).
    pub content_id: Option<String>,
    /// `Content-Disposition: inline`.
    pub inline: bool,
}

/// A fully parsed message: envelope, bodies and the attachment list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParsedMessage {
    pub envelope: Envelope,
    /// The plain-text body (text/plain parts, decoded); `None` when the message has none.
    pub text: Option<String>,
    /// The HTML body as sent (unsanitized: pass it through [`crate::sanitize_for_storage`]).
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// All problems: the envelope's and the body's.
    pub problems: Vec<Problem>,
}

impl ParsedMessage {
    /// The text to index or show when HTML is not wanted: the text part, or
    /// the HTML part converted to text.
    pub fn text_or_from_html(&self) -> Option<Cow<'_, str>> {
        match (&self.text, &self.html) {
            (Some(t), _) => Some(Cow::Borrowed(t)),
            (None, Some(h)) => Some(Cow::Owned(crate::html::html_to_text(h))),
            (None, None) => None,
        }
    }
}

static ENVELOPE_PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_address(HeaderName::From)
        .header_address(HeaderName::Sender)
        .header_address(HeaderName::ReplyTo)
        .header_address(HeaderName::To)
        .header_address(HeaderName::Cc)
        .header_address(HeaderName::Bcc)
        .header_id(HeaderName::MessageId)
        .header_id(HeaderName::InReplyTo)
        .header_id(HeaderName::References)
        .header_text(HeaderName::Subject)
        .header_date(HeaderName::Date)
        .default_header_ignore()
});

static FULL_PARSER: LazyLock<MessageParser> = LazyLock::new(MessageParser::new);

/// Stage 1: headers only. Cheap; enough for matching and threading.
pub fn parse_envelope(raw: &[u8]) -> Envelope {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let msg = ENVELOPE_PARSER.parse_headers(raw)?;
        Some(envelope_from_headers(raw, msg.root_headers_slice()))
    }));
    match parsed {
        Ok(Some(env)) => env,
        Ok(None) => no_headers(),
        Err(_) => Envelope {
            problems: vec![Problem::ParserFailure],
            ..Envelope::default()
        },
    }
}

/// Stage 2: the whole message.
pub fn parse_full(raw: &[u8]) -> ParsedMessage {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        FULL_PARSER
            .parse(raw)
            .map(|msg| full_from_message(raw, &msg))
    }));
    match parsed {
        Ok(Some(p)) => p,
        Ok(None) => {
            // The header-only parser is more lenient; keep its view of the headers.
            let envelope = parse_envelope(raw);
            ParsedMessage {
                problems: envelope.problems.clone(),
                envelope,
                ..ParsedMessage::default()
            }
        }
        Err(_) => ParsedMessage {
            problems: vec![Problem::ParserFailure],
            ..ParsedMessage::default()
        },
    }
}

fn no_headers() -> Envelope {
    Envelope {
        problems: vec![Problem::NoHeaders],
        ..Envelope::default()
    }
}

trait RootHeaders<'x> {
    fn root_headers_slice(&self) -> &[Header<'x>];
}

impl<'x> RootHeaders<'x> for Message<'x> {
    fn root_headers_slice(&self) -> &[Header<'x>] {
        self.parts
            .first()
            .map(|p| p.headers.as_slice())
            .unwrap_or(&[])
    }
}

fn role_of(name: &HeaderName<'_>) -> Option<Role> {
    Some(match name {
        HeaderName::From => Role::From,
        HeaderName::Sender => Role::Sender,
        HeaderName::ReplyTo => Role::ReplyTo,
        HeaderName::To => Role::To,
        HeaderName::Cc => Role::Cc,
        HeaderName::Bcc => Role::Bcc,
        _ => return None,
    })
}

fn envelope_from_headers(raw: &[u8], headers: &[Header<'_>]) -> Envelope {
    if headers.is_empty() {
        return no_headers();
    }
    let mut env = Envelope::default();
    let mut seen = 0u8;
    let mut seen_from = false;
    for h in headers {
        if let Some(role) = role_of(&h.name) {
            if seen & role.bit() != 0 {
                env.problems.push(Problem::DuplicateHeader { role });
            }
            seen |= role.bit();
            seen_from |= role == Role::From;
            add_mailboxes(raw, h, role, &mut env);
            continue;
        }
        match h.name {
            HeaderName::MessageId if env.message_id.is_none() => {
                env.message_id = ids(&h.value).into_iter().next();
            }
            HeaderName::InReplyTo => env.in_reply_to.extend(ids(&h.value)),
            HeaderName::References => env.references.extend(ids(&h.value)),
            HeaderName::Subject => {
                if env.subject.is_none()
                    && let HeaderValue::Text(t) = &h.value
                {
                    env.subject = Some(t.to_string());
                }
            }
            HeaderName::Date => {
                if env.date.is_none()
                    && let HeaderValue::DateTime(d) = &h.value
                    && d.is_valid()
                {
                    env.date = Some(d.to_timestamp());
                }
            }
            _ => {}
        }
    }
    if !seen_from {
        env.problems.push(Problem::MissingFrom);
    }
    if env.message_id.is_none() {
        env.problems.push(Problem::MissingMessageId);
    }
    if !headers_terminated(raw) {
        env.problems.push(Problem::UnterminatedHeaders);
    }
    env
}

/// Whether the header block ends with an empty line.
fn headers_terminated(raw: &[u8]) -> bool {
    if raw.starts_with(b"\n") || raw.starts_with(b"\r\n") {
        return true;
    }
    memchr::memchr_iter(b'\n', raw).any(|i| match raw.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => raw.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) if !t.trim().is_empty() => vec![t.trim().to_string()],
        HeaderValue::TextList(l) => l
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn add_mailboxes(raw: &[u8], h: &Header<'_>, role: Role, env: &mut Envelope) {
    let Envelope {
        participants,
        problems,
        ..
    } = env;
    let list = participants.field_mut(role);
    let mut total = 0usize;
    match &h.value {
        HeaderValue::Address(Address::List(addrs)) => {
            list.reserve(addrs.len().min(MAX_MAILBOXES_PER_FIELD));
            for a in addrs {
                push_mailbox(a, role, list, problems, &mut total);
            }
        }
        HeaderValue::Address(Address::Group(groups)) => {
            // A group with no members (`undisclosed-recipients:;`) adds nothing.
            for g in groups {
                for a in &g.addresses {
                    push_mailbox(a, role, list, problems, &mut total);
                }
            }
        }
        _ => {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            if raw[start..end].iter().any(|b| !b.is_ascii_whitespace()) {
                problems.push(Problem::UnparsableAddressHeader { role });
            }
        }
    }
    if total > MAX_MAILBOXES_PER_FIELD {
        problems.push(Problem::TooManyMailboxes { role, total });
    }
}

fn push_mailbox(
    a: &Addr<'_>,
    role: Role,
    list: &mut Vec<Mailbox>,
    problems: &mut Vec<Problem>,
    total: &mut usize,
) {
    let address = a.address.as_deref().map(str::trim).unwrap_or("");
    if address.is_empty() {
        problems.push(Problem::MissingAddress { role });
        return;
    }
    *total += 1;
    if list.len() >= MAX_MAILBOXES_PER_FIELD {
        return;
    }
    if !plausible_address(address) {
        problems.push(Problem::InvalidAddress {
            role,
            address: address.to_string(),
        });
    }
    let name = a
        .name
        .as_deref()
        .map(|n| n.trim().trim_matches('"').trim())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    list.push(Mailbox {
        name,
        address: address.to_string(),
    });
}

/// `local@domain` with both sides non-empty, no leading/trailing/double dot in
/// the local part, and a domain without spaces.
fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !domain.starts_with('.')
        && !domain
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

fn is_utf8_charset(c: &str) -> bool {
    let c = c.trim().trim_matches('"');
    [
        "utf-8",
        "utf8",
        "unicode-1-1-utf-8",
        "unicode11utf8",
        "x-unicode20utf8",
    ]
    .iter()
    .any(|u| c.eq_ignore_ascii_case(u))
}

fn full_from_message(raw: &[u8], msg: &Message<'_>) -> ParsedMessage {
    let envelope = envelope_from_headers(raw, msg.root_headers_slice());
    let mut problems = envelope.problems.clone();

    for (i, part) in msg.parts.iter().enumerate() {
        if part.is_encoding_problem && !matches!(part.body, PartType::Multipart(_)) {
            // mail-parser flags the body-less root of a headers-only message too.
            if !(i == 0 && msg.parts.len() == 1 && part.body.len() == 0) {
                problems.push(Problem::BadTransferEncoding { part: i });
            }
        }
        if let Some(ct) = part.content_type() {
            if ct.ctype().eq_ignore_ascii_case("multipart") {
                if let Some(b) = ct.attribute("boundary") {
                    let mut closing = Vec::with_capacity(b.len() + 4);
                    closing.extend_from_slice(b"--");
                    closing.extend_from_slice(b.as_bytes());
                    closing.extend_from_slice(b"--");
                    let from = (part.offset_body as usize).min(raw.len());
                    if memchr::memmem::find(&raw[from..], &closing).is_none() {
                        problems.push(Problem::MissingClosingBoundary { part: i });
                    }
                }
            } else if ct.ctype().eq_ignore_ascii_case("text")
                && let Some(cs) = ct.attribute("charset")
                && !is_utf8_charset(cs)
                && charset_decoder(cs.trim().trim_matches('"').as_bytes()).is_none()
            {
                problems.push(Problem::UnknownCharset {
                    part: i,
                    charset: cs.chars().take(64).collect(),
                });
            }
        }
    }

    let mut text: Option<String> = None;
    for &id in &msg.text_body {
        if let Some(PartType::Text(t)) = msg.parts.get(id as usize).map(|p| &p.body) {
            append(&mut text, t);
        }
    }
    let mut html: Option<String> = None;
    for &id in &msg.html_body {
        if let Some(PartType::Html(h)) = msg.parts.get(id as usize).map(|p| &p.body) {
            append(&mut html, h);
        }
    }

    // A broken structure (e.g. a multipart cut before its closing boundary) can
    // leave the only text as an unnamed "attachment": show it rather than nothing.
    if text.is_none() && html.is_none() {
        for &id in &msg.attachments {
            let Some(part) = msg.parts.get(id as usize) else {
                continue;
            };
            let named = part.attachment_name().is_some()
                || part
                    .content_disposition()
                    .is_some_and(|d| d.is_attachment());
            match &part.body {
                PartType::Text(t) if !named => {
                    text = Some(t.to_string());
                    break;
                }
                PartType::Html(h) if !named => {
                    html = Some(h.to_string());
                    break;
                }
                _ => {}
            }
        }
    }

    let attachments = msg
        .attachments
        .iter()
        .filter_map(|&id| {
            let part = msg.parts.get(id as usize)?;
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(st) => format!("{}/{}", ct.ctype(), st).to_ascii_lowercase(),
                    None => ct.ctype().to_ascii_lowercase(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_string());
            let size = match &part.body {
                PartType::Message(_) => {
                    (part.offset_end as usize).saturating_sub(part.offset_body as usize)
                }
                b => b.len(),
            };
            Some(Attachment {
                part: id as usize,
                filename: part.attachment_name().map(|n| {
                    if n.contains('\u{FFFD}') {
                        rfc2231_continuation_fallback(raw, &part.headers)
                            .unwrap_or_else(|| n.to_string())
                    } else {
                        n.to_string()
                    }
                }),
                content_type,
                size,
                content_id: part.content_id().map(|c| c.trim().to_string()),
                inline: part.content_disposition().is_some_and(|d| d.is_inline()),
            })
        })
        .collect();

    ParsedMessage {
        envelope,
        text,
        html,
        attachments,
        problems,
    }
}

fn append(dst: &mut Option<String>, s: &str) {
    match dst {
        Some(d) => {
            d.push('\n');
            d.push_str(s);
        }
        None => *dst = Some(s.to_string()),
    }
}

/// Works around a mail-parser 0.11 bug: in RFC 2231 continuations
/// (`filename*0*=iso-8859-1''a%E4;filename*1*=%F6.pdf`) it decodes each section on its
/// own, applying the charset of section 0 to section 0 only, so later sections (or a
/// UTF-8 character split across sections) come out as U+FFFD. Called only when the
/// name mail-parser gave contains U+FFFD: the sections are re-joined as bytes, then
/// decoded once with the declared charset (mail-parser's decoders).
fn rfc2231_continuation_fallback(raw: &[u8], headers: &[Header<'_>]) -> Option<String> {
    for (header, param) in [
        (HeaderName::ContentDisposition, "filename"),
        (HeaderName::ContentType, "name"),
    ] {
        let Some(h) = headers.iter().find(|h| h.name == header) else {
            continue;
        };
        let start = (h.offset_start as usize).min(raw.len());
        let end = (h.offset_end as usize).clamp(start, raw.len());
        let text = String::from_utf8_lossy(&raw[start..end]).replace(['\r', '\n'], "");
        let mut charset: Option<String> = None;
        let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
        for item in text.split(';') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let Some(rest) = key.strip_prefix(param).and_then(|r| r.strip_prefix('*')) else {
                continue;
            };
            let (num, encoded) = match rest.strip_suffix('*') {
                Some(n) => (n, true),
                None => (rest, false),
            };
            let Ok(num) = num.parse::<u32>() else {
                continue;
            };
            let mut value = value.trim().trim_matches('"');
            if encoded && num == 0 {
                let mut it = value.splitn(3, '\'');
                if let (Some(cs), Some(_lang), Some(v)) = (it.next(), it.next(), it.next()) {
                    charset = Some(cs.to_string());
                    value = v;
                }
            }
            let bytes = if encoded {
                percent_decode(value.as_bytes())
            } else {
                value.as_bytes().to_vec()
            };
            sections.push((num, bytes));
        }
        if sections.len() < 2 {
            continue;
        }
        sections.sort_by_key(|(n, _)| *n);
        let joined: Vec<u8> = sections.into_iter().flat_map(|(_, b)| b).collect();
        let decoded = match charset
            .as_deref()
            .filter(|c| !is_utf8_charset(c))
            .and_then(|c| charset_decoder(c.as_bytes()))
        {
            Some(decode) => decode(&joined),
            None => String::from_utf8_lossy(&joined).into_owned(),
        };
        return Some(decoded);
    }
    None
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}
