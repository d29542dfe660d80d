//! Threading keys: the provider's thread/conversation id when there is one,
//! else the RFC 5322 ids (`Message-ID`, `In-Reply-To`, `References`).

use serde::Serialize;

use crate::message::Envelope;

/// The key a message is threaded under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ThreadKey {
    /// Gmail `threadId` / Microsoft Graph `conversationId`, as given by the provider.
    Provider(String),
    /// The Message-ID (no angle brackets) of the oldest known message of the thread:
    /// the first `References` id, else the first `In-Reply-To` id, else the message's own id.
    Root(String),
}

/// What a threader needs from one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadingKeys {
    pub key: Option<ThreadKey>,
    /// This message's own id.
    pub message_id: Option<String>,
    /// The ids this message points to (References, then In-Reply-To), each once,
    /// oldest first: to merge threads whose roots were not seen.
    pub parents: Vec<String>,
}

/// Threading keys of a message. `provider_thread_id` wins when present and non-empty.
pub fn threading_keys(envelope: &Envelope, provider_thread_id: Option<&str>) -> ThreadingKeys {
    let mut parents: Vec<String> = Vec::with_capacity(envelope.references.len() + 1);
    for id in envelope.references.iter().chain(&envelope.in_reply_to) {
        if !parents.contains(id) && Some(id) != envelope.message_id.as_ref() {
            parents.push(id.clone());
        }
    }
    let key = match provider_thread_id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(p) => Some(ThreadKey::Provider(p.to_string())),
        None => parents
            .first()
            .or(envelope.message_id.as_ref())
            .map(|id| ThreadKey::Root(id.clone())),
    };
    ThreadingKeys {
        key,
        message_id: envelope.message_id.clone(),
        parents,
    }
}
