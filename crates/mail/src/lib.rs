//! The mail core of hirewire: a pure pipeline from raw RFC 5322/MIME bytes to
//! what the timeline needs. No provider, no database.
//!
//! 1. [`parse_envelope`]: headers only (cheap). Participants, ids, subject, date.
//! 2. [`CandidateIndex::involvement`]: which candidates the message involves, and
//!    whether it is internal-only, using the org's [`AddressOptions`].
//! 3. [`parse_full`]: only for messages worth keeping. Bodies and attachment list.
//! 4. [`threading_keys`]: provider thread id, else Message-ID / In-Reply-To / References.
//! 5. [`sanitize_for_storage`] then, at display time, [`render_html`] inside a
//!    sandboxed iframe served with [`BODY_CSP`].
//! 6. [`compose`]: the other direction, a recruiter's Markdown draft to RFC 5322 bytes for sending.
//!
//! Nothing here panics on any input: each result carries `problems`.

pub mod address;
pub mod compose;
pub mod html;
pub mod matching;
pub mod message;
pub mod thread;

pub use address::{AddressNormalizer, AddressOptions};
pub use compose::{
    ComposeError, ComposeLimits, Composed, Draft, Field, FileAttachment, Recipient, ReplyTo,
    compose, render_markdown,
};
pub use hirewire_domain::email::AddressKey;
pub use html::{
    BODY_CSP, BODY_CSP_SHOW_IMAGES, IFRAME_SANDBOX, IMAGE_PLACEHOLDER, RenderedHtml, body_csp,
    body_response_headers, html_to_text, render_html, sanitize_for_storage, text_to_html,
};
pub use matching::{CandidateHit, CandidateIndex, Involvement, KeyConflict, RoleSet};
pub use message::{
    Attachment, Envelope, MAX_MAILBOXES_PER_FIELD, Mailbox, ParsedMessage, Participants, Problem,
    Role, parse_envelope, parse_full,
};
pub use thread::{ThreadKey, ThreadingKeys, threading_keys};
