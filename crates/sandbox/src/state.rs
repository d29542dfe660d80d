//! The sandbox's durable state: directory (tenants, domains, users, clients), grants, codes and tokens.
//! Serialized as one JSON document to `<state_dir>/sandbox-state.json` on every change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scenario::{
    ClientSpec, DomainPolicy, Provider, Scenario, Settings, TenantPolicy, UserSpec,
};

/// An Entra ID tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant GUID.
    pub id: String,
    /// Organization name.
    pub name: String,
    /// Verified domains.
    pub domains: Vec<String>,
    /// Consent and assignment policy.
    pub policy: TenantPolicy,
    /// Admin consent granted: client id -> scopes.
    pub admin_consents: BTreeMap<String, BTreeSet<String>>,
}

/// A Google Workspace domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Domain {
    /// Primary domain.
    pub domain: String,
    /// Organization name.
    pub name: String,
    /// Admin console policy.
    pub policy: DomainPolicy,
}

/// A user of either provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Which provider the account lives at.
    pub provider: Provider,
    /// Graph object id (GUID) or Google `sub` (21 digits).
    pub id: String,
    /// Sign-in and mailbox address.
    pub email: String,
    /// Full name.
    pub display_name: String,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Job title.
    pub job_title: Option<String>,
    /// Tenant GUID (Microsoft) or domain (Google).
    pub org: String,
    /// Tenant or domain administrator.
    pub admin: bool,
    /// Bumped by a password change or "revoke sessions": refresh tokens of an older generation stop working.
    pub token_generation: u64,
    /// Unix seconds of the last bump of `token_generation`.
    pub tokens_valid_from: i64,
    /// Gmail mailbox history id (a uint64, sent as a string).
    pub history_id: u64,
}

/// A registered OAuth client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// Which provider it is registered with.
    pub provider: Provider,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// App name.
    pub name: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Microsoft: home tenant GUID of a single-tenant app.
    pub home_tenant: Option<String>,
    /// Microsoft: the registration's configured permissions (`/.default`).
    pub app_scopes: Vec<String>,
    /// Google: Testing publishing status.
    pub testing_mode: bool,
}

/// What a user consented to for one client (Microsoft: the user's delegated permission grant;
/// Google: the (user, client) grant that `/revoke` kills as a whole).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    /// Opaque id.
    pub id: String,
    /// Provider.
    pub provider: Provider,
    /// User email.
    pub user: String,
    /// Client id.
    pub client_id: String,
    /// Consented scopes (Microsoft: short Graph names or full URIs of other resources; Google: full URIs + `openid`).
    pub scopes: BTreeSet<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Google: a refresh token was handed out for this grant already.
    pub refresh_token_issued: bool,
}

/// An authorization code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Code {
    /// Provider.
    pub provider: Provider,
    /// User email.
    pub user: String,
    /// Client id.
    pub client_id: String,
    /// The redirect URI the code was sent to.
    pub redirect_uri: String,
    /// Scopes the tokens will carry (normalized, in order).
    pub scopes: Vec<String>,
    /// PKCE challenge and method.
    pub challenge: Option<(String, String)>,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// Microsoft: the tenant the user signed in to.
    pub tenant_id: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Already exchanged.
    pub redeemed: bool,
    /// A refresh token comes with the tokens.
    pub offline: bool,
}

/// A refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Provider.
    pub provider: Provider,
    /// User email.
    pub user: String,
    /// Client id.
    pub client_id: String,
    /// Scopes it was issued with.
    pub scopes: Vec<String>,
    /// Microsoft: tenant GUID.
    pub tenant_id: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub last_used_at: i64,
    /// The user's `token_generation` when issued.
    pub generation: u64,
    /// Revoked explicitly (Google `/revoke`).
    pub revoked: bool,
}

/// An access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    /// Provider.
    pub provider: Provider,
    /// User email.
    pub user: String,
    /// Client id.
    pub client_id: String,
    /// Scopes (normalized).
    pub scopes: Vec<String>,
    /// Microsoft: the audience (`https://graph.microsoft.com`, `https://outlook.office.com`).
    pub audience: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Revoked (Google `/revoke`, password change).
    pub revoked: bool,
}

/// The whole persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Entra ID tenants.
    pub tenants: Vec<Tenant>,
    /// Google Workspace domains.
    pub domains: Vec<Domain>,
    /// Users of both providers.
    pub users: Vec<User>,
    /// Registered clients.
    pub clients: Vec<Client>,
    /// Grants by id.
    pub grants: BTreeMap<String, Grant>,
    /// Authorization codes by value.
    pub codes: BTreeMap<String, Code>,
    /// Refresh tokens by value.
    pub refresh_tokens: BTreeMap<String, RefreshToken>,
    /// Access tokens by value.
    pub access_tokens: BTreeMap<String, AccessToken>,
    /// Lifetimes, quotas and switches.
    pub settings: Settings,
}

/// A GUID-shaped id derived from a seed, so scenario ids are stable across restarts.
pub fn stable_guid(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let x = hex(&h[..16]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Google-style numeric `sub` derived from the email.
fn stable_google_sub(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let mut n = String::from("1");
    for b in h.iter().take(20) {
        n.push(char::from(b'0' + b % 10));
    }
    n
}

impl State {
    /// Builds the initial state from a scenario.
    pub fn from_scenario(s: &Scenario) -> Result<Self, String> {
        let mut st = State {
            settings: s.settings.clone(),
            ..State::default()
        };
        for t in &s.microsoft_tenants {
            let first = t
                .domains
                .first()
                .ok_or_else(|| format!("tenant {} has no domain", t.name))?;
            let id =
                t.id.clone()
                    .unwrap_or_else(|| stable_guid(&format!("tenant:{first}")));
            st.tenants.push(Tenant {
                id: id.clone(),
                name: t.name.clone(),
                domains: t.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                policy: t.policy.clone(),
                admin_consents: t.admin_consents.clone(),
            });
            for u in &t.users {
                st.add_user(Provider::Microsoft, &id, u)?;
            }
        }
        for d in &s.google_domains {
            let domain = d.domain.to_ascii_lowercase();
            st.domains.push(Domain {
                domain: domain.clone(),
                name: d.name.clone().unwrap_or_else(|| domain.clone()),
                policy: d.policy.clone(),
            });
            for u in &d.users {
                st.add_user(Provider::Google, &domain, u)?;
            }
        }
        for c in &s.clients {
            st.add_client(c)?;
        }
        Ok(st)
    }

    /// Adds a user to a tenant (GUID) or domain.
    pub fn add_user(
        &mut self,
        provider: Provider,
        org: &str,
        u: &UserSpec,
    ) -> Result<User, String> {
        let email = u.email.trim().to_ascii_lowercase();
        if !email.contains('@') {
            return Err(format!("not an email address: {email}"));
        }
        if self.user(&email).is_some() {
            return Err(format!("user {email} exists already"));
        }
        let mut words = u.display_name.split_whitespace();
        let first = words.next().unwrap_or_default().to_string();
        let rest = words.collect::<Vec<_>>().join(" ");
        let id = u.id.clone().unwrap_or_else(|| match provider {
            Provider::Microsoft => stable_guid(&format!("user:{email}")),
            Provider::Google => stable_google_sub(&email),
        });
        let user = User {
            provider,
            id,
            email: email.clone(),
            display_name: u.display_name.clone(),
            given_name: u.given_name.clone().unwrap_or(first),
            surname: u.surname.clone().unwrap_or(rest),
            job_title: u.job_title.clone(),
            org: org.to_string(),
            admin: u.admin,
            token_generation: 0,
            tokens_valid_from: 0,
            history_id: 1000 + (self.users.len() as u64) * 1000,
        };
        self.users.push(user.clone());
        Ok(user)
    }

    /// Registers a client (replacing one with the same id).
    pub fn add_client(&mut self, c: &ClientSpec) -> Result<Client, String> {
        if c.client_id.is_empty() || c.client_secret.is_empty() {
            return Err("client_id and client_secret must not be empty".into());
        }
        let home_tenant = match &c.home_tenant {
            Some(t) => Some(
                self.tenant(t)
                    .map(|t| t.id.clone())
                    .ok_or_else(|| format!("unknown home tenant {t}"))?,
            ),
            None => None,
        };
        let client = Client {
            provider: c.provider,
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.clone(),
            name: c.name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            home_tenant,
            app_scopes: c.app_scopes.clone(),
            testing_mode: c.testing_mode,
        };
        self.clients.retain(|x| x.client_id != c.client_id);
        self.clients.push(client.clone());
        Ok(client)
    }

    /// A tenant by GUID or verified domain (case-insensitive).
    pub fn tenant(&self, key: &str) -> Option<&Tenant> {
        let key = key.to_ascii_lowercase();
        self.tenants
            .iter()
            .find(|t| t.id == key || t.domains.contains(&key))
    }

    /// Mutable [`State::tenant`].
    pub fn tenant_mut(&mut self, key: &str) -> Option<&mut Tenant> {
        let key = key.to_ascii_lowercase();
        self.tenants
            .iter_mut()
            .find(|t| t.id == key || t.domains.contains(&key))
    }

    /// A Google domain.
    pub fn domain(&self, key: &str) -> Option<&Domain> {
        let key = key.to_ascii_lowercase();
        self.domains.iter().find(|d| d.domain == key)
    }

    /// A user by email (case-insensitive).
    pub fn user(&self, email: &str) -> Option<&User> {
        let email = email.trim().to_ascii_lowercase();
        self.users.iter().find(|u| u.email == email)
    }

    /// Mutable [`State::user`].
    pub fn user_mut(&mut self, email: &str) -> Option<&mut User> {
        let email = email.trim().to_ascii_lowercase();
        self.users.iter_mut().find(|u| u.email == email)
    }

    /// A client by id.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.client_id == id)
    }

    /// The grant of a user to a client.
    pub fn grant_for(&self, user: &str, client_id: &str) -> Option<&Grant> {
        self.grants
            .values()
            .find(|g| g.user == user && g.client_id == client_id)
    }

    /// The grant of a user to a client, created empty when missing.
    pub fn grant_for_mut(
        &mut self,
        provider: Provider,
        user: &str,
        client_id: &str,
        now: i64,
    ) -> &mut Grant {
        let id = match self.grant_for(user, client_id) {
            Some(g) => g.id.clone(),
            None => {
                let id = crate::wire::random_token(12);
                self.grants.insert(
                    id.clone(),
                    Grant {
                        id: id.clone(),
                        provider,
                        user: user.to_string(),
                        client_id: client_id.to_string(),
                        scopes: BTreeSet::new(),
                        created_at: now,
                        refresh_token_issued: false,
                    },
                );
                id
            }
        };
        self.grants
            .get_mut(&id)
            .expect("grant just found or inserted")
    }

    /// Removes the grant of a user to a client and, for Google, revokes every token of it.
    /// Returns whether a grant existed.
    pub fn revoke_grant(&mut self, user: &str, client_id: &str) -> bool {
        let Some(g) = self.grant_for(user, client_id).cloned() else {
            return false;
        };
        self.grants.remove(&g.id);
        if g.provider == Provider::Google {
            for t in self.refresh_tokens.values_mut() {
                if t.user == user && t.client_id == client_id {
                    t.revoked = true;
                }
            }
            for t in self.access_tokens.values_mut() {
                if t.user == user && t.client_id == client_id {
                    t.revoked = true;
                }
            }
        }
        true
    }

    /// Drops expired codes and access tokens long past expiry, so the state file stays small.
    pub fn prune(&mut self, now: i64) {
        self.codes.retain(|_, c| c.expires_at + 3600 > now);
        self.access_tokens
            .retain(|_, t| t.expires_at + 86_400 > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_guids_are_guid_shaped_and_stable() {
        let a = stable_guid("x");
        assert_eq!(a, stable_guid("x"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, stable_guid("y"));
    }

    #[test]
    fn builtin_scenario_builds() {
        let st = State::from_scenario(&Scenario::builtin()).unwrap();
        assert!(st.tenant("acme.example").is_some());
        assert!(st.domain("globex.example").is_some());
        let hank = st.user("Hank@Globex.example").unwrap();
        assert_eq!(hank.id.len(), 21);
        assert!(hank.id.chars().all(|c| c.is_ascii_digit()));
    }
}
