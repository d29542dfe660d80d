//! Demo data: one organization with an admin, two recruiters and about twenty
//! candidates with InMail history. Seeded once; later starts reuse it.

use std::path::Path;

use hirewire_domain::email::{EmailAddress, MailDomain};
use hirewire_store::{Direction, NewInMail, NewUser, Role, Store};
use jiff::{SignedDuration, Timestamp};

use crate::crypto::{PasswordCost, random_token};

pub const DEMO_ORG: &str = "Acme Talent";

/// A demo account, for printing.
pub struct Credential {
    pub email: String,
    pub password: String,
    pub role: Role,
}

const PEOPLE: &[(&str, &str, Role)] = &[
    ("Avery Admin", "admin@acme.example", Role::Admin),
    ("Riley Recruiter", "riley@acme.example", Role::Recruiter),
    ("Sam Sourcer", "sam@acme.example", Role::Recruiter),
];

const CANDIDATES: &[(&str, &[&str])] = &[
    (
        "Élodie Durand",
        &["elodie.durand@example.org", "e.durand@mailbox.example"],
    ),
    ("Kwame Mensah", &["kwame.mensah@example.com"]),
    ("Priya Raman", &["priya.raman@example.net"]),
    ("Jonas Weber", &["jonas.weber@example.de"]),
    (
        "Mei Chen",
        &["mei.chen@example.com", "meichen.dev@example.org"],
    ),
    ("Lucas Oliveira", &["lucas.oliveira@example.com.br"]),
    ("Aisha Khan", &["aisha.khan@example.co.uk"]),
    ("Mateo García", &["mateo.garcia@example.es"]),
    ("Hana Sato", &["hana.sato@example.jp"]),
    ("Noah Johnson", &["noah.johnson@example.com"]),
    ("Zeynep Yılmaz", &["zeynep.yilmaz@example.com.tr"]),
    ("Olivia Brown", &["olivia.brown@example.com"]),
    ("Chidi Okafor", &["chidi.okafor@example.ng"]),
    ("Sofia Rossi", &["sofia.rossi@example.it"]),
    ("Lars Nilsson", &["lars.nilsson@example.se"]),
    ("Fatima Zahra", &["fatima.zahra@example.ma"]),
    ("Diego Fernández", &["diego.fernandez@example.mx"]),
    ("Anna Kowalska", &["anna.kowalska@example.pl"]),
    ("Ethan Nguyen", &["ethan.nguyen@example.com"]),
    ("Ines Dubois", &["ines.dubois@example.fr"]),
];

const THREAD: &[(Direction, &str)] = &[
    (
        Direction::Outbound,
        "Hi {first}, I came across your profile and think you'd be a great fit for our Senior Engineer role. Open to a chat?",
    ),
    (
        Direction::Inbound,
        "Thanks for reaching out! Yes, I'd be happy to learn more. What does the team work on?",
    ),
    (
        Direction::Outbound,
        "Great to hear. The team builds our scheduling platform. Would a 30-minute call next week work?",
    ),
];

/// Seeds the demo organization if it does not exist. Returns the credentials
/// (read back from `credentials_file` on later starts).
pub async fn seed(
    store: &Store,
    credentials_file: &Path,
    cost: PasswordCost,
    now: Timestamp,
) -> anyhow::Result<Vec<Credential>> {
    if store.org_by_name(DEMO_ORG).await?.is_some() {
        return read_credentials(credentials_file);
    }
    let domain = MailDomain::parse("acme.example").map_err(anyhow::Error::msg)?;
    let org = store.create_org(DEMO_ORG, &[domain], now).await?;
    let mut creds = Vec::new();
    let mut authors = Vec::new();
    for (name, email, role) in PEOPLE {
        let password = random_token()[..16].to_owned();
        let email_addr = EmailAddress::parse(email).map_err(anyhow::Error::msg)?;
        let hash = cost.hash(&password);
        let user = store
            .create_user(
                &NewUser {
                    org_id: org.id,
                    email: &email_addr,
                    display_name: name,
                    role: *role,
                    time_zone: "Europe/Berlin",
                    password_hash: Some(&hash),
                },
                now,
            )
            .await?;
        authors.push(user.id);
        creds.push(Credential {
            email: (*email).to_owned(),
            password,
            role: *role,
        });
    }
    for (i, (name, emails)) in CANDIDATES.iter().enumerate() {
        let emails: Vec<EmailAddress> = emails
            .iter()
            .map(|e| EmailAddress::parse(e))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let created = now - SignedDuration::from_hours(24 * (40 - i as i64));
        let c = store
            .create_candidate(org.id, name, &emails, created)
            .await?;
        let first = name.split_whitespace().next().unwrap_or(name);
        let replies = 1 + i % THREAD.len();
        for (j, (direction, text)) in THREAD.iter().take(replies).enumerate() {
            let sent_at = created + SignedDuration::from_hours(5 * j as i64 + 1);
            let body = text.replace("{first}", first);
            let new = NewInMail {
                candidate_id: c.id,
                author_user_id: (*direction == Direction::Outbound).then_some(authors[1 + i % 2]),
                direction: *direction,
                body: &body,
                sent_at,
            };
            store.create_inmail(org.id, &new, sent_at).await?;
        }
    }
    write_credentials(credentials_file, &creds)?;
    Ok(creds)
}

fn write_credentials(path: &Path, creds: &[Credential]) -> anyhow::Result<()> {
    let mut text = String::from("# hirewire demo accounts (local demo only)\n");
    for c in creds {
        text.push_str(&format!("{} {} {}\n", c.role, c.email, c.password));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    std::io::Write::write_all(&mut opts.open(path)?, text.as_bytes())?;
    Ok(())
}

fn read_credentials(path: &Path) -> anyhow::Result<Vec<Credential>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(' ');
            let role = it.next()?.parse().ok()?;
            Some(Credential {
                role,
                email: it.next()?.to_owned(),
                password: it.next()?.to_owned(),
            })
        })
        .collect())
}
