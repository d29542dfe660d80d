//! The `hirewire` command, run as a process.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hirewire() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hirewire"));
    c.env_remove("DATABASE_URL").env("HIREWIRE_LOG", "warn");
    c
}

/// Kills the child when the test ends, pass or fail.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Option<(u16, String)> {
    // A tiny blocking HTTP/1.0 GET over loopback, to keep this test free of a client stack.
    let url = url.strip_prefix("http://")?;
    let (host, path) = url
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((url, "/".into()));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    Some((status, out))
}

/// Starts `hirewire demo` and returns it with the app URL it printed.
fn start_demo(dir: &std::path::Path) -> (Running, String, Vec<String>) {
    let mut child = hirewire()
        .args(["demo", "--port", "0", "--sandbox-port", "0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut lines = Vec::new();
    let mut url = None;
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("hirewire demo is running at ") {
            url = Some(u.trim_end_matches('/').to_owned());
        }
        let done = line.trim().is_empty() && lines.iter().any(|l: &String| l.contains("password"));
        lines.push(line);
        if done {
            break;
        }
    }
    // Keep reading: closing the pipe would break the demo's later output.
    std::thread::spawn(move || reader.for_each(drop));
    (running, url.expect("the demo prints its URL"), lines)
}

#[test]
fn the_demo_answers_health_within_ten_seconds_and_seeds_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (demo, url, lines) = start_demo(dir.path());
    let deadline = started + Duration::from_secs(10);
    loop {
        let answer = get(&format!("{url}/healthz"));
        if let Some((200, _)) = answer {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz answer within 10 s from {url}: {answer:?} {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let printed: Vec<&String> = lines.iter().filter(|l| l.contains("password")).collect();
    assert_eq!(
        printed.len(),
        5,
        "Acme: an admin and two recruiters; Globex: an admin and a recruiter: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("provider sandbox")),
        "{lines:?}"
    );
    let key = dir.path().join("secrets.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    drop(demo);

    // A restart reuses the data: same accounts, no second seeding.
    let (_demo, _url, again) = start_demo(dir.path());
    let again: Vec<&String> = again.iter().filter(|l| l.contains("password")).collect();
    assert_eq!(printed, again);
}

#[test]
fn serve_refuses_to_start_without_a_key_unless_asked_to_generate_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = hirewire()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--generate-key"),
        "the error says how to fix it: {err}"
    );
    assert!(
        !dir.path().join("hirewire.db").exists(),
        "nothing was created before the refusal"
    );

    let mut child = hirewire()
        .args(["serve", "--port", "0", "--generate-key", "--data-dir"])
        .arg(dir.path())
        .env("HIREWIRE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    let mut said_where = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        said_where |= line.contains("generated a new secrets key") && line.contains("secrets.key");
        if line.contains("hirewire is listening") {
            break;
        }
    }
    assert!(said_where, "serve says where it wrote the key");
    assert!(dir.path().join("secrets.key").exists());
}

#[test]
fn user_add_and_token_create_give_a_working_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let add = |email: &str, role: &str| {
        let mut child = hirewire()
            .args([
                "user",
                "add",
                "--org",
                "Acme Talent",
                "--email",
                email,
                "--role",
                role,
                "--password-stdin",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a-long-password\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let first = add("ada@acme.example", "admin");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("created organization"));
    let dup = add("ADA@acme.example", "recruiter");
    assert!(
        !dup.status.success(),
        "the same email (any case) cannot be added twice"
    );

    let bad = hirewire()
        .args([
            "user",
            "add",
            "--org",
            "Acme",
            "--email",
            "not-an-email",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--email"));

    let token = hirewire()
        .args([
            "token",
            "create",
            "--user",
            "ada@acme.example",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("hw_") && token.len() > 40);
    let db = std::fs::read(dir.path().join("hirewire.db")).unwrap();
    let wal = std::fs::read(dir.path().join("hirewire.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle),
        "only a digest is stored"
    );
}

#[test]
fn an_unsupported_database_url_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = hirewire()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env("DATABASE_URL", "mysql://root@127.0.0.1/test")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));
}

#[test]
fn help_lists_every_serve_flag_with_its_environment_variable() {
    let out = hirewire().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--public-url",
        "--trust-proxy",
        "--listen",
        "--port",
        "--log-format",
        "--secrets-key-file",
        "--generate-key",
        "--data-dir",
        "--sync-page-size",
        "--sync-fetch-concurrency",
        "--sync-lease-secs",
        "--outbox-lease-secs",
        "--outbox-poll-interval-ms",
        "--outbox-max-attempts",
        "--outbox-backoff-base-secs",
        "--outbox-backoff-max-secs",
        "--outbox-pacing-per-window",
        "--outbox-pacing-window-secs",
        "--outbox-hold-recheck-secs",
        "--outbox-max-attachment-mb",
        "--outbox-max-total-attachment-mb",
    ] {
        assert!(help.contains(flag), "{flag} in help");
    }
    for var in [
        "HIREWIRE_PUBLIC_URL",
        "HIREWIRE_TRUST_PROXY",
        "HIREWIRE_LISTEN",
        "HIREWIRE_PORT",
        "HIREWIRE_LOG_FORMAT",
        "HIREWIRE_DATA_DIR",
        "HIREWIRE_SYNC_PAGE_SIZE",
        "HIREWIRE_SYNC_FETCH_CONCURRENCY",
        "HIREWIRE_SYNC_LEASE_SECS",
        "HIREWIRE_OUTBOX_LEASE_SECS",
        "HIREWIRE_OUTBOX_POLL_INTERVAL_MS",
        "HIREWIRE_OUTBOX_MAX_ATTEMPTS",
        "HIREWIRE_OUTBOX_BACKOFF_BASE_SECS",
        "HIREWIRE_OUTBOX_BACKOFF_MAX_SECS",
        "HIREWIRE_OUTBOX_PACING_PER_WINDOW",
        "HIREWIRE_OUTBOX_PACING_WINDOW_SECS",
        "HIREWIRE_OUTBOX_HOLD_RECHECK_SECS",
        "HIREWIRE_OUTBOX_MAX_ATTACHMENT_MB",
        "HIREWIRE_OUTBOX_MAX_TOTAL_ATTACHMENT_MB",
    ] {
        assert!(help.contains(var), "{var} in help");
    }
}

#[test]
fn serve_refuses_outbox_settings_out_of_range_or_contradicting_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let serve = || {
        let mut c = hirewire();
        c.args(["serve", "--port", "0", "--generate-key", "--data-dir"])
            .arg(dir.path());
        c
    };
    // A flag out of range, and the same through its environment variable.
    let out = serve().args(["--outbox-lease-secs", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--outbox-lease-secs") && err.contains("1..=3600"),
        "{err}"
    );
    let out = serve()
        .env("HIREWIRE_OUTBOX_PACING_PER_WINDOW", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--outbox-pacing-per-window"), "{err}");
    // Each in range, together contradicting.
    let out = serve()
        .args(["--outbox-max-attachment-mb", "30"])
        .env("HIREWIRE_OUTBOX_MAX_TOTAL_ATTACHMENT_MB", "25")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--outbox-max-attachment-mb (30) must not exceed --outbox-max-total-attachment-mb (25)"
        ),
        "{err}"
    );
    assert!(
        !dir.path().join("hirewire.db").exists() && !dir.path().join("secrets.key").exists(),
        "nothing was created before the refusal"
    );
}

/// Runs `hirewire ARGS` on `dir` with `stdin`, and returns the output.
fn run(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = hirewire()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_legacy_grant_is_imported_sealed_and_keys_rotate_re_seals_it() {
    let dir = tempfile::tempdir().unwrap();
    let started = hirewire()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(started.status.success());
    let add = run(
        dir.path(),
        &[
            "user",
            "add",
            "--org",
            "Acme",
            "--email",
            "riley@acme.example",
            "--role",
            "recruiter",
        ],
        "",
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let no_key = run(
        dir.path(),
        &[
            "import",
            "legacy-scheduler-grant",
            "--user",
            "riley@acme.example",
            "--provider",
            "microsoft",
            "--refresh-token-stdin",
            "--scopes",
            "Calendars.Read",
        ],
        "legacy-refresh-token-value\n",
    );
    assert!(!no_key.status.success(), "importing needs the secrets key");
    let keyfile = dir.path().join("secrets.key");
    // A key file in the documented format (`ID BASE64KEY`, current key first).
    std::fs::write(
        &keyfile,
        "k0 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    let imported = run(
        dir.path(),
        &[
            "import",
            "legacy-scheduler-grant",
            "--user",
            "riley@acme.example",
            "--provider",
            "microsoft",
            "--refresh-token-stdin",
            "--scopes",
            "Calendars.Read offline_access",
        ],
        "legacy-refresh-token-value\n",
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(String::from_utf8_lossy(&imported.stdout).contains("legacy"));

    let rotated = run(dir.path(), &["keys", "rotate"], "");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let keys: Vec<String> = std::fs::read_to_string(&keyfile)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "the new key first, the old one kept");
    assert_eq!(keys[1], "k0");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grants = rt.block_on(async {
        let store = hirewire_store::Store::connect(&hirewire_store::StoreConfig {
            database_url: None,
            data_dir: dir.path().to_owned(),
            max_connections: 1,
        })
        .await
        .unwrap();
        store.all_grants().await.unwrap()
    });
    assert_eq!(grants.len(), 1);
    let sealed = grants[0].refresh_token_sealed.clone().unwrap();
    assert!(
        sealed.starts_with(&format!("v1.{}.", keys[0])),
        "re-sealed under the new key: {sealed}"
    );
    assert!(grants[0].legacy);
    let db = std::fs::read(dir.path().join("hirewire.db")).unwrap();
    let wal = std::fs::read(dir.path().join("hirewire.db-wal")).unwrap_or_default();
    let needle = b"legacy-refresh-token-value";
    assert!(
        !db.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle)
    );
}

/// `hirewire flags` on `dir`: (success, stdout, stderr).
fn flags(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["flags"];
    all.extend_from_slice(args);
    let out = run(dir, &all, "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Queues one scheduled email from `email`'s inbox, straight in the store.
async fn queue_scheduled_email(store: &hirewire_store::Store, email: &str) {
    use hirewire_store::*;
    let now = jiff::Timestamp::now();
    let user = store
        .user_by_email_key(&hirewire_domain::email::AddressKey::of(email))
        .await
        .unwrap()
        .unwrap();
    let grant = store
        .put_grant(
            &NewGrant {
                org_id: user.org_id,
                user_id: user.id,
                capability: CapabilityKind::Inbox,
                provider: ProviderChoice::Google,
                status: GrantStatus::Active,
                status_reason: None,
                account_address: None,
                scopes: "gmail.send",
                permission_version: 1,
                legacy: false,
                access_token_sealed: None,
                refresh_token_sealed: None,
                access_expires_at: None,
            },
            now,
        )
        .await
        .unwrap();
    let address = hirewire_domain::email::EmailAddress::parse("jordan@mail.example").unwrap();
    let cand = store
        .create_candidate(user.org_id, "Jordan", &[address], now)
        .await
        .unwrap()
        .id;
    let to = vec!["jordan@mail.example".to_owned()];
    store
        .create_outbox(
            user.org_id,
            &NewOutboxItem {
                user_id: user.id,
                candidate_id: cand,
                grant_id: grant.id,
                to: &to,
                cc: &[],
                subject: "Tomorrow",
                body_markdown: "Hi",
                attachments: &[],
                message_id: "cli-test@hirewire.test",
                in_reply_to: None,
                references: &[],
                thread_hint: None,
                send_at: Some(now + jiff::SignedDuration::from_hours(24)),
            },
            1_000_000,
            now,
        )
        .await
        .unwrap();
}

#[test]
fn flags_show_and_set_change_email_connect_with_clear_errors_an_audit_and_a_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    for (org, email, role) in [
        ("Acme", "ada@acme.example", "admin"),
        ("Acme", "riley@acme.example", "recruiter"),
        ("Globex", "gil@globex.example", "recruiter"),
    ] {
        let out = run(
            dir.path(),
            &[
                "user", "add", "--org", org, "--email", email, "--role", role,
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A fresh install: on for everyone.
    let (ok, shown, _) = flags(dir.path(), &["show"]);
    assert!(ok);
    assert!(shown.contains("email-connect: everyone"), "{shown}");
    assert!(shown.contains("never changed"), "{shown}");

    // Narrow it: 0% of users, Acme opted in, Gil allowlisted.
    let (ok, shown, err) = flags(
        dir.path(),
        &[
            "set",
            "email-connect",
            "--percent",
            "0",
            "--add-org",
            "Acme",
            "--add-user",
            "GIL@globex.example",
        ],
    );
    assert!(ok, "{err}");
    assert!(shown.contains("email-connect: 0% of users"), "{shown}");
    assert!(shown.contains("organizations opted in: Acme"), "{shown}");
    assert!(
        shown.contains("users allowlisted: gil@globex.example (Globex)"),
        "{shown}"
    );

    // Clear errors; nothing changes.
    for (args, needle) in [
        (
            &["set", "email-connect", "--add-org", "Nope"][..],
            "no organization named \"Nope\"",
        ),
        (
            &[
                "set",
                "email-connect",
                "--remove-user",
                "who@nowhere.example",
            ],
            "no user with email who@nowhere.example",
        ),
        (
            &["set", "email-connect", "--everyone", "--off"],
            "cannot be used with",
        ),
        (&["set", "email-connect", "--percent", "101"], "101"),
        (&["set", "email-connect"], "nothing to change"),
        (&["set", "other-flag", "--off"], "invalid value"),
    ] {
        let (ok, _, err) = flags(dir.path(), args);
        assert!(!ok, "{args:?} is refused");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (_, again, _) = flags(dir.path(), &["show"]);
    assert!(again.contains("changed 1 time(s)"), "{again}");

    // Turning it off while an email is scheduled asks for --yes first.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(async {
        let store = hirewire_store::Store::connect(&hirewire_store::StoreConfig {
            database_url: None,
            data_dir: dir.path().to_owned(),
            max_connections: 1,
        })
        .await
        .unwrap();
        queue_scheduled_email(&store, "riley@acme.example").await;
        store
    });
    let (ok, _, err) = flags(dir.path(), &["set", "email-connect", "--off"]);
    assert!(!ok);
    assert!(err.contains("1 scheduled email will be held"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (ok, shown, err) = flags(dir.path(), &["set", "email-connect", "--off", "--yes"]);
    assert!(ok, "{err}");
    assert!(shown.contains("email-connect: off"), "{shown}");

    // Audited as "cli", before and after, in the operator's (org-less) log.
    let log = runtime.block_on(store.list_audit(None, 50)).unwrap();
    let changes: Vec<_> = log
        .iter()
        .filter(|e| e.action == "feature_flag.changed")
        .collect();
    assert_eq!(
        changes.len(),
        2,
        "two changes, the refused ones left no trace"
    );
    assert!(
        changes
            .iter()
            .all(|e| e.detail["actor"] == "cli" && e.actor_user_id.is_none())
    );
    assert_eq!(changes[0].detail["before"]["mode"], "targeted");
    assert_eq!(changes[0].detail["after"]["mode"], "off");
    assert_eq!(changes[1].detail["before"]["mode"], "everyone");
}
