//! The scenario: who exists in the sandbox (tenants, domains, users, registered clients) and how it behaves
//! (lifetimes, quotas and the switches for points PROVIDERS.md marks uncertain). Loaded from JSON; see docs/sandbox.md.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Which provider a tenant, user or client belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Microsoft 365: Entra ID + Graph.
    Microsoft,
    /// Google Workspace: Google OAuth + Gmail + Calendar.
    Google,
}

/// Everything the sandbox starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Entra ID tenants with their users.
    #[serde(default)]
    pub microsoft_tenants: Vec<TenantSpec>,
    /// Google Workspace domains with their users.
    #[serde(default)]
    pub google_domains: Vec<DomainSpec>,
    /// Registered OAuth clients (app registrations / OAuth client IDs).
    #[serde(default)]
    pub clients: Vec<ClientSpec>,
    /// Lifetimes, quotas and behaviour switches.
    #[serde(default)]
    pub settings: Settings,
}

/// One Entra ID tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant GUID; derived from the first domain when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name of the organization.
    pub name: String,
    /// Verified domains; each also works as `{tenant}` in URLs.
    pub domains: Vec<String>,
    /// Consent and assignment policy.
    #[serde(default)]
    pub policy: TenantPolicy,
    /// Admin consent already granted: client id -> scopes (short Graph names).
    #[serde(default)]
    pub admin_consents: BTreeMap<String, BTreeSet<String>>,
    /// The tenant's users.
    #[serde(default)]
    pub users: Vec<UserSpec>,
}

/// How an Entra ID tenant treats consent and app assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPolicy {
    /// Users may consent to apps themselves. When false and no admin consent covers the request, users see
    /// "Need admin approval" (AADSTS90094).
    pub user_consent_allowed: bool,
    /// Only users assigned to the app may sign in to it (otherwise AADSTS50105).
    pub assignment_required: bool,
    /// Client id -> user emails assigned to it.
    pub assignments: BTreeMap<String, BTreeSet<String>>,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            user_consent_allowed: true,
            assignment_required: false,
            assignments: BTreeMap::new(),
        }
    }
}

/// One Google Workspace domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// The primary domain, e.g. `globex.example`.
    pub domain: String,
    /// Display name of the organization.
    #[serde(default)]
    pub name: Option<String>,
    /// Admin console policy.
    #[serde(default)]
    pub policy: DomainPolicy,
    /// The domain's users.
    #[serde(default)]
    pub users: Vec<UserSpec>,
}

/// What a Workspace admin has restricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainPolicy {
    /// Client ids blocked by the admin: users see `admin_policy_enforced` on Google's page.
    pub blocked_clients: BTreeSet<String>,
}

/// One user (Microsoft or Google, by the tenant or domain it is listed under).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Sign-in address (UPN for Microsoft), also the mailbox address.
    pub email: String,
    /// Full name.
    pub display_name: String,
    /// Given name; the first word of `display_name` when absent.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Surname; the rest of `display_name` when absent.
    #[serde(default)]
    pub surname: Option<String>,
    /// Job title (Graph `jobTitle`).
    #[serde(default)]
    pub job_title: Option<String>,
    /// Tenant or domain administrator (may grant admin consent).
    #[serde(default)]
    pub admin: bool,
    /// Fixed id (Graph object id GUID / Google numeric `sub`); derived from the email when absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// One registered OAuth client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// Which provider registered it.
    pub provider: Provider,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// App name shown on consent pages.
    pub name: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Microsoft: single-tenant app registered in this tenant (id or domain); multi-tenant when absent.
    #[serde(default)]
    pub home_tenant: Option<String>,
    /// Microsoft: the permissions configured on the registration (what `/.default` means), short Graph names.
    #[serde(default)]
    pub app_scopes: Vec<String>,
    /// Google: consent screen in "Testing" publishing status (refresh tokens expire after 7 days).
    #[serde(default)]
    pub testing_mode: bool,
}

/// Gmail quota cost model (PROVIDERS.md §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GmailQuotaModel {
    /// 15,000 units per user per minute; `messages.get` costs 5.
    #[default]
    Legacy,
    /// Projects created from 2026-05-01: 6,000 units per user per minute; `messages.get` costs 20.
    #[serde(rename = "2026")]
    Model2026,
}

/// How the `scope` of a Microsoft token response names Graph permissions [U].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MsScopeFormat {
    /// `Mail.Read User.Read openid` (what real responses show).
    #[default]
    Short,
    /// `https://graph.microsoft.com/Mail.Read ...`.
    Full,
}

/// Lifetimes, quotas and switches. Every field has a default; the control API can change them at runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long an authorization code can be redeemed (both providers; real: about 10 minutes).
    pub code_lifetime_secs: i64,
    /// Microsoft access token lifetime (`expires_in`).
    pub ms_access_token_lifetime_secs: i64,
    /// Google access token lifetime (`expires_in`).
    pub google_access_token_lifetime_secs: i64,
    /// Microsoft refresh token inactivity expiry (AADSTS700082).
    pub ms_refresh_idle_secs: i64,
    /// Google refresh token idle expiry (6 months).
    pub google_refresh_idle_secs: i64,
    /// Google refresh token lifetime for clients in Testing mode (7 days).
    pub google_testing_refresh_lifetime_secs: i64,
    /// Pending sign-in pages expire after this long.
    pub pending_login_lifetime_secs: i64,
    /// Gmail cost model.
    pub gmail_quota_model: GmailQuotaModel,
    /// Per-user Gmail budget in units per minute, enforced as a token bucket refilled at a sixtieth of it per
    /// second that holds at most a minute's worth (`quotas` on and unset: the model's budget).
    pub gmail_units_per_user_per_minute: Option<u64>,
    /// Per-user Gmail budget in units per second (a token bucket refilled at this rate); takes precedence over
    /// the per-minute budget. Its bucket holds `gmail_burst_units` (default: one second's worth).
    pub gmail_units_per_user_per_second: Option<f64>,
    /// How many units a full Gmail bucket holds (default: a minute's or a second's worth, as above).
    pub gmail_burst_units: Option<f64>,
    /// [O/U] Gmail requests in flight per user before 429 `rateLimitExceeded` "Too many concurrent requests for
    /// user." (Google documents no number; off unless set, also with `quotas`).
    pub gmail_user_concurrency: Option<u32>,
    /// [O] The error a call over the Gmail budget gets: `"rateLimitExceeded"` (429, "Quota exceeded for quota
    /// metric 'Queries' …") or `"userRateLimitExceeded"` (403 "User Rate Limit Exceeded"). Neither carries
    /// `Retry-After` (Google documents none for Gmail).
    pub gmail_quota_error: String,
    /// Overrides of Gmail method costs, keyed by discovery method id (`gmail.users.messages.get`).
    pub gmail_method_costs: BTreeMap<String, u64>,
    /// Turns on every provider limit left unset at its documented value (Graph: 4 concurrent requests and
    /// 10,000 requests per 10 minutes per mailbox; Gmail: the model's units per user per minute). Off by default:
    /// then only the limits set explicitly apply.
    pub quotas: bool,
    /// Graph (Outlook) concurrent requests per mailbox before `ApplicationThrottled` (real: 4; `quotas` on and
    /// unset: 4; otherwise unlimited).
    pub graph_mailbox_concurrency: Option<u32>,
    /// Graph requests per mailbox per `graph_mailbox_window_secs` (real: 10,000 per 600 s; `quotas` on and
    /// unset: 10,000; otherwise unlimited).
    pub graph_mailbox_requests_per_window: Option<u64>,
    /// The window of `graph_mailbox_requests_per_window`, in seconds of sandbox time.
    pub graph_mailbox_window_secs: u64,
    /// `Retry-After` seconds sent with Graph concurrency throttling.
    pub graph_retry_after_secs: u64,
    /// [U] Format of Graph names in the Microsoft token `scope`.
    pub ms_scope_format: MsScopeFormat,
    /// [O] Add `error_subcode=cancel` when a user cancels Microsoft consent.
    pub ms_cancel_error_subcode: bool,
    /// [O/U] HTTP status of Microsoft `invalid_client` (bad secret) token errors.
    pub ms_invalid_client_status: u16,
    /// [U] Send `WWW-Authenticate` with Graph 401s.
    pub graph_www_authenticate: bool,
    /// [U] Add `iss=https://accounts.google.com` to Google's authorization redirect.
    pub google_redirect_iss: bool,
    /// [U] Google shows per-scope checkboxes when more than one non-sign-in scope is requested.
    pub google_granular_consent: bool,
    /// [U] Google accepts PKCE from web clients.
    pub google_accept_pkce: bool,
    /// [O/U] Send `WWW-Authenticate: Bearer ... error="insufficient_scope"` with Google 403s.
    pub google_insufficient_scope_www_authenticate: bool,
    /// Graph delta with `$filter` returns at most this many messages (real: 5,000).
    pub graph_delta_filter_cap: usize,
    /// Graph delta tokens older than this expire (`None`: only when expired through the control API).
    pub graph_delta_token_lifetime_secs: Option<i64>,
    /// [O/U] Status of an expired Graph delta token.
    pub graph_delta_expired_status: u16,
    /// [O/U] Error code of an expired Graph delta token.
    pub graph_delta_expired_code: String,
    /// [U] What a Graph `POST /me/events` repeating an earlier `transactionId` gets: `"original"` (201 with the
    /// original event, nothing created), `"conflict"` (409 `ErrorDuplicateTransactionId`) or `"ignore"` (a
    /// second event is created).
    pub graph_transaction_id_repeat: String,
    /// [D] How many inner requests of a Graph `$batch` run at once (Outlook: 4 per mailbox).
    pub graph_batch_parallelism: u32,
    /// [D ⚠] Maximum lifetime of an Outlook message/event subscription, in minutes (stored docs: 4,230; newer
    /// docs: 10,080).
    pub graph_subscription_max_minutes: i64,
    /// [U] What a subscription asking for more than the maximum gets: capped (false) or 400 (true).
    pub graph_subscription_reject_over_max: bool,
    /// How long the validation call may take before the subscription is refused (real: about 10 s). Real time.
    pub graph_validation_timeout_ms: u64,
    /// How long one notification POST (Graph or Pub/Sub push) may take before it counts as failed. Real time.
    pub push_timeout_ms: u64,
    /// First retry delay after a failed notification; doubled per attempt up to `push_retry_max_ms`. Real time.
    pub push_retry_initial_ms: u64,
    /// Longest retry delay. Real time.
    pub push_retry_max_ms: u64,
    /// Attempts per notification batch, the first included, before it is given up.
    pub push_max_attempts: u32,
    /// [D] Graph gives up retrying a notification this long (sandbox time) after the first attempt (4 h).
    pub graph_notification_retry_secs: i64,
    /// [D] Pub/Sub keeps retrying a push this long (sandbox time): the default message retention, 7 days.
    pub pubsub_retry_secs: i64,
    /// [D] Lifetime of a Gmail `users.watch` (7 days).
    pub gmail_watch_lifetime_secs: i64,
    /// [O ⚠] Send `historyId` in the push data as a JSON number (false: a string, as PROVIDERS.md §6.6 shows).
    pub gmail_push_history_id_as_number: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            code_lifetime_secs: 600,
            ms_access_token_lifetime_secs: 3599,
            google_access_token_lifetime_secs: 3599,
            ms_refresh_idle_secs: 90 * 86_400,
            google_refresh_idle_secs: 183 * 86_400,
            google_testing_refresh_lifetime_secs: 7 * 86_400,
            pending_login_lifetime_secs: 3600,
            gmail_quota_model: GmailQuotaModel::Legacy,
            gmail_units_per_user_per_minute: None,
            gmail_units_per_user_per_second: None,
            gmail_burst_units: None,
            gmail_quota_error: "rateLimitExceeded".into(),
            gmail_user_concurrency: None,
            gmail_method_costs: BTreeMap::new(),
            quotas: false,
            graph_mailbox_concurrency: None,
            graph_mailbox_requests_per_window: None,
            graph_mailbox_window_secs: 600,
            graph_retry_after_secs: 1,
            ms_scope_format: MsScopeFormat::Short,
            ms_cancel_error_subcode: true,
            ms_invalid_client_status: 401,
            graph_www_authenticate: true,
            google_redirect_iss: false,
            google_granular_consent: true,
            google_accept_pkce: true,
            google_insufficient_scope_www_authenticate: true,
            graph_delta_filter_cap: 5000,
            graph_delta_token_lifetime_secs: None,
            graph_delta_expired_status: 410,
            graph_delta_expired_code: "SyncStateNotFound".into(),
            graph_transaction_id_repeat: "original".into(),
            graph_batch_parallelism: 4,
            graph_subscription_max_minutes: 4230,
            graph_subscription_reject_over_max: false,
            graph_validation_timeout_ms: 10_000,
            push_timeout_ms: 10_000,
            push_retry_initial_ms: 1_000,
            push_retry_max_ms: 60_000,
            push_max_attempts: 8,
            graph_notification_retry_secs: 4 * 3600,
            pubsub_retry_secs: 7 * 86_400,
            gmail_watch_lifetime_secs: 7 * 86_400,
            gmail_push_history_id_as_number: false,
        }
    }
}

impl Settings {
    /// Gmail units per user per minute under the active model.
    pub fn gmail_user_budget(&self) -> u64 {
        self.gmail_units_per_user_per_minute
            .unwrap_or(match self.gmail_quota_model {
                GmailQuotaModel::Legacy => 15_000,
                GmailQuotaModel::Model2026 => 6_000,
            })
    }

    /// Cost in units of one call to a Gmail method (discovery id), under the active model.
    pub fn gmail_cost(&self, method: &str) -> u64 {
        if let Some(c) = self.gmail_method_costs.get(method) {
            return *c;
        }
        let short = method.strip_prefix("gmail.users.").unwrap_or(method);
        let legacy = self.gmail_quota_model == GmailQuotaModel::Legacy;
        match short {
            "getProfile" => 1,
            "messages.get" => {
                if legacy {
                    5
                } else {
                    20
                }
            }
            "threads.get" => {
                if legacy {
                    10
                } else {
                    40
                }
            }
            "messages.list" | "threads.list" | "messages.attachments.get" => 5,
            "history.list" => 2,
            "messages.send" | "drafts.send" | "watch" => 100,
            "drafts.create" => 10,
            "stop" => 1,
            _ => 5,
        }
    }
}

/// The Microsoft client id of the default scenario.
pub const DEFAULT_MS_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The Microsoft client secret of the default scenario.
pub const DEFAULT_MS_CLIENT_SECRET: &str = "sandbox-ms-secret";
/// The Google client id of the default scenario.
pub const DEFAULT_GOOGLE_CLIENT_ID: &str = "1234567890-sandbox.apps.googleusercontent.com";
/// The Google client secret of the default scenario.
pub const DEFAULT_GOOGLE_CLIENT_SECRET: &str = "GOCSPX-sandbox-secret";
/// Tenant GUID of `acme.example` in the default scenario.
pub const DEFAULT_ACME_TENANT_ID: &str = "3f1a7c52-8e4b-4d2a-9c61-0a7e5b2d4c11";
/// Tenant GUID of `initech.example` (requires admin consent) in the default scenario.
pub const DEFAULT_INITECH_TENANT_ID: &str = "8c2d9e41-5b7a-4f3c-a1d8-6e0f2b9c7a35";

fn user(email: &str, name: &str, title: Option<&str>, admin: bool) -> UserSpec {
    UserSpec {
        email: email.into(),
        display_name: name.into(),
        given_name: None,
        surname: None,
        job_title: title.map(Into::into),
        admin,
        id: None,
    }
}

fn redirect_uris(provider: &str) -> Vec<String> {
    let mut out = Vec::new();
    for host in ["http://localhost:8080", "http://127.0.0.1:8080"] {
        for path in [
            format!("/oauth/{provider}/callback"),
            format!("/auth/{provider}/callback"),
            format!("/admin/oauth/{provider}/callback"),
        ] {
            out.push(format!("{host}{path}"));
        }
    }
    out
}

impl Scenario {
    /// The built-in scenario: Microsoft tenants `acme.example` (user consent allowed) and `initech.example`
    /// (admin consent required), Google Workspace domain `globex.example`, one client per provider.
    pub fn builtin() -> Self {
        let graph = [
            "User.Read",
            "Mail.Read",
            "Mail.ReadWrite",
            "Mail.Send",
            "Calendars.Read",
            "Calendars.ReadWrite",
        ];
        Scenario {
            microsoft_tenants: vec![
                TenantSpec {
                    id: Some(DEFAULT_ACME_TENANT_ID.into()),
                    name: "Acme Corporation".into(),
                    domains: vec!["acme.example".into()],
                    policy: TenantPolicy::default(),
                    admin_consents: BTreeMap::new(),
                    users: vec![
                        user(
                            "adele@acme.example",
                            "Adele Vance",
                            Some("Recruiter"),
                            false,
                        ),
                        user(
                            "ben@acme.example",
                            "Ben Walters",
                            Some("Recruiting Coordinator"),
                            false,
                        ),
                        user(
                            "it@acme.example",
                            "Irene Torres",
                            Some("IT Administrator"),
                            true,
                        ),
                    ],
                },
                TenantSpec {
                    id: Some(DEFAULT_INITECH_TENANT_ID.into()),
                    name: "Initech".into(),
                    domains: vec!["initech.example".into()],
                    policy: TenantPolicy {
                        user_consent_allowed: false,
                        ..TenantPolicy::default()
                    },
                    admin_consents: BTreeMap::new(),
                    users: vec![
                        user(
                            "peter@initech.example",
                            "Peter Gibbons",
                            Some("Recruiter"),
                            false,
                        ),
                        user(
                            "bill@initech.example",
                            "Bill Lumbergh",
                            Some("Administrator"),
                            true,
                        ),
                    ],
                },
            ],
            google_domains: vec![DomainSpec {
                domain: "globex.example".into(),
                name: Some("Globex".into()),
                policy: DomainPolicy::default(),
                users: vec![
                    user(
                        "hank@globex.example",
                        "Hank Scorpio",
                        Some("Head of Talent"),
                        true,
                    ),
                    user(
                        "mindy@globex.example",
                        "Mindy Simmons",
                        Some("Recruiter"),
                        false,
                    ),
                ],
            }],
            clients: vec![
                ClientSpec {
                    provider: Provider::Microsoft,
                    client_id: DEFAULT_MS_CLIENT_ID.into(),
                    client_secret: DEFAULT_MS_CLIENT_SECRET.into(),
                    name: "hirewire".into(),
                    redirect_uris: redirect_uris("microsoft"),
                    home_tenant: None,
                    app_scopes: graph.iter().map(|s| s.to_string()).collect(),
                    testing_mode: false,
                },
                ClientSpec {
                    provider: Provider::Google,
                    client_id: DEFAULT_GOOGLE_CLIENT_ID.into(),
                    client_secret: DEFAULT_GOOGLE_CLIENT_SECRET.into(),
                    name: "hirewire".into(),
                    redirect_uris: redirect_uris("google"),
                    home_tenant: None,
                    app_scopes: Vec::new(),
                    testing_mode: false,
                },
            ],
            settings: Settings::default(),
        }
    }
}
