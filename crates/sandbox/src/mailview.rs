//! Provider views of a stored message, derived from its RFC 5322 bytes on request: the Graph `message` and
//! `fileAttachment` resources and the Gmail `Message` / `MessagePart` resources.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use mail_parser::{
    Address, Encoding, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};
use serde_json::{Map, Value, json};

use crate::mailbox::{DRAFTS, MsgView};
use crate::mailgen::civil_from_days;

/// `2025-03-01T09:58:12Z`, Graph's `DateTimeOffset`.
pub fn graph_ts(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses an RFC 3339 / ISO 8601 timestamp (`Z` or offset, optional fraction; a bare date is midnight UTC)
/// into unix milliseconds.
pub fn parse_ts_ms(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('\'');
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    let utc = jiff::tz::TimeZone::UTC;
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return utc.to_timestamp(dt).ok().map(|t| t.as_millisecond());
    }
    let d = s.parse::<jiff::civil::Date>().ok()?;
    utc.to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
        .ok()
        .map(|t| t.as_millisecond())
}

fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn preview(msg: &Message<'_>, chars: usize) -> String {
    let text = msg.body_text(0).map(|t| collapse(&t)).unwrap_or_default();
    text.chars().take(chars).collect()
}

fn recipients(a: Option<&Address<'_>>) -> Vec<Value> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| {
                let addr = x.address()?;
                Some(json!({"emailAddress": {"name": x.name().unwrap_or(addr), "address": addr}}))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Every Graph `message` property the sandbox can emit; the default set leaves out the `$select`-only ones.
pub const GRAPH_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
    "uniqueBody",
];
const SELECT_ONLY: &[&str] = &["internetMessageHeaders", "uniqueBody"];

/// How to render a Graph message.
#[derive(Debug, Clone, Default)]
pub struct GraphOpts {
    /// `Prefer: IdType="ImmutableId"`.
    pub immutable: bool,
    /// `Prefer: outlook.body-content-type="text"`.
    pub text_body: bool,
    /// `$select`, already validated against [`GRAPH_PROPERTIES`] (canonical names).
    pub select: Option<Vec<String>>,
    /// Add `@odata.type` (delta items).
    pub odata_type: bool,
}

/// Graph `changeKey` of a message version.
pub(crate) fn change_key(v: &MsgView) -> String {
    let mut b = b"CQAAABYAAA".to_vec();
    b.extend_from_slice(&v.seq.to_be_bytes());
    b.extend_from_slice(&v.version.to_be_bytes());
    STANDARD.encode(b)
}

/// The Graph id of a message under the request's id preference.
pub fn graph_id(v: &MsgView, immutable: bool) -> String {
    if immutable {
        v.immutable_id.clone()
    } else {
        v.rest_id.clone()
    }
}

/// The Graph `message` resource.
pub fn graph_message(v: &MsgView, o: &GraphOpts) -> Value {
    let id = graph_id(v, o.immutable);
    let want = |p: &str| match &o.select {
        Some(sel) => p == "id" || sel.iter().any(|s| s == p),
        None => !SELECT_ONLY.contains(&p),
    };
    let mut out = Map::new();
    if o.odata_type {
        out.insert("@odata.type".into(), json!("#microsoft.graph.message"));
    }
    let ck = change_key(v);
    out.insert("@odata.etag".into(), json!(format!("W/\"{ck}\"")));
    let needs_parse = GRAPH_PROPERTIES.iter().any(|p| {
        want(p)
            && !matches!(
                *p,
                "id" | "createdDateTime"
                    | "lastModifiedDateTime"
                    | "changeKey"
                    | "categories"
                    | "receivedDateTime"
                    | "hasAttachments"
                    | "internetMessageId"
                    | "importance"
                    | "parentFolderId"
                    | "conversationId"
                    | "conversationIndex"
                    | "isDeliveryReceiptRequested"
                    | "isReadReceiptRequested"
                    | "isRead"
                    | "isDraft"
                    | "webLink"
                    | "inferenceClassification"
                    | "flag"
            )
    });
    // Headers alone answer every property but the bodies and the preview; parsing only them is much cheaper.
    let needs_body = ["body", "uniqueBody", "bodyPreview"]
        .iter()
        .any(|p| want(p));
    let parsed = match (needs_parse, needs_body) {
        (false, _) => None,
        (true, true) => parse(&v.raw),
        (true, false) => MessageParser::default().parse_headers(&v.raw[..]),
    };
    for p in GRAPH_PROPERTIES {
        if !want(p) {
            continue;
        }
        let val = match *p {
            "id" => json!(id),
            "createdDateTime" => json!(graph_ts(v.received_ms / 1000)),
            "lastModifiedDateTime" => json!(graph_ts(v.modified_s.max(v.received_ms / 1000))),
            "changeKey" => json!(ck),
            "categories" => json!([]),
            "receivedDateTime" => json!(graph_ts(v.received_ms / 1000)),
            "sentDateTime" => json!(graph_ts(
                if v.meta.sent_ms > 0 {
                    v.meta.sent_ms
                } else {
                    v.received_ms
                } / 1000
            )),
            "hasAttachments" => json!(v.meta.has_attachments),
            "internetMessageId" => json!(v.meta.message_id),
            "subject" => json!(
                parsed
                    .as_ref()
                    .and_then(|m| m.subject())
                    .unwrap_or_default()
            ),
            "bodyPreview" => json!(parsed.as_ref().map(|m| preview(m, 255)).unwrap_or_default()),
            "importance" => json!("normal"),
            "parentFolderId" => json!(v.folder_id),
            "conversationId" => json!(v.conversation_id),
            "conversationIndex" => json!(STANDARD.encode(format!("\u{1}{}", v.thread_id))),
            "isDeliveryReceiptRequested" | "isReadReceiptRequested" => json!(false),
            "isRead" => json!(v.place.is_read),
            "isDraft" => json!(v.place.folder == DRAFTS),
            "webLink" => json!(format!(
                "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            )),
            "inferenceClassification" => json!("focused"),
            "body" | "uniqueBody" => {
                let m = parsed.as_ref();
                if o.text_body {
                    json!({"contentType": "text", "content": m.and_then(|m| m.body_text(0)).unwrap_or_default()})
                } else {
                    json!({"contentType": "html", "content": m.and_then(|m| m.body_html(0)).unwrap_or_default()})
                }
            }
            "sender" | "from" => recipients(parsed.as_ref().and_then(|m| m.from()))
                .into_iter()
                .next()
                .unwrap_or(Value::Null),
            "toRecipients" => json!(recipients(parsed.as_ref().and_then(|m| m.to()))),
            "ccRecipients" => json!(recipients(parsed.as_ref().and_then(|m| m.cc()))),
            "bccRecipients" => json!(recipients(parsed.as_ref().and_then(|m| m.bcc()))),
            "replyTo" => json!(recipients(parsed.as_ref().and_then(|m| m.reply_to()))),
            "flag" => json!({"flagStatus": "notFlagged"}),
            "internetMessageHeaders" => json!(
                parsed
                    .as_ref()
                    .map(|m| header_list(&v.raw, m.root_part().headers(), None))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect::<Vec<_>>()
            ),
            _ => continue,
        };
        out.insert((*p).to_string(), val);
    }
    Value::Object(out)
}

/// Graph id of an attachment (part index within the message).
pub fn graph_attachment_id(v: &MsgView, part: u32) -> String {
    let mut b = b"att".to_vec();
    b.extend_from_slice(&v.seq.to_be_bytes());
    b.extend_from_slice(&part.to_be_bytes());
    format!("AAMkAGAtt{}", URL_SAFE.encode(b))
}

fn graph_attachment_part(v: &MsgView, id: &str) -> Option<u32> {
    let b = URL_SAFE.decode(id.strip_prefix("AAMkAGAtt")?).ok()?;
    if b.len() != 11 || &b[..3] != b"att" || b[3..7] != v.seq.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes(b[7..11].try_into().ok()?))
}

/// The message's attachments as Graph `fileAttachment`s, or just the one with `only` as id.
pub fn graph_attachments(v: &MsgView, only: Option<&str>) -> Option<Vec<Value>> {
    let want = match only {
        Some(id) => Some(graph_attachment_part(v, id)?),
        None => None,
    };
    let msg = parse(&v.raw)?;
    let mut out = Vec::new();
    for (i, part) in msg.parts.iter().enumerate() {
        let i = i as u32;
        if !msg.attachments.contains(&i) || want.is_some_and(|w| w != i) {
            continue;
        }
        let ct = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(s) => format!("{}/{s}", c.ctype()),
                None => c.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let inline = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"));
        let bytes = part.contents();
        out.push(json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": graph_attachment_id(v, i),
            "lastModifiedDateTime": graph_ts(v.modified_s.max(v.received_ms / 1000)),
            "name": part.attachment_name().unwrap_or("attachment"),
            "contentType": ct,
            "size": bytes.len(),
            "isInline": inline,
            "contentId": part.content_id(),
            "contentLocation": null,
            "contentBytes": STANDARD.encode(bytes),
        }));
    }
    if only.is_some() && out.is_empty() {
        return None;
    }
    Some(out)
}

fn format_address(a: &Address<'_>) -> String {
    a.iter()
        .filter_map(|x| {
            let addr = x.address()?;
            Some(match x.name() {
                Some(n) if n.chars().any(|c| ",;<>@\"".contains(c)) => {
                    format!("\"{}\" <{addr}>", n.replace('"', "\\\""))
                }
                Some(n) => format!("{n} <{addr}>"),
                None => addr.to_string(),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unfold(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    s.replace("\r\n", "\n")
        .split('\n')
        .collect::<Vec<_>>()
        .join("")
        .trim()
        .to_string()
}

/// Headers of a part in original order, duplicates kept: names as written; subjects and addresses decoded
/// (RFC 2047), everything else unfolded raw.
fn header_list(
    raw: &[u8],
    headers: &[mail_parser::Header<'_>],
    only: Option<&[String]>,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        let start = h.offset_field as usize;
        let vstart = h.offset_start as usize;
        let end = (h.offset_end as usize).min(raw.len());
        let field = raw.get(start..vstart).unwrap_or_default();
        let name_end = field.iter().position(|b| *b == b':').unwrap_or(field.len());
        let name = String::from_utf8_lossy(&field[..name_end])
            .trim()
            .to_string();
        if let Some(o) = only
            && !o.iter().any(|x| x.eq_ignore_ascii_case(&name))
        {
            continue;
        }
        let decoded = match (&h.name, &h.value) {
            (HeaderName::Subject | HeaderName::Comments, HeaderValue::Text(t)) => {
                Some(t.to_string())
            }
            (
                HeaderName::From
                | HeaderName::To
                | HeaderName::Cc
                | HeaderName::Bcc
                | HeaderName::ReplyTo
                | HeaderName::Sender,
                HeaderValue::Address(a),
            ) => Some(format_address(a)),
            _ => None,
        };
        let value = decoded.unwrap_or_else(|| unfold(raw.get(vstart..end).unwrap_or_default()));
        out.push((name, value));
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Gmail `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GmailFormat {
    /// id, labels, snippet, sizes, dates.
    Minimal,
    /// Plus the parsed payload.
    Full,
    /// Plus `raw`.
    Raw,
    /// Plus headers only.
    Metadata,
}

impl GmailFormat {
    /// Parses the `format` parameter.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.map(str::to_ascii_lowercase).as_deref() {
            None | Some("full") => Some(GmailFormat::Full),
            Some("minimal") => Some(GmailFormat::Minimal),
            Some("raw") => Some(GmailFormat::Raw),
            Some("metadata") => Some(GmailFormat::Metadata),
            Some(_) => None,
        }
    }
}

fn part_bytes(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    match &part.body {
        PartType::Text(_) | PartType::Html(_) => {
            let body = raw
                .get(part.offset_body as usize..(part.offset_end as usize).min(raw.len()))
                .unwrap_or_default();
            match part.encoding {
                Encoding::Base64 => {
                    let clean: Vec<u8> = body
                        .iter()
                        .copied()
                        .filter(|b| !b.is_ascii_whitespace())
                        .collect();
                    STANDARD
                        .decode(&clean)
                        .unwrap_or_else(|_| part.contents().to_vec())
                }
                Encoding::QuotedPrintable => {
                    mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                        .unwrap_or_else(|| part.contents().to_vec())
                }
                Encoding::None => body.to_vec(),
            }
        }
        _ => part.contents().to_vec(),
    }
}

/// Gmail attachment id of a part.
pub fn gmail_attachment_id(v: &MsgView, part_id: &str) -> String {
    format!(
        "ANGjdJ{}",
        URL_SAFE_NO_PAD.encode(format!("{}:{part_id}", v.gmail_id))
    )
}

fn mime_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(c) => match c.subtype() {
            Some(s) => format!("{}/{s}", c.ctype()).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".into(),
    }
}

fn gmail_part(
    v: &MsgView,
    msg: &Message<'_>,
    idx: u32,
    part_id: String,
    attachments: &mut Vec<(String, Vec<u8>)>,
) -> Value {
    let raw = &v.raw[..];
    let Some(part) = msg.parts.get(idx as usize) else {
        return json!({});
    };
    let filename = part.attachment_name().unwrap_or("").to_string();
    let headers: Vec<Value> = header_list(raw, part.headers(), None)
        .into_iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let mut out = Map::new();
    out.insert("partId".into(), json!(part_id));
    out.insert("mimeType".into(), json!(mime_type(part)));
    out.insert("filename".into(), json!(filename));
    out.insert("headers".into(), json!(headers));
    match &part.body {
        PartType::Multipart(children) => {
            out.insert("body".into(), json!({"size": 0}));
            let parts: Vec<Value> = children
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let id = if part_id.is_empty() {
                        i.to_string()
                    } else {
                        format!("{part_id}.{i}")
                    };
                    gmail_part(v, msg, *c, id, attachments)
                })
                .collect();
            out.insert("parts".into(), json!(parts));
        }
        _ => {
            let bytes = part_bytes(raw, part);
            if filename.is_empty() {
                out.insert(
                    "body".into(),
                    json!({"size": bytes.len(), "data": URL_SAFE.encode(&bytes)}),
                );
            } else {
                out.insert(
                    "body".into(),
                    json!({"attachmentId": gmail_attachment_id(v, &part_id), "size": bytes.len()}),
                );
                attachments.push((part_id, bytes));
            }
        }
    }
    Value::Object(out)
}

/// The Gmail `Message` resource.
pub fn gmail_message(v: &MsgView, format: GmailFormat, metadata_headers: &[String]) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(v.gmail_id));
    out.insert("threadId".into(), json!(v.thread_id));
    out.insert("labelIds".into(), json!(v.labels));
    let msg = parse(&v.raw);
    out.insert(
        "snippet".into(),
        json!(html_escape(
            &msg.as_ref().map(|m| preview(m, 200)).unwrap_or_default()
        )),
    );
    match (format, &msg) {
        (GmailFormat::Full, Some(m)) => {
            let mut atts = Vec::new();
            out.insert(
                "payload".into(),
                gmail_part(v, m, 0, String::new(), &mut atts),
            );
        }
        (GmailFormat::Metadata, Some(m)) => {
            let only = (!metadata_headers.is_empty()).then_some(metadata_headers);
            let headers: Vec<Value> = header_list(&v.raw, m.root_part().headers(), only)
                .into_iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            out.insert(
                "payload".into(),
                json!({"partId": "", "mimeType": mime_type(m.root_part()), "filename": "", "headers": headers, "body": {"size": 0}}),
            );
        }
        (GmailFormat::Raw, _) => {
            out.insert("raw".into(), json!(URL_SAFE.encode(&v.raw[..])));
        }
        _ => {}
    }
    out.insert("sizeEstimate".into(), json!(v.raw.len()));
    out.insert("historyId".into(), json!(v.history_id.to_string()));
    out.insert("internalDate".into(), json!(v.received_ms.to_string()));
    Value::Object(out)
}

/// The bytes of a Gmail attachment by id.
pub fn gmail_attachment(v: &MsgView, attachment_id: &str) -> Option<Vec<u8>> {
    let decoded = URL_SAFE_NO_PAD
        .decode(attachment_id.strip_prefix("ANGjdJ")?)
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (gid, part_id) = s.split_once(':')?;
    if gid != v.gmail_id {
        return None;
    }
    let msg = parse(&v.raw)?;
    let mut atts = Vec::new();
    gmail_part(v, &msg, 0, String::new(), &mut atts);
    atts.into_iter().find(|(p, _)| p == part_id).map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_timestamps_and_parsing_round_trip() {
        assert_eq!(graph_ts(1_740_823_092), "2025-03-01T09:58:12Z");
        assert_eq!(parse_ts_ms("2025-03-01T09:58:12Z"), Some(1_740_823_092_000));
        assert_eq!(parse_ts_ms("2025-03-01"), Some(1_740_787_200_000));
        assert_eq!(
            parse_ts_ms("2025-03-01T10:58:12+01:00"),
            Some(1_740_823_092_000)
        );
    }
}
