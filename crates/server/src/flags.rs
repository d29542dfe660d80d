//! Feature flags in the server: evaluation, a short cache, and changes.
//!
//! The database is the one source of truth (`hirewire_store`'s feature
//! flags; a fresh database has Email Connect on for everyone, seeded by the
//! migration). [`Rollout`] is only the evaluation form of a stored flag.
//!
//! Each instance keeps the flag for `FlagConfig::cache_ttl` (by the app's
//! clock) and drops it at once when it changes the flag itself; other
//! instances (and the CLI's changes) are seen within one TTL. A change that
//! widens who has the feature makes held outbox messages due again one TTL
//! later, when every instance sees the new flag.
//!
//! Who changes what: the operator (`hirewire flags set`) changes everything;
//! an organization's admin (API and `/admin/email-connect`) only opts their
//! own organization in or out and allowlists their own users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hirewire_domain::ids::{OrgId, UserId};
use hirewire_store::{
    EMAIL_CONNECT, FeatureFlag, FlagActor, FlagEdit, FlagMode, OrgRule, Store, StoreError, User,
};
use jiff::Timestamp;

use crate::app::AppState;

/// Settings of flag evaluation.
#[derive(Debug, Clone, Copy)]
pub struct FlagConfig {
    /// How long an instance reuses a flag read from the database.
    pub cache_ttl: Duration,
}

impl Default for FlagConfig {
    fn default() -> Self {
        FlagConfig {
            cache_ttl: Duration::from_secs(10),
        }
    }
}

/// Who has a feature: the evaluation form of a stored [`FeatureFlag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub mode: FlagMode,
    /// 0..=100, of users by a stable hash (in `Targeted` mode).
    pub percent: u8,
    pub orgs: BTreeMap<OrgId, OrgRule>,
    pub users: BTreeSet<UserId>,
}

/// Why a user has a feature or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The flag is off for everybody.
    Off,
    /// The user is allowlisted.
    UserAllowlisted,
    /// Their organization is opted in.
    OrgIn,
    /// Their organization is opted out (and they are not allowlisted).
    OrgOut,
    /// On for everyone.
    Everyone,
    /// In the rollout percentage.
    InPercentage,
    /// Not in the rollout percentage (nor allowlisted).
    NotInPercentage,
}

impl Why {
    pub fn enabled(self) -> bool {
        matches!(
            self,
            Why::UserAllowlisted | Why::OrgIn | Why::Everyone | Why::InPercentage
        )
    }

    /// Stable code (API).
    pub fn code(self) -> &'static str {
        match self {
            Why::Off => "off",
            Why::UserAllowlisted => "user_allowlisted",
            Why::OrgIn => "org_opted_in",
            Why::OrgOut => "org_opted_out",
            Why::Everyone => "everyone",
            Why::InPercentage => "in_percentage",
            Why::NotInPercentage => "not_in_percentage",
        }
    }

    /// For people.
    pub fn words(self) -> &'static str {
        match self {
            Why::Off => "turned off for everyone by the operator",
            Why::UserAllowlisted => "on for this user",
            Why::OrgIn => "on for the whole organization",
            Why::OrgOut => "the organization is opted out",
            Why::Everyone => "on for everyone",
            Why::InPercentage => "in the gradual rollout",
            Why::NotInPercentage => "not in the gradual rollout yet",
        }
    }
}

impl Rollout {
    /// On for everyone (a fresh install).
    pub fn all() -> Self {
        Rollout {
            mode: FlagMode::Everyone,
            percent: 0,
            orgs: BTreeMap::new(),
            users: BTreeSet::new(),
        }
    }

    pub fn from_flag(flag: &FeatureFlag) -> Self {
        Rollout {
            mode: flag.mode,
            percent: flag.percent.min(100),
            orgs: flag.orgs.clone(),
            users: flag.users.keys().copied().collect(),
        }
    }

    /// Whether `user` of `org` has the feature.
    pub fn enabled(&self, org: OrgId, user: UserId) -> bool {
        self.why(org, user).enabled()
    }

    /// Whether and why: off beats everything, then the user's allowlist, then
    /// the org's rule, then the mode (everyone, or the percentage).
    pub fn why(&self, org: OrgId, user: UserId) -> Why {
        if self.mode == FlagMode::Off {
            return Why::Off;
        }
        if self.users.contains(&user) {
            return Why::UserAllowlisted;
        }
        match self.orgs.get(&org) {
            Some(OrgRule::In) => return Why::OrgIn,
            Some(OrgRule::Out) => return Why::OrgOut,
            None => {}
        }
        if self.mode == FlagMode::Everyone {
            Why::Everyone
        } else if bucket(user) < u32::from(self.percent.min(100)) {
            Why::InPercentage
        } else {
            Why::NotInPercentage
        }
    }
}

/// The user's rollout bucket, 0..100, stable across restarts and instances
/// (SHA-256 of the id, not `std`'s randomly seeded hasher): the user is in a
/// rollout of `p` percent exactly when `bucket < p`, so raising `p` only adds
/// users.
pub fn bucket(user: UserId) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("email_connect:{}", user.get()).as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 100
}

/// Flags read recently by this instance.
#[derive(Default)]
pub struct FlagCache {
    entries: Mutex<HashMap<&'static str, (Timestamp, Arc<Rollout>)>>,
}

impl FlagCache {
    fn get(&self, name: &'static str, now: Timestamp, ttl: Duration) -> Option<Arc<Rollout>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, r) = entries.get(name)?;
        let age = now.duration_since(*at);
        (age >= jiff::SignedDuration::ZERO
            && age < jiff::SignedDuration::try_from(ttl).unwrap_or_default())
        .then(|| r.clone())
    }

    fn put(&self, name: &'static str, now: Timestamp, r: Arc<Rollout>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(name, (now, r));
    }

    /// Forgets every flag (after a local change).
    pub fn invalidate(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Email Connect's rollout, from the cache or the database. A missing flag
/// row (never the case after the migrations) counts as off.
pub async fn email_connect(state: &AppState) -> Result<Arc<Rollout>, StoreError> {
    let now = state.now();
    let ttl = state.config.flags.cache_ttl;
    if let Some(r) = state.flags.get(EMAIL_CONNECT, now, ttl) {
        return Ok(r);
    }
    let r = Arc::new(match state.store.feature_flag(EMAIL_CONNECT).await? {
        Some(f) => Rollout::from_flag(&f),
        None => Rollout {
            mode: FlagMode::Off,
            ..Rollout::all()
        },
    });
    state.flags.put(EMAIL_CONNECT, now, r.clone());
    Ok(r)
}

/// Whether `user` has Email Connect now.
pub async fn email_connect_enabled(state: &AppState, user: &User) -> Result<bool, StoreError> {
    Ok(email_connect(state).await?.enabled(user.org_id, user.id))
}

/// What a change would do to messages already queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Queued messages whose sender loses the feature, per sender.
    pub per_user: Vec<(OrgId, UserId, u64)>,
}

impl Held {
    pub fn total(&self) -> u64 {
        self.per_user.iter().map(|(_, _, n)| n).sum()
    }

    /// "N scheduled emails will be held …", or `None` when none will.
    pub fn sentence(&self) -> Option<String> {
        let n = self.total();
        (n > 0).then(|| {
            format!(
                "{n} scheduled email{} will be held: {} not go out while Email Connect is off for {} sender{}, and go out when it is turned back on (or when cancelled, never).",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it does" } else { "they do" },
                if self.per_user.len() == 1 { "its" } else { "their" },
                if self.per_user.len() == 1 { "" } else { "s" },
            )
        })
    }
}

/// How a change ended.
#[derive(Debug, Clone)]
pub enum Changed {
    Saved {
        before: FeatureFlag,
        after: FeatureFlag,
    },
    /// It would hold queued messages; nothing was written. Ask again with `confirm`.
    NeedsConfirmation(Held),
}

/// Changes flag `name` (operator: `scope: None`; an org admin: their org).
/// A change that would hold queued messages is only made with `confirm`.
/// After a change, held messages in scope are made due at `release_at` (pass
/// now + the cache TTL, so every instance sees the new flag by then).
#[allow(clippy::too_many_arguments)]
pub async fn change(
    store: &Store,
    name: &str,
    scope: Option<OrgId>,
    edit: &FlagEdit,
    user_orgs: &BTreeMap<UserId, OrgId>,
    actor: &FlagActor<'_>,
    confirm: bool,
    now: Timestamp,
    release_at: Timestamp,
) -> Result<Changed, StoreError> {
    let current = store
        .feature_flag(name)
        .await?
        .ok_or(StoreError::NotFound)?;
    let next = current.applied(edit, scope, user_orgs)?;
    let (before, after) = (Rollout::from_flag(&current), Rollout::from_flag(&next));
    let held = Held {
        per_user: store
            .queued_outbox_by_user(scope)
            .await?
            .into_iter()
            .filter(|(o, u, _)| before.enabled(*o, *u) && !after.enabled(*o, *u))
            .collect(),
    };
    if held.total() > 0 && !confirm {
        return Ok(Changed::NeedsConfirmation(held));
    }
    let (before, after) = store
        .update_feature_flag(name, scope, edit, actor, now)
        .await?;
    if before != after {
        store.release_outbox_holds(scope, release_at).await?;
    }
    Ok(Changed::Saved { before, after })
}

/// [`change`] of Email Connect from this instance: its cache is dropped.
pub async fn change_email_connect(
    state: &AppState,
    scope: Option<OrgId>,
    edit: &FlagEdit,
    user_orgs: &BTreeMap<UserId, OrgId>,
    actor: &FlagActor<'_>,
    confirm: bool,
) -> Result<Changed, StoreError> {
    let now = state.now();
    let release_at = now
        .checked_add(
            jiff::SignedDuration::try_from(state.config.flags.cache_ttl).unwrap_or_default(),
        )
        .unwrap_or(now);
    let out = change(
        &state.store,
        EMAIL_CONNECT,
        scope,
        edit,
        user_orgs,
        actor,
        confirm,
        now,
        release_at,
    )
    .await;
    state.flags.invalidate();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_beats_everything_and_a_user_allowlist_beats_an_org_opt_out() {
        let mut r = Rollout::all();
        r.users.insert(UserId(1));
        r.orgs.insert(OrgId(9), OrgRule::Out);
        assert_eq!(r.why(OrgId(9), UserId(1)), Why::UserAllowlisted);
        assert_eq!(r.why(OrgId(9), UserId(2)), Why::OrgOut);
        assert_eq!(r.why(OrgId(8), UserId(2)), Why::Everyone);
        r.mode = FlagMode::Off;
        assert_eq!(r.why(OrgId(9), UserId(1)), Why::Off);
    }

    #[test]
    fn raising_the_percentage_only_adds_users() {
        let mut r = Rollout {
            mode: FlagMode::Targeted,
            ..Rollout::all()
        };
        let mut had = BTreeSet::new();
        for p in 0..=100 {
            r.percent = p;
            let now: BTreeSet<i64> = (1..=500)
                .filter(|u| r.enabled(OrgId(1), UserId(*u)))
                .collect();
            assert!(had.is_subset(&now), "at {p}%");
            had = now;
        }
        assert_eq!(had.len(), 500, "everyone at 100%");
    }
}
