//! Push notifications: webhooks for Graph change notifications and Gmail
//! Pub/Sub pushes, and the jobs that keep each inbox's subscription alive.
//! Polling (the sync's incremental interval) stays the safety net: a push only
//! makes the next sync step run now.

use std::time::Duration;

use url::Url;

use crate::config::Config;

/// Push settings (in [`Config::push`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// The base URL providers call back (default: the public URL).
    pub webhook_base: Option<Url>,
    /// Accept a plain-http webhook base (tests and demos against the sandbox only).
    pub allow_http: bool,
    /// Lifetime asked of Graph for a subscription (capped by `graph_max_lifetime`).
    pub graph_lifetime: Duration,
    /// The longest lifetime Graph allows (PROVIDERS.md: 4,230 or 10,080 minutes).
    pub graph_max_lifetime: Duration,
    /// A subscription is renewed when it expires within this.
    pub renew_before: Duration,
    /// The Pub/Sub topic Gmail publishes to (`projects/…/topics/…`); Gmail push is off without it.
    pub gmail_topic: Option<String>,
    /// The audience the Pub/Sub push JWT must carry (default: the Gmail webhook URL).
    pub pubsub_audience: Option<String>,
    /// Where Pub/Sub's signing keys are (default: Google's).
    pub pubsub_certs_url: Option<String>,
    /// How often a Gmail watch is renewed (it lasts 7 days; Google recommends daily).
    pub gmail_renew_every: Duration,
    /// How often the maintenance pass (create missing subscriptions, renew) runs.
    pub maintain_every: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            webhook_base: None,
            allow_http: false,
            graph_lifetime: hirewire_providers::push::GRAPH_MAX_LIFETIME_LEGACY,
            graph_max_lifetime: hirewire_providers::push::GRAPH_MAX_LIFETIME_LEGACY,
            renew_before: Duration::from_secs(12 * 3600),
            gmail_topic: None,
            pubsub_audience: None,
            pubsub_certs_url: None,
            gmail_renew_every: Duration::from_secs(24 * 3600),
            maintain_every: Duration::from_secs(300),
        }
    }
}

/// Whether push is on, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushStatus {
    pub enabled: bool,
    /// Why push is off (for the admin page), or what is on.
    pub detail: String,
    /// The webhook base in use.
    pub base: String,
}

impl PushStatus {
    pub fn of(config: &Config) -> Self {
        let base = config
            .push
            .webhook_base
            .clone()
            .unwrap_or_else(|| config.public_url.clone());
        let host_is_local = match base.host() {
            Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_unspecified(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
            None => true,
        };
        let shown = base.as_str().trim_end_matches('/').to_owned();
        if config.push.allow_http {
            return Self {
                enabled: true,
                detail: format!("Push is on (test mode: notifications are accepted at {shown})."),
                base: shown,
            };
        }
        if base.scheme() != "https" {
            return Self {
                enabled: false,
                detail: format!(
                    "Push is off: the public URL {shown} is not https, and Microsoft and Google only call https webhooks. Mail is still synced by polling. Start hirewire with an https --public-url to turn push on."
                ),
                base: shown,
            };
        }
        if host_is_local {
            return Self {
                enabled: false,
                detail: format!(
                    "Push is off: the public URL {shown} is not reachable from the internet. Mail is still synced by polling."
                ),
                base: shown,
            };
        }
        Self {
            enabled: true,
            detail: format!(
                "Push is on: providers notify {shown}/hooks/…; polling stays as the safety net."
            ),
            base: shown,
        }
    }

    /// The absolute URL of a webhook path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// The job kind that creates and renews one inbox's push subscription.
pub const JOB_KIND: &str = "push.maintain";
