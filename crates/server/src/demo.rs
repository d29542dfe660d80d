//! Demo data: one organization with an admin, two recruiters and about twenty
//! candidates with InMail history. Seeded once; later starts reuse it.

use std::path::Path;

use hirewire_domain::email::{EmailAddress, MailDomain};
use hirewire_store::{
    AccessLevelSetting, ConsentState, Direction, NewInMail, NewUser, ProviderChoice,
    ProviderSettings, Role, Store,
};
use jiff::{SignedDuration, Timestamp};

use crate::crypto::{Keyring, PasswordCost, random_token};

pub const DEMO_ORG: &str = "Acme Talent";
/// The second demo organization, on Google Workspace.
pub const DEMO_ORG_GOOGLE: &str = "Globex Hiring";

/// The provider apps the demo organizations use (the sandbox's built-in clients).
pub struct DemoApps {
    pub microsoft: (String, String),
    /// Microsoft tenant of Acme Talent.
    pub microsoft_tenant: String,
    pub google: (String, String),
}

/// A demo account, for printing.
pub struct Credential {
    pub org: String,
    pub email: String,
    pub password: String,
    pub role: Role,
}

const PEOPLE: &[(&str, &str, Role)] = &[
    ("Avery Admin", "admin@acme.example", Role::Admin),
    ("Riley Recruiter", "riley@acme.example", Role::Recruiter),
    ("Sam Sourcer", "sam@acme.example", Role::Recruiter),
];

/// Globex Hiring's people match the sandbox's Google Workspace accounts.
const GLOBEX_PEOPLE: &[(&str, &str, Role)] = &[
    ("Hank Scorpio", "hank@globex.example", Role::Admin),
    ("Mindy Simmons", "mindy@globex.example", Role::Recruiter),
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
    keyring: &Keyring,
    apps: &DemoApps,
    credentials_file: &Path,
    cost: PasswordCost,
    now: Timestamp,
) -> anyhow::Result<Vec<Credential>> {
    if store.org_by_name(DEMO_ORG).await?.is_some() {
        return read_credentials(credentials_file);
    }
    let domain = MailDomain::parse("acme.example").map_err(anyhow::Error::msg)?;
    let org = store.create_org(DEMO_ORG, &[domain], now).await?;
    let (creds_acme, authors) = people(store, org.id, DEMO_ORG, PEOPLE, cost, now).await?;
    let mut creds = creds_acme;
    let globex_domain = MailDomain::parse("globex.example").map_err(anyhow::Error::msg)?;
    let globex = store
        .create_org(DEMO_ORG_GOOGLE, &[globex_domain], now)
        .await?;
    creds.extend(
        people(store, globex.id, DEMO_ORG_GOOGLE, GLOBEX_PEOPLE, cost, now)
            .await?
            .0,
    );
    let provider = |org_id, provider, (id, secret): &(String, String), tenant: Option<&str>| {
        ProviderSettings {
            org_id,
            provider,
            client_id: id.clone(),
            client_secret_sealed: Some(keyring.seal(secret.as_bytes())),
            tenant: tenant.map(str::to_owned),
            access_level: AccessLevelSetting::SendAndView,
            consent_state: ConsentState::Unknown,
            consent_by: None,
            consent_at: None,
            consent_detail: None,
            purge_on_deauthorize: false,
            updated_at: now,
        }
    };
    store
        .save_provider_settings(&provider(
            org.id,
            ProviderChoice::Microsoft,
            &apps.microsoft,
            Some(&apps.microsoft_tenant),
        ))
        .await?;
    store
        .save_provider_settings(&provider(
            globex.id,
            ProviderChoice::Google,
            &apps.google,
            None,
        ))
        .await?;
    seed_candidates(store, org.id, &authors, now).await?;
    write_credentials(credentials_file, &creds)?;
    Ok(creds)
}

async fn people(
    store: &Store,
    org: hirewire_domain::ids::OrgId,
    org_name: &str,
    list: &[(&str, &str, Role)],
    cost: PasswordCost,
    now: Timestamp,
) -> anyhow::Result<(Vec<Credential>, Vec<hirewire_domain::ids::UserId>)> {
    let mut creds = Vec::new();
    let mut authors = Vec::new();
    for (name, email, role) in list {
        let password = random_token()[..16].to_owned();
        let email_addr = EmailAddress::parse(email).map_err(anyhow::Error::msg)?;
        let hash = cost.hash(&password);
        let user = store
            .create_user(
                &NewUser {
                    org_id: org,
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
            org: org_name.to_owned(),
            email: (*email).to_owned(),
            password,
            role: *role,
        });
    }
    Ok((creds, authors))
}

async fn seed_candidates(
    store: &Store,
    org: hirewire_domain::ids::OrgId,
    authors: &[hirewire_domain::ids::UserId],
    now: Timestamp,
) -> anyhow::Result<()> {
    for (i, (name, emails)) in CANDIDATES.iter().enumerate() {
        let emails: Vec<EmailAddress> = emails
            .iter()
            .map(|e| EmailAddress::parse(e))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let created = now - SignedDuration::from_hours(24 * (40 - i as i64));
        let c = store.create_candidate(org, name, &emails, created).await?;
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
            store.create_inmail(org, &new, sent_at).await?;
        }
    }
    Ok(())
}

fn write_credentials(path: &Path, creds: &[Credential]) -> anyhow::Result<()> {
    let mut text = String::from("# hirewire demo accounts (local demo only)\n");
    for c in creds {
        text.push_str(&format!(
            "{} {} {} {}\n",
            c.role, c.email, c.password, c.org
        ));
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
            let email = it.next()?.to_owned();
            let password = it.next()?.to_owned();
            let org = it.collect::<Vec<_>>().join(" ");
            Some(Credential {
                org,
                role,
                email,
                password,
            })
        })
        .collect())
}
