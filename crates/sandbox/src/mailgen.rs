//! The mailbox generator: N realistic recruiting messages over a time span, as real RFC 5322 / MIME bytes.
//!
//! Threads (consistent `Message-ID` / `In-Reply-To` / `References`, `Re:` subjects), replies in both
//! directions, attachments (PDF, PNG, DOCX, an RFC 2231 UTF-8 file name), odd charsets (ISO-8859-1 and
//! Windows-1252 quoted-printable bodies, ISO-2022-JP bodies and subjects, RFC 2047 encoded display names), and a
//! requested share of messages to or from given candidate addresses. Deterministic for a seed (own SplitMix64,
//! so the output does not depend on a `rand` version). Pure: no sandbox state is touched.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    /// Mailbox owner's address (the recruiter).
    pub owner: String,
    /// Mailbox owner's display name.
    pub owner_name: String,
    /// How many messages.
    pub n: usize,
    /// PRNG seed: the same spec gives the same bytes.
    pub seed: u64,
    /// Candidate addresses to involve.
    pub candidates: Vec<String>,
    /// Share (0..=1) of messages that are from or to one of `candidates` (kept to within one thread).
    pub candidate_share: f64,
    /// First possible `Date`, unix seconds.
    pub start: i64,
    /// Last possible `Date`, unix seconds.
    pub end: i64,
}

/// The fields a mailbox indexes, known from generation (or parsed from injected bytes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageMeta {
    /// `Message-ID` with angle brackets.
    pub message_id: String,
    /// `In-Reply-To` then `References` ids (with brackets), for threading.
    pub parents: Vec<String>,
    /// Sender address, lowercase.
    pub from: String,
    /// To and Cc addresses, lowercase.
    pub recipients: Vec<String>,
    /// Decoded subject.
    pub subject: String,
    /// `Date`, unix milliseconds.
    pub sent_ms: i64,
    /// Carries at least one attachment.
    pub has_attachments: bool,
}

/// One generated message.
#[derive(Debug, Clone)]
pub struct GeneratedMessage {
    /// RFC 5322 bytes, CRLF line ends.
    pub raw: Vec<u8>,
    /// When the mailbox received it (Gmail `internalDate`, Graph `receivedDateTime`), unix milliseconds.
    pub received_ms: i64,
    /// Graph well-known folder name: `inbox`, `sentitems` or `archive`.
    pub folder: &'static str,
    /// Read already.
    pub is_read: bool,
    /// Indexed fields.
    pub meta: MessageMeta,
}

/// SplitMix64: tiny, fast, and stable across crate versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as u64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Alex", "Priya", "Jordan", "Mei", "Samuel", "Fatima", "Lukas", "Aisha", "Diego", "Hannah",
    "Kenji", "Olivia", "Noah", "Ingrid", "Tomás", "Chloé", "Zoë", "Søren", "José", "Renée",
    "Björn", "Anaïs", "Marek", "Leilani", "Omar", "Grace", "Ravi", "Elena", "Yusuf", "Nina",
];
const LAST: &[&str] = &[
    "Nguyen",
    "Patel",
    "García",
    "Müller",
    "Kowalski",
    "O'Brien",
    "Johansson",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Okafor",
    "Silva",
    "Lindqvist",
    "Novák",
    "Schröder",
    "Fernández",
    "Haddad",
    "Kim",
    "Łukasiewicz",
    "Smith",
    "Brown",
    "Khan",
    "Ivanova",
    "Moreau",
    "Yamada",
];
const COMPANIES: &[&str] = &[
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Wingtip",
    "Litware",
    "Proseware",
    "Adatum",
];
const ROLES: &[&str] = &[
    "Senior Rust Engineer",
    "Staff Backend Engineer",
    "Platform Engineer",
    "Engineering Manager",
    "Site Reliability Engineer",
    "Product Designer",
    "Data Engineer",
    "Frontend Engineer",
];
const SUBJECTS: &[&str] = &[
    "{role} role at {company}",
    "Your application for {role}",
    "Interview availability next week",
    "Quick question about the {role} position",
    "Coffee chat about {company}?",
    "Next steps: {role} interview loop",
    "Offer details for {role}",
    "Take-home exercise for {role}",
    "Referral: {name} for {role}",
    "Following up on our call",
];
const OTHER_SUBJECTS: &[&str] = &[
    "Weekly hiring digest",
    "Hiring sync notes",
    "Headcount plan for Q{q}",
    "Job board invoice #{num}",
    "Debrief: {role} panel",
    "Sourcing list for {role}",
    "Meetup: recruiting in {company} land",
];
const OPENERS: &[&str] = &[
    "Thanks for getting back to me.",
    "Hope your week is going well.",
    "Great speaking with you earlier.",
    "Following up on my last note.",
    "I came across your profile and wanted to reach out.",
    "Tuesday works for me — how about 10:30?",
    "Attached is the information we discussed.",
    "Could we move our call to Thursday afternoon?",
];
const MIDDLES: &[&str] = &[
    "The team is growing and the {role} position is still open.",
    "The interview loop has three conversations of about 45 minutes each.",
    "Compensation for the {role} role is competitive and includes equity.",
    "I would love to hear what you are looking for in your next role.",
    "Please let me know which times suit you best.",
    "I have shared your profile with the hiring manager at {company}.",
    "The take-home exercise should take no more than two hours.",
];
const CLOSERS: &[&str] = &[
    "Best regards,",
    "Thanks,",
    "Cheers,",
    "Kind regards,",
    "All the best,",
];

/// Japanese phrases in hiragana and katakana only, so ISO-2022-JP encoding needs no kanji tables.
const JA_SUBJECT: &str = "メンセツのごあんない";
const JA_BODY: &[&str] = &[
    "はじめまして。エンジニアのたなかです。",
    "メンセツのにっていについて、ごれんらくありがとうございます。",
    "よろしくおねがいします。",
];
const JA_NAME: &str = "タナカ ユキ";

#[derive(Clone, Copy, PartialEq)]
enum Charset {
    Utf8,
    Latin1,
    Cp1252,
    Iso2022Jp,
}

impl Charset {
    fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Cp1252 => "windows-1252",
            Charset::Iso2022Jp => "ISO-2022-JP",
        }
    }
}

/// Encodes text to ISO-8859-1 (`?` for characters outside it).
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| if (c as u32) < 256 { c as u8 } else { b'?' })
        .collect()
}

/// Encodes text to Windows-1252 (the C1 range holds curly quotes, dashes and the euro sign).
fn cp1252(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            '€' => 0x80,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '–' => 0x96,
            '—' => 0x97,
            c if (c as u32) < 0x80 || (0xA0..0x100).contains(&(c as u32)) => c as u8,
            _ => b'?',
        })
        .collect()
}

/// Encodes ASCII, hiragana, katakana and a little JIS punctuation to ISO-2022-JP (RFC 1468).
pub fn iso2022jp(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 2);
    let mut jis = false;
    for c in s.chars() {
        let u = c as u32;
        let pair = match u {
            0x3041..=0x3093 => Some((0x24, (u - 0x3041 + 0x21) as u8)),
            0x30A1..=0x30F6 => Some((0x25, (u - 0x30A1 + 0x21) as u8)),
            0x3000 => Some((0x21, 0x21)),
            0x3001 => Some((0x21, 0x22)),
            0x3002 => Some((0x21, 0x23)),
            0x30FC => Some((0x21, 0x3C)),
            _ => None,
        };
        match pair {
            Some((a, b)) => {
                if !jis {
                    out.extend_from_slice(b"\x1b$B");
                    jis = true;
                }
                out.push(a);
                out.push(b);
            }
            None => {
                if jis {
                    out.extend_from_slice(b"\x1b(B");
                    jis = false;
                }
                out.push(if u < 0x80 { u as u8 } else { b'?' });
            }
        }
    }
    if jis {
        out.extend_from_slice(b"\x1b(B");
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) of `bytes`, whose lines are separated by `\n`; output lines end in CRLF.
pub fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let mut col = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
    }
    out
}

/// An RFC 2047 encoded word (`B` encoding) of already-encoded charset bytes.
fn encoded_word_b(charset: &str, bytes: &[u8]) -> String {
    format!("=?{charset}?B?{}?=", STANDARD.encode(bytes))
}

/// An RFC 2047 `Q` encoded word for a display name.
fn encoded_word_q(charset: &str, bytes: &[u8]) -> String {
    let mut s = format!("=?{charset}?Q?");
    for &b in bytes {
        match b {
            b' ' => s.push('_'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => s.push(b as char),
            _ => s.push_str(&format!("={b:02X}")),
        }
    }
    s.push_str("?=");
    s
}

/// A display name as a header phrase: plain, quoted, or RFC 2047 encoded when not ASCII.
fn phrase(name: &str, charset: Charset, rng_q: bool) -> String {
    if name.is_ascii() {
        if name.chars().any(|c| ",.;:<>@\"'()[]\\".contains(c)) {
            format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            name.to_string()
        }
    } else {
        match charset {
            Charset::Iso2022Jp => encoded_word_b("ISO-2022-JP", &iso2022jp(name)),
            Charset::Latin1 if name.chars().all(|c| (c as u32) < 256) => {
                encoded_word_q("ISO-8859-1", &latin1(name))
            }
            _ if rng_q => encoded_word_q("UTF-8", name.as_bytes()),
            _ => encoded_word_b("UTF-8", name.as_bytes()),
        }
    }
}

fn mailbox_header(name: &str, addr: &str, charset: Charset, q: bool) -> String {
    format!("{} <{addr}>", phrase(name, charset, q))
}

/// `Sat, 1 Mar 2025 09:58:09 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Clone)]
struct Person {
    name: String,
    addr: String,
}

fn name_for(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(FIRST), rng.pick(LAST))
}

fn fill(t: &str, role: &str, company: &str, name: &str, rng: &mut Rng) -> String {
    t.replace("{role}", role)
        .replace("{company}", company)
        .replace("{name}", name)
        .replace("{q}", &(1 + rng.below(4)).to_string())
        .replace("{num}", &(1000 + rng.below(9000)).to_string())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn b64_lines(bytes: &[u8], out: &mut Vec<u8>) {
    let enc = STANDARD.encode(bytes);
    for chunk in enc.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
}

struct Attachment {
    filename_header: String,
    mime: &'static str,
    bytes: Vec<u8>,
}

fn attachment(rng: &mut Rng, candidate_name: &str) -> Attachment {
    let size = 200 + rng.below(2800) as usize;
    let mut bytes = Vec::with_capacity(size);
    let (name, mime, magic): (String, &'static str, &[u8]) = match rng.below(4) {
        0 => ("resume.pdf".into(), "application/pdf", b"%PDF-1.4\n"),
        1 => ("portfolio.png".into(), "image/png", b"\x89PNG\r\n\x1a\n"),
        2 => (
            "references.docx".into(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            b"PK\x03\x04",
        ),
        _ => {
            let surname = candidate_name.split(' ').next_back().unwrap_or("Kandidat");
            (
                format!("Lebenslauf – {surname}.pdf"),
                "application/pdf",
                b"%PDF-1.7\n",
            )
        }
    };
    bytes.extend_from_slice(magic);
    while bytes.len() < size {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(size);
    let filename_header = if name.is_ascii() {
        format!("filename=\"{name}\"")
    } else {
        // RFC 2231 extended parameter, as many clients send non-ASCII file names.
        let mut enc = String::new();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        format!("filename*=UTF-8''{enc}")
    };
    Attachment {
        filename_header,
        mime,
        bytes,
    }
}

struct Draft<'a> {
    from: &'a Person,
    to: &'a Person,
    cc: Option<&'a Person>,
    subject: &'a str,
    date: i64,
    message_id: &'a str,
    parents: &'a [String],
    charset: Charset,
    q_names: bool,
    lines: Vec<String>,
    html: bool,
    attachments: Vec<Attachment>,
    boundary_seed: u64,
}

fn body_bytes(charset: Charset, text: &str) -> (Vec<u8>, &'static str) {
    match charset {
        Charset::Utf8 => (quoted_printable(text.as_bytes()), "quoted-printable"),
        Charset::Latin1 => (quoted_printable(&latin1(text)), "quoted-printable"),
        Charset::Cp1252 => (quoted_printable(&cp1252(text)), "quoted-printable"),
        Charset::Iso2022Jp => {
            let mut b = Vec::new();
            for (i, l) in text.split('\n').enumerate() {
                if i > 0 {
                    b.extend_from_slice(b"\r\n");
                }
                b.extend_from_slice(&iso2022jp(l));
            }
            (b, "7bit")
        }
    }
}

fn render(d: &Draft<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut h = |k: &str, v: &str| {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    h("MIME-Version", "1.0");
    h("Date", &rfc5322_date(d.date));
    h("Message-ID", d.message_id);
    if let Some(p) = d.parents.last() {
        h("In-Reply-To", p);
        h("References", &d.parents.join("\r\n "));
    }
    let subject = if d.subject.is_ascii() {
        d.subject.to_string()
    } else if d.charset == Charset::Iso2022Jp {
        encoded_word_b("ISO-2022-JP", &iso2022jp(d.subject))
    } else {
        encoded_word_b("UTF-8", d.subject.as_bytes())
    };
    h("Subject", &subject);
    h(
        "From",
        &mailbox_header(&d.from.name, &d.from.addr, d.charset, d.q_names),
    );
    h(
        "To",
        &mailbox_header(&d.to.name, &d.to.addr, d.charset, d.q_names),
    );
    if let Some(cc) = d.cc {
        h(
            "Cc",
            &mailbox_header(&cc.name, &cc.addr, d.charset, d.q_names),
        );
    }
    let text = d.lines.join("\n");
    let (text_bytes, cte) = body_bytes(d.charset, &text);
    let text_part = |out: &mut Vec<u8>| {
        out.extend_from_slice(
            format!(
                "Content-Type: text/plain; charset=\"{}\"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n",
                d.charset.name()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&text_bytes);
        out.extend_from_slice(b"\r\n");
    };
    let alt_boundary = format!("000000000000{:016x}a", d.boundary_seed);
    let mix_boundary = format!("000000000000{:016x}m", d.boundary_seed);
    let body = |out: &mut Vec<u8>| {
        if d.html {
            out.extend_from_slice(
                format!("Content-Type: multipart/alternative; boundary=\"{alt_boundary}\"\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(format!("--{alt_boundary}\r\n").as_bytes());
            text_part(out);
            out.extend_from_slice(format!("--{alt_boundary}\r\n").as_bytes());
            let mut html = String::from("<html><body>");
            for l in &d.lines {
                if l.is_empty() {
                    continue;
                }
                html.push_str("<p>");
                html.push_str(&html_escape(l));
                html.push_str("</p>");
            }
            html.push_str("</body></html>");
            out.extend_from_slice(
                b"Content-Type: text/html; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            );
            out.extend_from_slice(&quoted_printable(html.as_bytes()));
            out.extend_from_slice(format!("\r\n--{alt_boundary}--\r\n").as_bytes());
        } else {
            text_part(out);
        }
    };
    if d.attachments.is_empty() {
        body(&mut out);
    } else {
        out.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"{mix_boundary}\"\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(format!("--{mix_boundary}\r\n").as_bytes());
        body(&mut out);
        for a in &d.attachments {
            out.extend_from_slice(format!("--{mix_boundary}\r\n").as_bytes());
            out.extend_from_slice(
                format!(
                    "Content-Type: {}\r\nContent-Disposition: attachment; {}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                    a.mime, a.filename_header
                )
                .as_bytes(),
            );
            b64_lines(&a.bytes, &mut out);
        }
        out.extend_from_slice(format!("--{mix_boundary}--\r\n").as_bytes());
    }
    out
}

/// Generates `spec.n` messages, sorted by received time.
pub fn generate(spec: &GenerateSpec) -> Vec<GeneratedMessage> {
    let mut rng = Rng::new(spec.seed);
    let owner = Person {
        name: spec.owner_name.clone(),
        addr: spec.owner.to_ascii_lowercase(),
    };
    let owner_domain = owner
        .addr
        .split_once('@')
        .map_or("example.com", |(_, d)| d)
        .to_string();
    let candidates: Vec<Person> = spec
        .candidates
        .iter()
        .map(|a| {
            let mut r = Rng::new(a.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }));
            Person {
                name: name_for(&mut r),
                addr: a.trim().to_ascii_lowercase(),
            }
        })
        .collect();
    let mut others: Vec<Person> = (0..24)
        .map(|i| {
            let name = name_for(&mut rng);
            let first = name
                .split(' ')
                .next()
                .unwrap_or("x")
                .chars()
                .filter(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_ascii_lowercase();
            let addr = if i % 3 == 0 {
                format!("{first}.{i}@{owner_domain}")
            } else {
                format!(
                    "{first}{i}@{}.example",
                    rng.pick(COMPANIES).to_ascii_lowercase()
                )
            };
            Person { name, addr }
        })
        .collect();
    others.push(Person {
        name: "Job Board".into(),
        addr: "noreply@jobboard.example".into(),
    });
    let span = (spec.end - spec.start).max(3600);
    let share = spec.candidate_share.clamp(0.0, 1.0);
    let mut out: Vec<GeneratedMessage> = Vec::with_capacity(spec.n);
    let mut cand_msgs = 0usize;
    let mut seq = 0u64;
    while out.len() < spec.n {
        let is_cand =
            !candidates.is_empty() && share > 0.0 && (cand_msgs as f64) <= share * out.len() as f64;
        let other = if is_cand {
            rng.pick(&candidates).clone()
        } else {
            rng.pick(&others).clone()
        };
        let len = match rng.below(100) {
            0..45 => 1,
            45..70 => 2,
            70..85 => 3,
            _ => 4 + rng.below(3) as usize,
        }
        .min(spec.n - out.len());
        let role = *rng.pick(ROLES);
        let company = *rng.pick(COMPANIES);
        let charset = match rng.below(100) {
            0..8 => Charset::Latin1,
            8..14 => Charset::Cp1252,
            14..18 => Charset::Iso2022Jp,
            _ => Charset::Utf8,
        };
        let mut other = other;
        if charset == Charset::Iso2022Jp && !is_cand {
            other.name = JA_NAME.into();
        }
        let base_subject = if charset == Charset::Iso2022Jp {
            JA_SUBJECT.to_string()
        } else if is_cand || rng.chance(0.5) {
            fill(
                rng.pick::<&str>(SUBJECTS),
                role,
                company,
                &other.name,
                &mut rng,
            )
        } else {
            fill(
                rng.pick::<&str>(OTHER_SUBJECTS),
                role,
                company,
                &other.name,
                &mut rng,
            )
        };
        let q_names = rng.chance(0.5);
        let mut t = spec.start + rng.below(span as u64) as i64;
        let mut inbound = rng.chance(0.7);
        let mut parents: Vec<String> = Vec::new();
        let mut previous_line: Option<String> = None;
        for i in 0..len {
            if i > 0 {
                t += 600 + rng.below(3 * 86_400) as i64;
                if rng.chance(0.85) {
                    inbound = !inbound;
                }
            }
            let date = t.min(spec.end);
            seq += 1;
            let (from, to) = if inbound {
                (&other, &owner)
            } else {
                (&owner, &other)
            };
            let cc = if rng.chance(0.1) {
                Some(rng.pick(&others[..others.len() - 1]).clone())
            } else {
                None
            };
            let sender_domain = from.addr.split_once('@').map_or("mail.example", |(_, d)| d);
            let message_id = format!("<{:016x}.{seq}@{sender_domain}>", rng.next_u64());
            let subject = if i == 0 {
                base_subject.clone()
            } else {
                format!("Re: {base_subject}")
            };
            let mut lines: Vec<String> = Vec::new();
            let first_name = to.name.split(' ').next().unwrap_or("there");
            if charset == Charset::Iso2022Jp {
                lines.extend(JA_BODY.iter().map(|s| s.to_string()));
            } else {
                lines.push(format!("Hi {first_name},"));
                lines.push(String::new());
                lines.push(rng.pick(OPENERS).to_string());
                lines.push(fill(
                    rng.pick::<&str>(MIDDLES),
                    role,
                    company,
                    &other.name,
                    &mut rng,
                ));
                match charset {
                    Charset::Latin1 => {
                        lines.push("Merci beaucoup — ça me convient très bien.".replace('—', "-"))
                    }
                    Charset::Cp1252 => {
                        lines.push("That sounds “great” – the €120k range works for me…".into())
                    }
                    _ => {}
                }
                lines.push(String::new());
                lines.push(rng.pick(CLOSERS).to_string());
                lines.push(from.name.clone());
            }
            if let Some(prev) = &previous_line {
                lines.push(String::new());
                lines.push(format!("On {}, wrote:", rfc5322_date(date - 3600)));
                lines.push(format!("> {prev}"));
            }
            previous_line = lines.iter().find(|l| l.len() > 20).cloned();
            let attachments = if rng.chance(if inbound { 0.14 } else { 0.06 }) {
                (0..1 + rng.below(2))
                    .map(|_| attachment(&mut rng, &other.name))
                    .collect()
            } else {
                Vec::new()
            };
            let draft = Draft {
                from,
                to,
                cc: cc.as_ref(),
                subject: &subject,
                date,
                message_id: &message_id,
                parents: &parents,
                charset,
                q_names,
                lines,
                html: charset == Charset::Utf8 && rng.chance(0.8),
                attachments,
                boundary_seed: rng.next_u64(),
            };
            let raw = render(&draft);
            let has_attachments = !draft.attachments.is_empty();
            drop(draft);
            let mut recipients = vec![to.addr.clone()];
            if let Some(c) = &cc {
                recipients.push(c.addr.clone());
            }
            let meta = MessageMeta {
                message_id: message_id.clone(),
                parents: parents.iter().rev().cloned().collect(),
                from: from.addr.clone(),
                recipients,
                subject,
                sent_ms: date * 1000,
                has_attachments,
            };
            let received_ms = if inbound {
                (date + 1 + rng.below(20) as i64) * 1000 + rng.below(1000) as i64
            } else {
                date * 1000
            };
            let folder = if !inbound {
                "sentitems"
            } else if rng.chance(0.15) {
                "archive"
            } else {
                "inbox"
            };
            if is_cand {
                cand_msgs += 1;
            }
            out.push(GeneratedMessage {
                raw,
                received_ms,
                folder,
                is_read: !inbound || rng.chance(0.8),
                meta,
            });
            parents.push(message_id);
        }
    }
    out.sort_by_key(|m| m.received_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc_5322() {
        assert_eq!(
            rfc5322_date(1_740_823_089),
            "Sat, 1 Mar 2025 09:58:09 +0000"
        );
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn iso_2022_jp_switches_in_and_out_of_jis() {
        assert_eq!(iso2022jp("aこんb"), b"a\x1b$B$3$s\x1b(Bb".to_vec());
    }

    #[test]
    fn quoted_printable_escapes_and_wraps() {
        let q = quoted_printable("caf\u{e9} = ok ".as_bytes());
        assert_eq!(q, b"caf=C3=A9 =3D ok=20".to_vec());
        let long = quoted_printable(&[b'a'; 100]);
        assert!(long.split(|b| *b == b'\n').all(|l| l.len() <= 77));
    }
}
