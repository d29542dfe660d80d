//! Runtime configuration of the web application. The binary fills it from
//! flags and `HIREWIRE_*` variables; tests build it directly.

use std::time::Duration;

use url::Url;

use hirewire_providers::Endpoints;

use crate::crypto::PasswordCost;

#[derive(Debug, Clone)]
pub struct Config {
    /// The external base URL: every link, redirect URI and cookie derives from it.
    pub public_url: Url,
    /// Honour `X-Forwarded-For` for the client address (only behind a proxy you run).
    pub trust_proxy: bool,
    /// How long a sign-in lasts without activity.
    pub session_ttl: Duration,
    pub password_cost: PasswordCost,
    pub sign_in_limits: SignInLimits,
    /// Where the providers are: the real services, or the sandbox.
    pub provider_endpoints: Endpoints,
    /// The mail sync engine (window, paging, schedule, leases, background workers).
    pub sync: crate::sync::SyncConfig,
    /// The Scheduler (free/busy cache, calendar event retries).
    pub scheduler: crate::scheduling::SchedulerConfig,
    /// Email Connect: outbox worker, retries, pacing, attachment limits.
    pub outbox: crate::outbox::OutboxConfig,
    /// Feature flags (who has Email Connect lives in the database): the cache.
    pub flags: crate::flags::FlagConfig,
    /// Quota-aware pacing of provider calls (one shared pacer per server).
    pub pacing: hirewire_providers::PacingConfig,
    /// Push notifications (webhooks, subscriptions).
    pub push: crate::push_hooks::PushSettings,
}

/// Sign-in attempts allowed per account and per client address.
#[derive(Debug, Clone, Copy)]
pub struct SignInLimits {
    /// Attempts per account in `window`.
    pub per_account: u32,
    /// Attempts per client address in `window`.
    pub per_client: u32,
    pub window: Duration,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self {
            per_account: 10,
            per_client: 50,
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl Config {
    pub fn new(public_url: Url) -> Self {
        Self {
            public_url,
            trust_proxy: false,
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            password_cost: PasswordCost::default(),
            sign_in_limits: SignInLimits::default(),
            provider_endpoints: Endpoints::real(),
            sync: crate::sync::SyncConfig::default(),
            scheduler: crate::scheduling::SchedulerConfig::default(),
            outbox: crate::outbox::OutboxConfig::default(),
            flags: crate::flags::FlagConfig::default(),
            pacing: hirewire_providers::PacingConfig::default(),
            push: crate::push_hooks::PushSettings::default(),
        }
    }

    /// Cookies get `Secure` exactly when the public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// An absolute URL under the public base (`path` starts with `/`).
    pub fn link(&self, path: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path)
    }
}
