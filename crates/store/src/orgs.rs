//! Organizations and their mail domains.

use hirewire_domain::email::MailDomain;
use hirewire_domain::ids::OrgId;
use jiff::Timestamp;

use crate::error::conflict;
use crate::time::{ms, ts};
use crate::{Organization, Store, StoreError};

const NAME_TAKEN: &str = "an organization with this name already exists";

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: i64,
    name: String,
    created_at: i64,
}

fn valid_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("the organization name is empty".into()));
    }
    Ok(name)
}

fn sorted_domains(domains: &[MailDomain]) -> Vec<MailDomain> {
    let mut v = domains.to_vec();
    v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    v.dedup();
    v
}

impl Store {
    /// Creates an organization. The name (trimmed) is unique → `Conflict`.
    /// A domain may be listed by several organizations.
    pub async fn create_org(
        &self,
        name: &str,
        domains: &[MailDomain],
        now: Timestamp,
    ) -> Result<Organization, StoreError> {
        let name = valid_name(name)?;
        let domains = sorted_domains(domains);
        let id: i64 = write_tx!(self, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO organizations (name, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(name)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict(NAME_TAKEN))?;
            for d in &domains {
                sqlx::query("INSERT INTO org_domains (org_id, domain) VALUES ($1, $2)")
                    .bind(id)
                    .bind(d.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            id
        });
        Ok(Organization {
            id: OrgId(id),
            name: name.to_owned(),
            domains,
            created_at: ts(ms(now))?,
        })
    }

    pub async fn org_by_id(&self, id: OrgId) -> Result<Option<Organization>, StoreError> {
        let row: Option<OrgRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM organizations WHERE id = $1"
        )
        .bind(id.get())
        .fetch_optional(pool)
        .await)?;
        self.finish_org(row).await
    }

    /// Exact (trimmed) name match.
    pub async fn org_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        let row: Option<OrgRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM organizations WHERE name = $1"
        )
        .bind(name.trim())
        .fetch_optional(pool)
        .await)?;
        self.finish_org(row).await
    }

    /// Renames the organization and replaces its domain list, atomically.
    pub async fn update_org(
        &self,
        id: OrgId,
        name: &str,
        domains: &[MailDomain],
    ) -> Result<Organization, StoreError> {
        let name = valid_name(name)?;
        let domains = sorted_domains(domains);
        write_tx!(self, |tx| {
            let updated = sqlx::query("UPDATE organizations SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id.get())
                .execute(&mut *tx)
                .await
                .map_err(conflict(NAME_TAKEN))?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("DELETE FROM org_domains WHERE org_id = $1")
                .bind(id.get())
                .execute(&mut *tx)
                .await?;
            for d in &domains {
                sqlx::query("INSERT INTO org_domains (org_id, domain) VALUES ($1, $2)")
                    .bind(id.get())
                    .bind(d.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        });
        self.org_by_id(id).await?.ok_or(StoreError::NotFound)
    }

    async fn finish_org(&self, row: Option<OrgRow>) -> Result<Option<Organization>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let names: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT domain FROM org_domains WHERE org_id = $1 ORDER BY domain"
        )
        .bind(row.id)
        .fetch_all(pool)
        .await)?;
        let domains = names
            .iter()
            .map(|d| {
                MailDomain::parse(d)
                    .map_err(|e| StoreError::Corrupt(format!("stored domain {d:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Organization {
            id: OrgId(row.id),
            name: row.name,
            domains,
            created_at: ts(row.created_at)?,
        }))
    }
}
