//! Candidates and their addresses.
//!
//! Rules:
//! - An address belongs to at most one candidate per organization, compared by
//!   [`AddressKey`] (Unicode-lowercased in Rust). The same address may belong
//!   to candidates of different organizations.
//! - A candidate may have no address at all (e.g. known only through InMail),
//!   so removing the last address is allowed.
//! - Lists are newest first: ordered by id descending, paged with an `after`
//!   cursor (the last id of the previous page; the next page holds smaller ids).

use std::collections::HashMap;

use hirewire_domain::email::{AddressKey, EmailAddress};
use hirewire_domain::ids::{CandidateId, OrgId};
use jiff::Timestamp;

use crate::error::conflict;
use crate::model::decode_address;
use crate::time::{ms, ts};
use crate::{Candidate, CandidateEmail, CandidatePage, Store, StoreError};

const ADDRESS_TAKEN: &str = "an address already belongs to another candidate";

/// Largest page [`Store::list_candidates`] returns.
pub const MAX_PAGE: u32 = 500;

#[derive(sqlx::FromRow)]
struct CandidateRow {
    id: i64,
    org_id: i64,
    name: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct EmailRow {
    candidate_id: i64,
    address: String,
    address_key: String,
}

fn valid_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("the candidate name is empty".into()));
    }
    Ok(name)
}

/// The search key of a name: trimmed, Unicode-lowercased.
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// `%text%` for `LIKE … ESCAPE '\'`, with the text lowercased in Rust and its
/// wildcards escaped. `None` for an empty search.
fn like_pattern(search: &str) -> Option<String> {
    let s = search.trim().to_lowercase();
    if s.is_empty() {
        return None;
    }
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    Some(p)
}

impl Store {
    /// Creates a candidate with its addresses in one transaction. Addresses
    /// with equal keys in `addresses` are kept once (the first spelling). An
    /// address that already belongs to another candidate of the organization →
    /// `Conflict` and nothing is written. Unknown org → `NotFound`.
    pub async fn create_candidate(
        &self,
        org: OrgId,
        name: &str,
        addresses: &[EmailAddress],
        now: Timestamp,
    ) -> Result<Candidate, StoreError> {
        let name = valid_name(name)?;
        let mut seen = std::collections::HashSet::new();
        let addresses: Vec<&EmailAddress> =
            addresses.iter().filter(|a| seen.insert(a.key())).collect();
        let id: i64 = write_tx!(self, |tx| {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
                    .bind(org.get())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO candidates (org_id, name, name_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(org.get())
            .bind(name)
            .bind(name_key(name))
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await?;
            for a in &addresses {
                sqlx::query(
                    "INSERT INTO candidate_emails (candidate_id, org_id, address, address_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(org.get())
                .bind(a.as_str())
                .bind(a.key().as_str())
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .map_err(conflict(ADDRESS_TAKEN))?;
            }
            id
        });
        self.candidate(org, CandidateId(id))
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// One candidate of `org` with its addresses; `None` if it does not exist
    /// in that organization.
    pub async fn candidate(
        &self,
        org: OrgId,
        id: CandidateId,
    ) -> Result<Option<Candidate>, StoreError> {
        let row: Option<CandidateRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, org_id, name, created_at, updated_at FROM candidates WHERE org_id = $1 AND id = $2"
        )
        .bind(org.get())
        .bind(id.get())
        .fetch_optional(pool)
        .await
        })?;
        Ok(self
            .with_emails(org, row.into_iter().collect())
            .await?
            .pop())
    }

    /// The candidate of `org` that owns `key`, if any.
    pub async fn candidate_by_address_key(
        &self,
        org: OrgId,
        key: &AddressKey,
    ) -> Result<Option<Candidate>, StoreError> {
        let row: Option<CandidateRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT c.id, c.org_id, c.name, c.created_at, c.updated_at FROM candidates c \
             JOIN candidate_emails e ON e.candidate_id = c.id AND e.org_id = c.org_id \
             WHERE e.org_id = $1 AND e.address_key = $2"
        )
        .bind(org.get())
        .bind(key.as_str())
        .fetch_optional(pool)
        .await)?;
        Ok(self
            .with_emails(org, row.into_iter().collect())
            .await?
            .pop())
    }

    /// A page of `org`'s candidates, newest first (id descending). `search`
    /// matches a substring of the name or of any address, case-insensitively
    /// (Unicode). `after` is the previous page's `next_after`. `limit` is
    /// 1..=[`MAX_PAGE`] (larger values are clamped; 0 → `Invalid`).
    pub async fn list_candidates(
        &self,
        org: OrgId,
        search: Option<&str>,
        after: Option<CandidateId>,
        limit: u32,
    ) -> Result<CandidatePage, StoreError> {
        if limit == 0 {
            return Err(StoreError::Invalid(
                "the page size must be at least 1".into(),
            ));
        }
        let limit = limit.min(MAX_PAGE);
        let pattern = search.and_then(like_pattern);
        let rows: Vec<CandidateRow> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT c.id, c.org_id, c.name, c.created_at, c.updated_at FROM candidates c \
             WHERE c.org_id = $1 \
               AND ($2 IS NULL OR c.id < $2) \
               AND ($3 IS NULL OR c.name_key LIKE $3 ESCAPE '\\' OR EXISTS ( \
                    SELECT 1 FROM candidate_emails e \
                    WHERE e.org_id = c.org_id AND e.candidate_id = c.id AND e.address_key LIKE $3 ESCAPE '\\')) \
             ORDER BY c.id DESC LIMIT $4"
        )
        .bind(org.get())
        .bind(after.map(CandidateId::get))
        .bind(pattern.as_deref())
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        })?;
        let mut rows = rows;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let candidates = self.with_emails(org, rows).await?;
        let next_after = if more {
            candidates.last().map(|c| c.id)
        } else {
            None
        };
        Ok(CandidatePage {
            candidates,
            next_after,
        })
    }

    /// Renames a candidate of `org`.
    pub async fn update_candidate_name(
        &self,
        org: OrgId,
        id: CandidateId,
        name: &str,
        now: Timestamp,
    ) -> Result<Candidate, StoreError> {
        let name = valid_name(name)?;
        let done = write_tx!(self, |tx| {
            sqlx::query(
            "UPDATE candidates SET name = $1, name_key = $2, updated_at = $3 WHERE org_id = $4 AND id = $5"
        )
        .bind(name)
        .bind(name_key(name))
        .bind(ms(now))
        .bind(org.get())
        .bind(id.get())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        self.candidate(org, id).await?.ok_or(StoreError::NotFound)
    }

    /// Adds an address to a candidate of `org`. Adding an address the
    /// candidate already has is a no-op; one owned by another candidate of the
    /// organization → `Conflict`.
    pub async fn add_candidate_email(
        &self,
        org: OrgId,
        id: CandidateId,
        address: &EmailAddress,
        now: Timestamp,
    ) -> Result<Candidate, StoreError> {
        let key = address.key();
        write_tx!(self, |tx| {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM candidates WHERE org_id = $1 AND id = $2")
                    .bind(org.get())
                    .bind(id.get())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            let owner: Option<i64> = sqlx::query_scalar(
                "SELECT candidate_id FROM candidate_emails WHERE org_id = $1 AND address_key = $2",
            )
            .bind(org.get())
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match owner {
                Some(owner) if owner == id.get() => {}
                Some(_) => {
                    return Err(StoreError::Conflict {
                        what: ADDRESS_TAKEN,
                    });
                }
                None => {
                    sqlx::query(
                        "INSERT INTO candidate_emails (candidate_id, org_id, address, address_key, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id.get())
                    .bind(org.get())
                    .bind(address.as_str())
                    .bind(key.as_str())
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict(ADDRESS_TAKEN))?;
                    sqlx::query("UPDATE candidates SET updated_at = $1 WHERE id = $2")
                        .bind(ms(now))
                        .bind(id.get())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        });
        self.candidate(org, id).await?.ok_or(StoreError::NotFound)
    }

    /// Removes one address from a candidate of `org` (the last one too: a
    /// candidate may have none). `NotFound` if the candidate does not have it.
    pub async fn remove_candidate_email(
        &self,
        org: OrgId,
        id: CandidateId,
        key: &AddressKey,
        now: Timestamp,
    ) -> Result<Candidate, StoreError> {
        write_tx!(self, |tx| {
            let removed = sqlx::query(
                "DELETE FROM candidate_emails WHERE org_id = $1 AND candidate_id = $2 AND address_key = $3",
            )
            .bind(org.get())
            .bind(id.get())
            .bind(key.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("UPDATE candidates SET updated_at = $1 WHERE id = $2")
                .bind(ms(now))
                .bind(id.get())
                .execute(&mut *tx)
                .await?;
        });
        self.candidate(org, id).await?.ok_or(StoreError::NotFound)
    }

    /// Attaches the addresses to candidate rows (one query for the page).
    async fn with_emails(
        &self,
        org: OrgId,
        rows: Vec<CandidateRow>,
    ) -> Result<Vec<Candidate>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Only numbered placeholders are generated; every value is bound.
        let placeholders: Vec<String> = (0..rows.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT candidate_id, address, address_key FROM candidate_emails \
             WHERE org_id = $1 AND candidate_id IN ({}) ORDER BY id",
            placeholders.join(", ")
        );
        let emails: Vec<EmailRow> = on_pool!(self, |pool| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(org.get());
            for r in &rows {
                q = q.bind(r.id);
            }
            q.fetch_all(pool).await
        })?;
        let mut by_candidate: HashMap<i64, Vec<CandidateEmail>> = HashMap::new();
        for e in emails {
            by_candidate
                .entry(e.candidate_id)
                .or_default()
                .push(CandidateEmail {
                    address: decode_address(&e.address)?,
                    key: AddressKey::of(&e.address_key),
                });
        }
        rows.into_iter()
            .map(|r| {
                Ok(Candidate {
                    id: CandidateId(r.id),
                    org_id: OrgId(r.org_id),
                    name: r.name,
                    emails: by_candidate.remove(&r.id).unwrap_or_default(),
                    created_at: ts(r.created_at)?,
                    updated_at: ts(r.updated_at)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn search_patterns_are_lowercased_and_escape_wildcards() {
        assert_eq!(like_pattern("  ÉLO ").as_deref(), Some("%élo%"));
        assert_eq!(
            like_pattern("50%_a\\b").as_deref(),
            Some("%50\\%\\_a\\\\b%")
        );
        assert_eq!(like_pattern("   "), None);
    }
}
