//! The `hirewire` command: parses flags and environment, then wires the crates.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hirewire_server::{AppState, Config, Keyring, PasswordCost, SystemClock, demo, users};
use hirewire_store::{Role, Store, StoreConfig};
use tokio::net::TcpListener;
use url::Url;

mod outbox_args;

/// hirewire connects a recruiting workspace to each recruiter's work email and
/// calendar on Microsoft 365 or Google Workspace.
#[derive(Parser, Debug)]
#[command(name = "hirewire", version, about, long_about = None)]
struct Cli {
    /// Where the SQLite database and the secrets key live.
    #[arg(
        long,
        global = true,
        env = "HIREWIRE_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// Use PostgreSQL instead of SQLite, e.g. postgres://user@host:5432/db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "HIREWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Run a self-contained demo: SQLite and a generated key in ./demo-data, seeded with sample data.
    Demo(DemoArgs),
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the provider sandbox: a local stand-in for Microsoft 365 and Google Workspace.
    Sandbox(SandboxArgs),
    /// Manage the secrets key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Import grants made by other integrations.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Feature flags: who has Email Connect (the operator's tool; every organization).
    #[command(subcommand)]
    Flags(FlagsCommand),
}

#[derive(Subcommand, Debug)]
enum FlagsCommand {
    /// Show a flag: its mode, percentage, organizations and users.
    Show {
        #[arg(value_enum, default_value_t = FlagArg::EmailConnect)]
        flag: FlagArg,
    },
    /// Change a flag. Changes are audited (actor "cli"); running servers see them within their flag cache TTL.
    Set(FlagSetArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum FlagArg {
    EmailConnect,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").args(["everyone", "off", "percent"])))]
struct FlagSetArgs {
    #[arg(value_enum)]
    flag: FlagArg,
    /// On for everyone (but opted-out organizations).
    #[arg(long)]
    everyone: bool,
    /// Off for everyone: nobody can send, queued emails are held (the lists are kept for later).
    #[arg(long)]
    off: bool,
    /// Roll out to this share of users (stable per user), plus opted-in organizations and allowlisted users.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    percent: Option<u8>,
    /// Opt an organization in (by name): all its users get it.
    #[arg(long, value_name = "ORG")]
    add_org: Vec<String>,
    /// Opt an organization out (by name): only its allowlisted users get it.
    #[arg(long, value_name = "ORG")]
    exclude_org: Vec<String>,
    /// Clear an organization's opt-in or opt-out (by name).
    #[arg(long, value_name = "ORG")]
    remove_org: Vec<String>,
    /// Allowlist a user (by email).
    #[arg(long, value_name = "EMAIL")]
    add_user: Vec<String>,
    /// Take a user off the allowlist (by email).
    #[arg(long, value_name = "EMAIL")]
    remove_user: Vec<String>,
    /// Go ahead even when scheduled emails will be held.
    #[arg(long)]
    yes: bool,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Add a new current key and re-encrypt every stored secret with it (old keys stay, to open backups).
    Rotate {
        /// The secrets key file. Default: DATA_DIR/secrets.key.
        #[arg(long, env = "HIREWIRE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImportCommand {
    /// Import a calendar-only grant from the older scheduling integration; it shows as legacy with a one-click Reauthorize.
    LegacySchedulerGrant {
        /// The recruiter's hirewire email.
        #[arg(long)]
        user: String,
        /// microsoft or google.
        #[arg(long, value_enum)]
        provider: ProviderArg,
        /// Read the refresh token from standard input (first line).
        #[arg(long, required = true)]
        refresh_token_stdin: bool,
        /// The scopes the old grant was made with (space-separated).
        #[arg(long)]
        scopes: String,
        /// The calendar account's address, if it differs from the user's email.
        #[arg(long)]
        address: Option<String>,
        /// The secrets key file. Default: DATA_DIR/secrets.key.
        #[arg(long, env = "HIREWIRE_SECRETS_KEY_FILE")]
        secrets_key_file: Option<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum ProviderArg {
    Microsoft,
    Google,
}

#[derive(Args, Debug)]
struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, env = "HIREWIRE_SANDBOX_LISTEN", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "HIREWIRE_SANDBOX_PORT", default_value_t = 8081)]
    port: u16,
    /// Scenario file (JSON, see docs/sandbox.md); a built-in scenario when absent.
    #[arg(long, env = "HIREWIRE_SANDBOX_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Keep the sandbox's state (grants, tokens) here across restarts; memory only when absent.
    #[arg(long, env = "HIREWIRE_SANDBOX_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HIREWIRE_LISTEN", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "HIREWIRE_PORT", default_value_t = 8080)]
    port: u16,
    /// The external base URL (links, OAuth redirect URIs, cookies). Default: http://LISTEN:PORT.
    #[arg(long, env = "HIREWIRE_PUBLIC_URL")]
    public_url: Option<Url>,
    /// Honour X-Forwarded-For (only behind a reverse proxy you control).
    #[arg(long, env = "HIREWIRE_TRUST_PROXY")]
    trust_proxy: bool,
    /// The secrets key file. Default: DATA_DIR/secrets.key.
    #[arg(long, env = "HIREWIRE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Create the secrets key file (mode 0600) if it does not exist.
    #[arg(long, env = "HIREWIRE_GENERATE_KEY")]
    generate_key: bool,
    /// Hours a sign-in lasts.
    #[arg(long, env = "HIREWIRE_SESSION_TTL_HOURS", default_value_t = 168)]
    session_ttl_hours: u64,
    /// Sign-in attempts allowed per account per 15 minutes.
    #[arg(long, env = "HIREWIRE_SIGN_IN_PER_ACCOUNT", default_value_t = 10)]
    sign_in_per_account: u32,
    /// Sign-in attempts allowed per client address per 15 minutes.
    #[arg(long, env = "HIREWIRE_SIGN_IN_PER_CLIENT", default_value_t = 50)]
    sign_in_per_client: u32,
    /// Serve every provider host (Microsoft identity, Graph, Google OAuth, Gmail, Calendar) from this one base
    /// URL, at their real paths: for a `hirewire sandbox`. Default: the real services.
    #[arg(long, env = "HIREWIRE_PROVIDER_BASE_URL")]
    provider_base_url: Option<Url>,
    /// Mail sync workers in this instance (0: this instance does not sync mailboxes).
    #[arg(long, env = "HIREWIRE_SYNC_WORKERS", default_value_t = 2)]
    sync_workers: usize,
    /// Seconds between incremental mail syncs of a mailbox.
    #[arg(long, env = "HIREWIRE_SYNC_INTERVAL_SECS", default_value_t = 60)]
    sync_interval_secs: u64,
    /// Days of mail the first sync of a mailbox reads back.
    #[arg(long, env = "HIREWIRE_SYNC_WINDOW_DAYS", default_value_t = 365)]
    sync_window_days: u32,
    /// Messages listed per page while a mailbox's history is read (each page is stored with its cursor).
    #[arg(long, env = "HIREWIRE_SYNC_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    sync_page_size: u32,
    /// Provider requests one mailbox's sync step keeps in flight while it fetches a page's messages (the pacer's
    /// per-mailbox limits still apply).
    #[arg(long, env = "HIREWIRE_SYNC_FETCH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    sync_fetch_concurrency: u64,
    /// Seconds a worker holds a mailbox's sync step before another instance may take it over (a crashed
    /// instance's mailboxes resume after this).
    #[arg(long, env = "HIREWIRE_SYNC_LEASE_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    sync_lease_secs: u64,
    /// Gmail quota-unit prices: `legacy` (projects created before 2026-05-01: 15,000 units/min per user) or
    /// `2026` (6,000 units/min per user, dearer gets). The pacer keeps every mailbox under its quota.
    #[arg(long, env = "HIREWIRE_GMAIL_COST_MODEL", default_value = "legacy", value_parser = ["legacy", "2026"])]
    gmail_cost_model: String,
    /// Graph requests in flight at once per mailbox (Outlook allows 4).
    #[arg(long, env = "HIREWIRE_GRAPH_MAX_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=4))]
    graph_max_concurrency: u64,
    /// Longest lifetime asked of Graph for a push subscription, in minutes (4,230 in the older docs, 10,080 in
    /// newer ones).
    #[arg(long, env = "HIREWIRE_PUSH_GRAPH_MAX_LIFETIME_MINS", default_value_t = 4230, value_parser = clap::value_parser!(u64).range(60..=10080))]
    push_graph_max_lifetime_mins: u64,
    /// A push subscription is renewed when it expires within this many hours.
    #[arg(long, env = "HIREWIRE_PUSH_RENEW_BEFORE_HOURS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..))]
    push_renew_before_hours: u64,
    /// The Pub/Sub topic Gmail publishes mailbox changes to (`projects/…/topics/…`); Gmail push is off without it.
    #[arg(long, env = "HIREWIRE_PUSH_GMAIL_TOPIC")]
    push_gmail_topic: Option<String>,
    /// The audience Pub/Sub push tokens must carry (default: `<public URL>/hooks/gmail`).
    #[arg(long, env = "HIREWIRE_PUSH_PUBSUB_AUDIENCE")]
    push_pubsub_audience: Option<String>,
    /// Database connections in the pool.
    #[arg(long, env = "HIREWIRE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    db_max_connections: u32,
    #[command(flatten)]
    outbox: outbox_args::OutboxArgs,
    /// Seconds an instance reuses feature flags (who has Email Connect) read from the database; changes made
    /// elsewhere (another instance, `hirewire flags set`) are seen within this.
    #[arg(long, env = "HIREWIRE_FEATURE_FLAG_CACHE_SECS", default_value_t = 10)]
    feature_flag_cache_secs: u64,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Port for the web app.
    #[arg(long, env = "HIREWIRE_DEMO_PORT", default_value_t = 8080)]
    port: u16,
    /// Port for the embedded provider sandbox.
    #[arg(long, env = "HIREWIRE_DEMO_SANDBOX_PORT", default_value_t = 8081)]
    sandbox_port: u16,
    /// Where the demo keeps its database, key, accounts and sandbox state.
    #[arg(long, env = "HIREWIRE_DEMO_DIR", default_value = "./demo-data")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user (and their organization if it is new).
    Add {
        /// Organization name; created if it does not exist.
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Display name (default: the part of the email before @).
        #[arg(long)]
        name: Option<String>,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum RoleArg {
    Admin,
    Recruiter,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create an API token for a user; it is printed once and stored only as a digest.
    Create {
        /// The user's email.
        #[arg(long)]
        user: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIREWIRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
    max_connections: u32,
) -> anyhow::Result<Store> {
    let config = StoreConfig {
        database_url: database_url.map(str::to_owned),
        data_dir: data_dir.to_owned(),
        max_connections,
    };
    let store = Store::connect(&config).await.context("open the database")?;
    store.migrate().await.context("apply database migrations")?;
    Ok(store)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now();
    match cli.command {
        Command::Serve(args) => serve(&cli.data_dir, cli.database_url.as_deref(), *args).await,
        Command::Demo(args) => demo_cmd(args).await,
        Command::Migrate => {
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            println!("migrations applied ({:?})", store.backend());
            Ok(())
        }
        Command::User(UserCommand::Add {
            org,
            email,
            role,
            name,
            time_zone,
            password_stdin,
        }) => {
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                Some(s.lines().next().unwrap_or_default().to_owned())
            } else {
                None
            };
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Recruiter => Role::Recruiter,
            };
            let req = users::AddUser {
                org_name: &org,
                email: &email,
                display_name: name.as_deref(),
                role,
                time_zone: &time_zone,
                password: password.as_deref(),
            };
            let (user, created) =
                users::add_user(&store, PasswordCost::default(), req, now).await?;
            if created {
                println!("created organization {org:?}");
            }
            println!("added {} ({}) to {org:?}", user.email, user.role);
            if password.is_none() {
                println!(
                    "no password set: the user cannot sign in until one is (use --password-stdin)"
                );
            }
            Ok(())
        }
        Command::Sandbox(args) => {
            hirewire_sandbox::run(hirewire_sandbox::SandboxCliArgs {
                host: args.listen,
                port: args.port,
                scenario: args.scenario,
                state_dir: args.state_dir,
            })
            .await
        }
        Command::Keys(KeysCommand::Rotate { secrets_key_file }) => {
            let path = secrets_key_file.unwrap_or_else(|| cli.data_dir.join("secrets.key"));
            let (old, _) = Keyring::load(&path, false)?;
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            // The new key file (new key first, old keys kept) is written before
            // anything is re-sealed, so every value stays readable whatever fails.
            let new = old.rotated();
            new.save(&path)?;
            let state = offline_state(store, new.clone());
            let (grants, settings) = hirewire_server::integrations::reseal_all(&state).await?;
            println!(
                "new key {} in {}; re-encrypted {grants} grant(s) and {settings} client secret(s)",
                new.current_key_id(),
                path.display()
            );
            Ok(())
        }
        Command::Import(ImportCommand::LegacySchedulerGrant {
            user,
            provider,
            refresh_token_stdin: _,
            scopes,
            address,
            secrets_key_file,
        }) => {
            let path = secrets_key_file.unwrap_or_else(|| cli.data_dir.join("secrets.key"));
            let (keyring, _) = Keyring::load(&path, false)?;
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.lines().next().unwrap_or_default().trim().to_owned();
            if token.is_empty() {
                bail!("no refresh token on standard input");
            }
            let found = store
                .user_by_email_key(&hirewire_domain::email::AddressKey::of(&user))
                .await?
                .with_context(|| format!("no user with email {user}"))?;
            let provider = match provider {
                ProviderArg::Microsoft => hirewire_providers::Provider::Microsoft,
                ProviderArg::Google => hirewire_providers::Provider::Google,
            };
            let state = offline_state(store, keyring);
            let grant = hirewire_server::integrations::import_legacy_grant(
                &state,
                &found,
                provider,
                &token,
                &scopes,
                address.as_deref(),
            )
            .await?;
            println!(
                "imported a legacy calendar grant for {user} ({}); they are asked to reauthorize",
                grant.account_address.unwrap_or_default()
            );
            Ok(())
        }
        Command::Flags(FlagsCommand::Show { flag: _ }) => {
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            let flag = store
                .feature_flag(hirewire_store::EMAIL_CONNECT)
                .await?
                .context("the email_connect flag is missing (run `hirewire migrate`)")?;
            print!("{}", describe_flag(&store, &flag).await?);
            Ok(())
        }
        Command::Flags(FlagsCommand::Set(args)) => {
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            set_flag(&store, args, now).await
        }
        Command::Token(TokenCommand::Create { user, name }) => {
            let store = open_store(&cli.data_dir, cli.database_url.as_deref(), 2).await?;
            let token = users::create_api_token(&store, &user, &name, now).await?;
            eprintln!("API token for {user} (shown once; store it now):");
            println!("{token}");
            Ok(())
        }
    }
}

async fn find_org(store: &Store, name: &str) -> anyhow::Result<hirewire_domain::ids::OrgId> {
    Ok(store
        .org_by_name(name.trim())
        .await?
        .with_context(|| format!("no organization named {:?}", name.trim()))?
        .id)
}

/// `hirewire flags set`: the operator's change, every organization in reach.
async fn set_flag(store: &Store, args: FlagSetArgs, now: jiff::Timestamp) -> anyhow::Result<()> {
    use hirewire_store::{FlagEdit, FlagMode, OrgRule};
    let FlagArg::EmailConnect = args.flag;
    let mut edit = FlagEdit {
        mode: if args.everyone {
            Some(FlagMode::Everyone)
        } else if args.off {
            Some(FlagMode::Off)
        } else {
            args.percent.map(|_| FlagMode::Targeted)
        },
        percent: args.percent,
        ..FlagEdit::default()
    };
    for (names, rule) in [
        (&args.add_org, Some(OrgRule::In)),
        (&args.exclude_org, Some(OrgRule::Out)),
        (&args.remove_org, None),
    ] {
        for name in names {
            edit.orgs.push((find_org(store, name).await?, rule));
        }
    }
    let mut user_orgs = std::collections::BTreeMap::new();
    for (emails, added) in [(&args.add_user, true), (&args.remove_user, false)] {
        for email in emails {
            let user = store
                .user_by_email_key(&hirewire_domain::email::AddressKey::of(email.trim()))
                .await?
                .with_context(|| format!("no user with email {}", email.trim()))?;
            user_orgs.insert(user.id, user.org_id);
            if added {
                edit.add_users.push(user.id);
            } else {
                edit.remove_users.push(user.id);
            }
        }
    }
    if edit == FlagEdit::default() {
        bail!(
            "nothing to change: pass --everyone, --off, --percent N, --add-org, --exclude-org, --remove-org, --add-user or --remove-user"
        );
    }
    let ttl = hirewire_server::flags::FlagConfig::default().cache_ttl;
    let release_at = now
        .checked_add(jiff::SignedDuration::try_from(ttl)?)
        .unwrap_or(now);
    let actor = hirewire_store::FlagActor {
        user: None,
        label: "cli",
        ip: None,
    };
    match hirewire_server::flags::change(
        store,
        hirewire_store::EMAIL_CONNECT,
        None,
        &edit,
        &user_orgs,
        &actor,
        args.yes,
        now,
        release_at,
    )
    .await?
    {
        hirewire_server::flags::Changed::Saved { before, after } => {
            if before == after {
                println!("no change");
            }
            print!("{}", describe_flag(store, &after).await?);
            Ok(())
        }
        hirewire_server::flags::Changed::NeedsConfirmation(held) => bail!(
            "{} Nothing was changed; pass --yes to go ahead.",
            held.sentence().unwrap_or_default()
        ),
    }
}

/// A flag for people, with organization names and user emails.
async fn describe_flag(
    store: &Store,
    flag: &hirewire_store::FeatureFlag,
) -> anyhow::Result<String> {
    use hirewire_store::{FlagMode, OrgRule};
    let mut out = String::new();
    let mode = match flag.mode {
        FlagMode::Off => {
            "off: nobody has it (the lists below apply when it is turned back on)".to_owned()
        }
        FlagMode::Everyone => "everyone (but opted-out organizations)".to_owned(),
        FlagMode::Targeted => format!(
            "{}% of users (by a stable hash of the user id), plus opted-in organizations and allowlisted users",
            flag.percent
        ),
    };
    out += &format!("email-connect: {mode}\n");
    let org_name = |id| async move {
        store
            .org_by_id(id)
            .await
            .ok()
            .flatten()
            .map_or_else(|| format!("#{id}"), |o| o.name)
    };
    for (rule, label) in [(OrgRule::In, "opted in"), (OrgRule::Out, "opted out")] {
        let mut names = Vec::new();
        for (org, _) in flag.orgs.iter().filter(|(_, r)| **r == rule) {
            names.push(org_name(*org).await);
        }
        out += &format!(
            "organizations {label}: {}\n",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        );
    }
    let mut users = Vec::new();
    for (user, org) in &flag.users {
        let email = store
            .user_by_id(*user)
            .await?
            .map_or_else(|| format!("#{user}"), |u| u.email.to_string());
        users.push(format!("{email} ({})", org_name(*org).await));
    }
    out += &format!(
        "users allowlisted: {}\n",
        if users.is_empty() {
            "none".into()
        } else {
            users.join(", ")
        }
    );
    match flag.updated_at {
        Some(at) => out += &format!("changed {} time(s), last at {at}\n", flag.version),
        None => out += "never changed (the default of a fresh install)\n",
    }
    Ok(out)
}

/// App state for CLI tasks that need the store and the keyring, not a listener.
fn offline_state(store: Store, keyring: Keyring) -> AppState {
    let url = Url::parse("http://127.0.0.1/").expect("a valid URL");
    AppState::new(Config::new(url), store, keyring, Arc::new(SystemClock))
}

async fn serve(data_dir: &Path, database_url: Option<&str>, args: ServeArgs) -> anyhow::Result<()> {
    // Refuse contradicting settings before anything is created.
    args.outbox.check().context("outbox settings")?;
    let key_file = args
        .secrets_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("secrets.key"));
    let (keyring, created) = Keyring::load(&key_file, args.generate_key)?;
    if created {
        tracing::warn!(path = %key_file.display(), "generated a new secrets key (mode 0600); back it up with the database");
    }
    let store = open_store(data_dir, database_url, args.db_max_connections).await?;
    let listener = TcpListener::bind(SocketAddr::new(args.listen, args.port))
        .await
        .with_context(|| format!("listen on {}:{}", args.listen, args.port))?;
    let addr = listener.local_addr()?;
    let public_url = match args.public_url {
        Some(u) => u,
        None => Url::parse(&format!("http://{addr}/"))?,
    };
    if !matches!(public_url.scheme(), "http" | "https") {
        bail!("--public-url must be http or https");
    }
    let mut config = Config::new(public_url.clone());
    config.trust_proxy = args.trust_proxy;
    config.session_ttl = Duration::from_secs(args.session_ttl_hours.max(1) * 3600);
    config.sign_in_limits.per_account = args.sign_in_per_account;
    config.sign_in_limits.per_client = args.sign_in_per_client;
    config.sync.workers = args.sync_workers;
    config.sync.incremental_interval = Duration::from_secs(args.sync_interval_secs.max(1));
    config.sync.window_days = args.sync_window_days.max(1);
    config.sync.page_size = args.sync_page_size;
    config.sync.fetch_concurrency = usize::try_from(args.sync_fetch_concurrency).unwrap_or(4);
    config.sync.lease = Duration::from_secs(args.sync_lease_secs);
    config.flags.cache_ttl = Duration::from_secs(args.feature_flag_cache_secs);
    config.pacing =
        hirewire_providers::PacingConfig::documented(match args.gmail_cost_model.as_str() {
            "2026" => hirewire_providers::GmailCostModel::Y2026,
            _ => hirewire_providers::GmailCostModel::Legacy,
        });
    config.pacing.graph.max_concurrent_per_mailbox =
        usize::try_from(args.graph_max_concurrency).ok();
    config
        .pacing
        .validate()
        .map_err(anyhow::Error::msg)
        .context("pacing settings")?;
    let lifetime = Duration::from_secs(args.push_graph_max_lifetime_mins * 60);
    config.push.graph_lifetime = lifetime;
    config.push.graph_max_lifetime = lifetime;
    config.push.renew_before = Duration::from_secs(args.push_renew_before_hours * 3600);
    config.push.gmail_topic = args.push_gmail_topic.clone();
    config.push.pubsub_audience = args.push_pubsub_audience.clone();
    config.outbox = args.outbox.apply().context("outbox settings")?;
    let push = hirewire_server::push_hooks::PushStatus::of(&config);
    tracing::info!(enabled = push.enabled, "{}", push.detail);
    if let Some(base) = &args.provider_base_url {
        config.provider_endpoints = hirewire_providers::Endpoints::all_at(base.as_str());
        tracing::warn!(%base, "provider endpoints point at a sandbox, not Microsoft or Google");
    }
    let state = AppState::new(config, store, keyring, Arc::new(SystemClock));
    tracing::info!(%addr, public_url = %public_url, "hirewire is listening");
    hirewire_server::serve(state, listener, shutdown_signal()).await?;
    Ok(())
}

async fn demo_cmd(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let (keyring, _) = Keyring::load(&args.dir.join("secrets.key"), true)?;
    let store = open_store(&args.dir, None, 5).await?;
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port))
        .await
        .with_context(|| {
            format!(
                "listen on 127.0.0.1:{} (pass --port to choose another)",
                args.port
            )
        })?;
    let addr = listener.local_addr()?;
    let public_url = Url::parse(&format!("http://{addr}/"))?;
    let sandbox = hirewire_sandbox::Sandbox::start(hirewire_sandbox::SandboxConfig {
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.sandbox_port),
        scenario: Some(demo_scenario(&public_url)?),
        state_dir: Some(args.dir.join("sandbox")),
        ..Default::default()
    })
    .await
    .with_context(|| {
        format!(
            "start the provider sandbox on 127.0.0.1:{} (pass --sandbox-port to choose another)",
            args.sandbox_port
        )
    })?;
    let apps = demo::DemoApps {
        microsoft: (
            hirewire_sandbox::DEFAULT_MS_CLIENT_ID.into(),
            hirewire_sandbox::DEFAULT_MS_CLIENT_SECRET.into(),
        ),
        microsoft_tenant: "acme.example".into(),
        google: (
            hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_ID.into(),
            hirewire_sandbox::DEFAULT_GOOGLE_CLIENT_SECRET.into(),
        ),
    };
    let creds = demo::seed(
        &store,
        &keyring,
        &apps,
        &args.dir.join("credentials.txt"),
        PasswordCost::default(),
        jiff::Timestamp::now(),
    )
    .await?;
    let mut config = Config::new(public_url.clone());
    config.provider_endpoints = hirewire_providers::Endpoints::all_at(&sandbox.base_url());
    let state = AppState::new(config, store, keyring, Arc::new(SystemClock));
    // The banner is written once, ignoring a closed stdout: the server must
    // keep running if whoever started it stops reading.
    let mut banner = format!(
        "\nhirewire demo is running at {public_url}\n\
         provider sandbox (Microsoft 365 + Google Workspace stand-in) at {}\n\
         data: {} (delete it to start over)\n\nSign in as:\n",
        sandbox.base_url(),
        args.dir.display()
    );
    for c in &creds {
        banner += &format!(
            "  {:<14} {:<9} {:<22} password {}\n",
            c.org,
            c.role.as_str(),
            c.email,
            c.password
        );
    }
    banner += "\nAcme Talent uses Microsoft 365 and Globex Hiring uses Google Workspace, both played by the sandbox:\n\
               sign in, open the avatar menu > Product settings > Email & calendar, and click Authorize.\n\n";
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    hirewire_server::serve(state, listener, shutdown_signal()).await?;
    sandbox.shutdown().await;
    Ok(())
}

/// The sandbox's built-in scenario, plus the demo's people as provider
/// accounts and the demo's exact redirect URIs.
fn demo_scenario(public_url: &Url) -> anyhow::Result<hirewire_sandbox::Scenario> {
    let mut scenario = hirewire_sandbox::Scenario::builtin();
    for tenant in scenario
        .microsoft_tenants
        .iter_mut()
        .filter(|t| t.domains.iter().any(|d| d == "acme.example"))
    {
        for (email, name, admin) in [
            ("admin@acme.example", "Avery Admin", true),
            ("riley@acme.example", "Riley Recruiter", false),
            ("sam@acme.example", "Sam Sourcer", false),
        ] {
            if !tenant.users.iter().any(|u| u.email == email) {
                tenant.users.push(serde_json::from_value(
                    serde_json::json!({"email": email, "display_name": name, "admin": admin}),
                )?);
            }
        }
    }
    let base = public_url.as_str().trim_end_matches('/');
    for client in &mut scenario.clients {
        let slug = match client.provider {
            hirewire_sandbox::Provider::Microsoft => "microsoft",
            hirewire_sandbox::Provider::Google => "google",
        };
        let uri = format!("{base}/oauth/{slug}/callback");
        if !client.redirect_uris.contains(&uri) {
            client.redirect_uris.push(uri);
        }
    }
    Ok(scenario)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
