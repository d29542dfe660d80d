//! Mailboxes: each message stored once as its RFC 5322 bytes plus a small index (addresses, subject, dates,
//! folder, read state). Graph and Gmail JSON are derived from the bytes on request ([`crate::mailview`]), so
//! both providers' views of a message agree.
//!
//! Ids are computed, not stored: a Gmail id is the received time in hex plus the message's sequence number
//! (16 hex digits, like Gmail's); a Graph immutable id encodes the mailbox and sequence number; a Graph
//! regular (REST) id also encodes the folder and a move counter, so it changes when the message moves, as
//! Outlook's do without `Prefer: IdType="ImmutableId"`.
//!
//! Every change (add, delete, move, read state) is logged with a Gmail history id; Graph delta rounds and
//! Gmail `history.list` both read that log. Mailboxes are runtime-only (not in the state file): regenerate
//! them from the generator's seed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};

use crate::mailgen::MessageMeta;

/// Graph well-known folder names and display names; the index is the folder's number.
pub const FOLDERS: [(&str, &str); 7] = [
    ("inbox", "Inbox"),
    ("sentitems", "Sent Items"),
    ("drafts", "Drafts"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
];

/// Folder number of `inbox`.
pub const INBOX: u8 = 0;
/// Folder number of `sentitems`.
pub const SENT: u8 = 1;
/// Folder number of `drafts`.
pub const DRAFTS: u8 = 2;
/// Folder number of `deleteditems`.
pub const DELETED: u8 = 3;
/// Folder number of `junkemail`.
pub const JUNK: u8 = 5;

/// Largest mailbox: Gmail ids keep the sequence number in 5 hex digits.
pub const MAX_MESSAGES: usize = 0xF_FFFF;

/// Where a message is and whether it is read: what changes record before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Folder number.
    pub folder: u8,
    /// Read.
    pub is_read: bool,
    /// How often it has moved (part of the Graph REST id).
    pub moves: u16,
}

/// One logged change.
#[derive(Debug, Clone)]
pub struct Change {
    /// Gmail history id of the change.
    pub hid: u64,
    /// Unix seconds.
    pub at: i64,
    /// Message sequence number.
    pub seq: u32,
    /// `None`: the message was added.
    pub before: Option<Placement>,
    /// `None`: the message was deleted for good.
    pub after: Option<Placement>,
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Sequence number (index in the mailbox).
    pub seq: u32,
    /// Sequence number of the thread's first message.
    pub thread: u32,
    /// Folder, read state, moves.
    pub place: Placement,
    /// Deleted for good.
    pub deleted: bool,
    /// Received (Gmail `internalDate`), unix milliseconds.
    pub received_ms: i64,
    /// Last change, unix seconds.
    pub modified_s: i64,
    /// Bumped on every change (Graph `changeKey`).
    pub version: u32,
    /// Gmail history id of the last change.
    pub history_id: u64,
    /// Indexed header fields.
    pub meta: MessageMeta,
    /// The RFC 5322 bytes, stored once (moved in, never copied).
    pub raw: Arc<Vec<u8>>,
}

/// Options of a Graph delta round, fixed by its first request and carried by its tokens.
#[derive(Debug, Clone, Default)]
pub struct DeltaOpts {
    /// `$select`.
    pub select: Option<Vec<String>>,
    /// `$filter=receivedDateTime ge|gt X`: (unix ms, strict).
    pub filter: Option<(i64, bool)>,
    /// `$top` / `odata.maxpagesize`.
    pub page: usize,
    /// Raw `$filter` text, echoed in links.
    pub filter_text: Option<String>,
}

/// A saved `$deltatoken`.
#[derive(Debug, Clone)]
pub struct DeltaToken {
    /// Folder number.
    pub folder: u8,
    /// Options.
    pub opts: DeltaOpts,
    /// Changes after this history id belong to the next round.
    pub since: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Expired through the control API.
    pub expired: bool,
}

/// One entry of a delta round.
#[derive(Debug, Clone)]
pub enum DeltaItem {
    /// A message to send in full (or `$select`ed).
    Msg(u32),
    /// `@removed` with the id the client knew.
    Removed(String),
}

/// A delta round in progress (pages served through `$skiptoken`).
#[derive(Debug, Clone)]
pub struct Round {
    /// Folder number.
    pub folder: u8,
    /// Options.
    pub opts: DeltaOpts,
    /// Everything this round returns, in order.
    pub items: Vec<DeltaItem>,
    /// History id at the start of the round: the next delta token's `since`.
    pub end: u64,
}

/// Everything a handler needs to render one message, taken out of the lock.
#[derive(Debug, Clone)]
pub struct MsgView {
    /// Gmail id.
    pub gmail_id: String,
    /// Gmail thread id.
    pub thread_id: String,
    /// Graph immutable id.
    pub immutable_id: String,
    /// Graph REST id (changes on move).
    pub rest_id: String,
    /// Graph conversation id.
    pub conversation_id: String,
    /// Graph folder id.
    pub folder_id: String,
    /// Placement.
    pub place: Placement,
    /// Unix ms.
    pub received_ms: i64,
    /// Unix seconds.
    pub modified_s: i64,
    /// Version.
    pub version: u32,
    /// Gmail history id.
    pub history_id: u64,
    /// Sequence number.
    pub seq: u32,
    /// Gmail labels.
    pub labels: Vec<&'static str>,
    /// Indexed fields.
    pub meta: MessageMeta,
    /// Bytes.
    pub raw: Arc<Vec<u8>>,
}

/// One user's mailbox.
#[derive(Debug)]
pub struct Mailbox {
    /// Owner address.
    pub owner: String,
    /// Owner's Graph object id / Google sub.
    pub owner_id: String,
    key: [u8; 8],
    /// Messages by sequence number (deleted ones stay as tombstones).
    pub msgs: Vec<Msg>,
    by_message_id: HashMap<String, u32>,
    /// Current Gmail history id.
    pub history_id: u64,
    /// History ids below this are stale (`history.list` answers 404).
    pub history_floor: u64,
    /// The change log.
    pub changes: Vec<Change>,
    /// Delta tokens handed out.
    pub delta_tokens: HashMap<String, DeltaToken>,
    /// Delta rounds in progress.
    pub rounds: HashMap<String, Round>,
    round_order: VecDeque<String>,
}

/// Gmail labels of a placement.
pub fn labels(p: Placement) -> Vec<&'static str> {
    let mut l = Vec::with_capacity(3);
    match p.folder {
        INBOX => l.extend(["INBOX", "CATEGORY_PERSONAL"]),
        SENT => l.push("SENT"),
        DRAFTS => l.push("DRAFT"),
        DELETED => l.push("TRASH"),
        JUNK => l.push("SPAM"),
        _ => {}
    }
    if !p.is_read {
        l.push("UNREAD");
    }
    l
}

impl Mailbox {
    /// An empty mailbox whose history starts at `history_id`.
    pub fn new(owner: &str, owner_id: &str, history_id: u64) -> Self {
        let h = Sha256::digest(owner.to_ascii_lowercase().as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&h[..8]);
        Mailbox {
            owner: owner.to_ascii_lowercase(),
            owner_id: owner_id.to_string(),
            key,
            msgs: Vec::new(),
            by_message_id: HashMap::new(),
            history_id,
            history_floor: 0,
            changes: Vec::new(),
            delta_tokens: HashMap::new(),
            rounds: HashMap::new(),
            round_order: VecDeque::new(),
        }
    }

    fn enc(&self, prefix: &str, tag: &[u8; 3], seq: u32, extra: &[u8]) -> String {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(tag);
        b.extend_from_slice(&self.key);
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(extra);
        format!("{prefix}{}", URL_SAFE.encode(b))
    }

    fn dec(&self, id: &str, prefix: &str, tag: &[u8; 3]) -> Option<(u32, Vec<u8>)> {
        let b = URL_SAFE.decode(id.strip_prefix(prefix)?).ok()?;
        if b.len() < 15 || &b[..3] != tag || b[3..11] != self.key {
            return None;
        }
        let seq = u32::from_be_bytes(b[11..15].try_into().ok()?);
        Some((seq, b[15..].to_vec()))
    }

    /// Graph id of a folder.
    pub fn folder_id(&self, folder: u8) -> String {
        self.enc("AQMkAD", b"fld", u32::from(folder), b"\0\0")
    }

    /// A folder by well-known name (any case) or id.
    pub fn folder_index(&self, name_or_id: &str) -> Option<u8> {
        if let Some(i) = FOLDERS
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name_or_id))
        {
            return Some(i as u8);
        }
        let (seq, _) = self.dec(name_or_id, "AQMkAD", b"fld")?;
        (seq < FOLDERS.len() as u32).then_some(seq as u8)
    }

    /// Gmail id: received time (ms, 11 hex digits) then sequence number (5 hex digits).
    pub fn gmail_id(&self, seq: u32) -> String {
        let m = &self.msgs[seq as usize];
        format!(
            "{:011x}{:05x}",
            m.received_ms.clamp(0, 0xFFF_FFFF_FFFF),
            seq
        )
    }

    /// Graph immutable id.
    pub fn immutable_id(&self, seq: u32) -> String {
        self.enc("AAkALg", b"imm", seq, &[])
    }

    /// Graph REST id for a placement.
    pub fn rest_id_at(&self, seq: u32, p: Placement) -> String {
        let mut extra = vec![p.folder];
        extra.extend_from_slice(&p.moves.to_be_bytes());
        self.enc("AAMkAG", b"rst", seq, &extra)
    }

    /// A live message by Gmail id, Graph immutable id or current Graph REST id.
    pub fn find(&self, id: &str) -> Option<u32> {
        let live = |seq: u32| {
            self.msgs
                .get(seq as usize)
                .filter(|m| !m.deleted)
                .map(|m| m.seq)
        };
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let seq = u32::from_str_radix(&id[11..], 16).ok()?;
            let s = live(seq)?;
            return (self.gmail_id(s) == id.to_ascii_lowercase()).then_some(s);
        }
        if let Some((seq, _)) = self.dec(id, "AAkALg", b"imm") {
            return live(seq);
        }
        if let Some((seq, extra)) = self.dec(id, "AAMkAG", b"rst") {
            let s = live(seq)?;
            let p = self.msgs[s as usize].place;
            return (extra.len() == 3
                && extra[0] == p.folder
                && u16::from_be_bytes([extra[1], extra[2]]) == p.moves)
                .then_some(s);
        }
        None
    }

    /// Like [`Mailbox::find`], also accepting an RFC 5322 `Message-ID` (control API).
    pub fn find_any(&self, id: &str) -> Option<u32> {
        self.find(id).or_else(|| {
            let key = if id.starts_with('<') {
                id.to_string()
            } else {
                format!("<{id}>")
            };
            self.by_message_id
                .get(&key)
                .copied()
                .filter(|s| !self.msgs[*s as usize].deleted)
        })
    }

    fn bump(&mut self, seq: u32) -> u64 {
        // Increasing, not contiguous (PROVIDERS.md §6.4).
        self.history_id += 1 + u64::from(seq % 7);
        self.history_id
    }

    /// Adds a message; threads it by `In-Reply-To` / `References`. `record`: log the change (bulk generation
    /// does not, and makes earlier history ids stale instead).
    pub fn insert(
        &mut self,
        raw: Arc<Vec<u8>>,
        meta: MessageMeta,
        received_ms: i64,
        place: Placement,
        now: i64,
        record: bool,
    ) -> Result<u32, String> {
        if self.msgs.len() >= MAX_MESSAGES {
            return Err(format!("a mailbox holds at most {MAX_MESSAGES} messages"));
        }
        let seq = self.msgs.len() as u32;
        let thread = meta
            .parents
            .iter()
            .find_map(|p| self.by_message_id.get(p))
            .map(|s| self.msgs[*s as usize].thread)
            .unwrap_or(seq);
        if !meta.message_id.is_empty() {
            self.by_message_id
                .entry(meta.message_id.clone())
                .or_insert(seq);
        }
        let hid = self.bump(seq);
        self.msgs.push(Msg {
            seq,
            thread,
            place,
            deleted: false,
            received_ms,
            modified_s: received_ms / 1000,
            version: 1,
            history_id: hid,
            meta,
            raw,
        });
        if record {
            self.changes.push(Change {
                hid,
                at: now,
                seq,
                before: None,
                after: Some(place),
            });
        }
        Ok(seq)
    }

    /// Deletes a message for good.
    pub fn delete(&mut self, seq: u32, now: i64) {
        let hid = self.bump(seq);
        let m = &mut self.msgs[seq as usize];
        if m.deleted {
            return;
        }
        m.deleted = true;
        m.history_id = hid;
        let before = m.place;
        self.changes.push(Change {
            hid,
            at: now,
            seq,
            before: Some(before),
            after: None,
        });
    }

    /// Moves a message and/or changes its read state.
    pub fn update(&mut self, seq: u32, folder: Option<u8>, is_read: Option<bool>, now: i64) {
        let before = self.msgs[seq as usize].place;
        let mut after = before;
        if let Some(f) = folder
            && f != before.folder
        {
            after.folder = f;
            after.moves = before.moves.wrapping_add(1);
        }
        if let Some(r) = is_read {
            after.is_read = r;
        }
        if after == before {
            return;
        }
        let hid = self.bump(seq);
        let m = &mut self.msgs[seq as usize];
        m.place = after;
        m.version += 1;
        m.modified_s = now;
        m.history_id = hid;
        self.changes.push(Change {
            hid,
            at: now,
            seq,
            before: Some(before),
            after: Some(after),
        });
    }

    /// Replaces a message's bytes (a draft edited in place): same ids, new version, logged as a change.
    pub fn replace_content(&mut self, seq: u32, raw: Arc<Vec<u8>>, meta: MessageMeta, now: i64) {
        let hid = self.bump(seq);
        if !meta.message_id.is_empty() {
            self.by_message_id
                .entry(meta.message_id.clone())
                .or_insert(seq);
        }
        let m = &mut self.msgs[seq as usize];
        m.raw = raw;
        m.meta = meta;
        m.version += 1;
        m.modified_s = now;
        m.history_id = hid;
        let place = m.place;
        self.changes.push(Change {
            hid,
            at: now,
            seq,
            before: Some(place),
            after: Some(place),
        });
    }

    /// Makes every history id up to now stale; returns the new floor.
    pub fn expire_history(&mut self) -> u64 {
        self.history_floor = self.history_id;
        self.history_floor
    }

    /// A render snapshot of a message.
    pub fn view(&self, seq: u32) -> MsgView {
        let m = &self.msgs[seq as usize];
        MsgView {
            gmail_id: self.gmail_id(seq),
            thread_id: self.gmail_id(m.thread),
            immutable_id: self.immutable_id(seq),
            rest_id: self.rest_id_at(seq, m.place),
            conversation_id: self.enc("AAQkAG", b"cnv", m.thread, &[]),
            folder_id: self.folder_id(m.place.folder),
            place: m.place,
            received_ms: m.received_ms,
            modified_s: m.modified_s,
            version: m.version,
            history_id: m.history_id,
            seq,
            labels: labels(m.place),
            meta: m.meta.clone(),
            raw: m.raw.clone(),
        }
    }

    /// Live messages.
    pub fn live(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().filter(|m| !m.deleted)
    }

    /// Number of live threads.
    pub fn thread_count(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for m in self.live() {
            seen.insert(m.thread);
        }
        seen.len()
    }

    /// Stores a delta round (keeping the newest 256) and returns its id.
    pub fn add_round(&mut self, round: Round) -> String {
        let id = crate::wire::random_token(12);
        self.rounds.insert(id.clone(), round);
        self.round_order.push_back(id.clone());
        while self.round_order.len() > 256 {
            if let Some(old) = self.round_order.pop_front() {
                self.rounds.remove(&old);
            }
        }
        id
    }
}

/// All mailboxes, by owner address.
#[derive(Debug, Default)]
pub struct Mailboxes {
    /// Owner address (lowercase) -> mailbox.
    pub by_owner: HashMap<String, Mailbox>,
    /// Sends, drafts' send-side state, upload sessions ([`crate::send_api`]).
    pub outgoing: crate::send_api::Outgoing,
}

/// Reads the indexed fields out of RFC 5322 bytes (for injected messages).
pub fn meta_from_raw(raw: &[u8]) -> Result<MessageMeta, String> {
    use mail_parser::{HeaderValue, MessageParser};
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or("not an RFC 5322 message")?;
    let ids = |v: &HeaderValue<'_>| -> Vec<String> {
        match v {
            HeaderValue::Text(t) => vec![format!("<{t}>")],
            HeaderValue::TextList(l) => l.iter().map(|t| format!("<{t}>")).collect(),
            _ => Vec::new(),
        }
    };
    let mut parents = ids(msg.in_reply_to());
    parents.extend(ids(msg.references()).into_iter().rev());
    let addrs = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
    };
    let mut recipients = addrs(msg.to());
    recipients.extend(addrs(msg.cc()));
    Ok(MessageMeta {
        message_id: msg
            .message_id()
            .map(|m| format!("<{m}>"))
            .unwrap_or_default(),
        parents,
        from: addrs(msg.from()).into_iter().next().unwrap_or_default(),
        recipients,
        subject: msg.subject().unwrap_or_default().to_string(),
        sent_ms: msg.date().map_or(0, |d| d.to_timestamp() * 1000),
        has_attachments: msg.attachment_count() > 0,
    })
}
