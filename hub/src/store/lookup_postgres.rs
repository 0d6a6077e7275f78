//! PostgreSQL queries for the lookup API (see `lookup.rs`). A child module of `postgres.rs`.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::{PgStore, count, e, limit, now};
use crate::store::StoreError;
use crate::store::lookup::{
    HouseholdRows, LookupRow, PersonRelation, QualityRow, SourceFreshness, inverse_kind, role_of,
};
use crate::users::{Role, User};

const USER_COLUMNS: &str = "id, name, role, organisation, disabled, created_at";

fn to_user(r: &sqlx::postgres::PgRow) -> Result<User, StoreError> {
    let op = "read users";
    Ok(User {
        id: r.try_get(0).map_err(e(op))?,
        name: r.try_get(1).map_err(e(op))?,
        role: role_of(&r.try_get::<String, _>(2).map_err(e(op))?)?,
        organisation: r.try_get(3).map_err(e(op))?,
        disabled: r.try_get(4).map_err(e(op))?,
        created_at: r.try_get(5).map_err(e(op))?,
    })
}

impl PgStore {
    pub(in crate::store) async fn add_user(
        &self,
        name: &str,
        role: Role,
        organisation: &str,
        token_hash: [u8; 32],
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO users (name, role, organisation, disabled, token_hash, created_at)
             VALUES ($1, $2, $3, false, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(organisation)
        .bind(&token_hash[..])
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(e("add user"))
    }

    pub(in crate::store) async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(e("read users"))?;
        rows.iter().map(to_user).collect()
    }

    pub(in crate::store) async fn set_user_disabled(
        &self,
        id: i64,
        disabled: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .execute(&self.pool)
            .await
            .map_err(e("disable user"))?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn user_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE token_hash = $1"
        )))
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(e("read users"))?;
        row.as_ref().map(to_user).transpose()
    }

    pub(in crate::store) async fn person_involvements(
        &self,
        persons: Vec<Vec<u8>>,
    ) -> Result<Vec<LookupRow>, StoreError> {
        let op = "lookup";
        let rows = sqlx::query(
            "SELECT source, person, organisation_code, organisation_name, team,
                    life_domain, goal, contact_name, contact_role, contact_phone,
                    contact_email, start_date, end_date, status, coordinator,
                    sensitive, shielded, end_reason_code, end_reason
             FROM involvements WHERE person = ANY($1)
             ORDER BY source, source_record_id",
        )
        .bind(&persons)
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(LookupRow {
                source: r.try_get(0).map_err(e(op))?,
                person: r.try_get(1).map_err(e(op))?,
                organisation_code: r.try_get(2).map_err(e(op))?,
                organisation_name: r.try_get(3).map_err(e(op))?,
                team: r.try_get(4).map_err(e(op))?,
                life_domain: r.try_get(5).map_err(e(op))?,
                goal: r.try_get(6).map_err(e(op))?,
                contact_name: r.try_get(7).map_err(e(op))?,
                contact_role: r.try_get(8).map_err(e(op))?,
                contact_phone: r.try_get(9).map_err(e(op))?,
                contact_email: r.try_get(10).map_err(e(op))?,
                start_date: r.try_get::<NaiveDate, _>(11).map_err(e(op))?.to_string(),
                end_date: r
                    .try_get::<Option<NaiveDate>, _>(12)
                    .map_err(e(op))?
                    .map(|d| d.to_string()),
                status: r.try_get(13).map_err(e(op))?,
                coordinator: r.try_get(14).map_err(e(op))?,
                sensitive: r.try_get(15).map_err(e(op))?,
                shielded: r.try_get(16).map_err(e(op))?,
                end_reason_code: r.try_get(17).map_err(e(op))?,
                end_reason: r.try_get(18).map_err(e(op))?,
            });
        }
        Ok(out)
    }

    pub(in crate::store) async fn person_relations(
        &self,
        person: Vec<u8>,
    ) -> Result<Vec<PersonRelation>, StoreError> {
        let op = "lookup relations";
        let rows = sqlx::query(
            "SELECT DISTINCT r.kind, r.other, false FROM involvements i
             JOIN relations r ON r.source = i.source AND r.source_record_id = i.source_record_id
             WHERE i.person = $1
             UNION
             SELECT DISTINCT kind, person, true FROM relations WHERE other = $1",
        )
        .bind(&person)
        .fetch_all(&self.pool)
        .await
        .map_err(e(op))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get(0).map_err(e(op))?;
            let reverse: bool = r.try_get(2).map_err(e(op))?;
            out.push(PersonRelation {
                kind: if reverse {
                    inverse_kind(&kind).to_owned()
                } else {
                    kind
                },
                other: r.try_get(1).map_err(e(op))?,
            });
        }
        Ok(out)
    }

    pub(in crate::store) async fn household_rows(
        &self,
        selves: Vec<Vec<u8>>,
    ) -> Result<HouseholdRows, StoreError> {
        let mut relations = Vec::new();
        for person in &selves {
            relations.extend(self.person_relations(person.clone()).await?);
        }
        let mut persons = selves;
        for r in &relations {
            if !persons.contains(&r.other) {
                persons.push(r.other.clone());
            }
        }
        let (rows, freshness) =
            tokio::try_join!(self.person_involvements(persons), self.source_freshness())?;
        Ok(HouseholdRows {
            relations,
            rows,
            freshness,
        })
    }

    pub(in crate::store) async fn source_freshness(
        &self,
    ) -> Result<Vec<SourceFreshness>, StoreError> {
        let rows: Vec<(String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT name, last_success_at FROM sources ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(e("freshness"))?;
        Ok(rows
            .into_iter()
            .map(|(source, last_success_at)| SourceFreshness {
                source,
                last_success_at,
            })
            .collect())
    }

    pub(in crate::store) async fn data_quality(
        &self,
        source: Option<&str>,
        max: u64,
    ) -> Result<Vec<QualityRow>, StoreError> {
        type Row = (i64, String, DateTime<Utc>, String, i64, i64, i64, i64, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT r.id, r.source, r.started_at, r.status, r.read, r.rejected,
               (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                  AND q.reason_code = 'invalid_bsn'),
               (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                  AND q.reason_code = 'missing_field' AND lower(q.field) LIKE '%contact%'),
               (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                  AND q.reason_code = 'unknown_code')
             FROM runs r WHERE ($1::text IS NULL OR r.source = $1)
             ORDER BY r.id DESC LIMIT $2",
        )
        .bind(source)
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await
        .map_err(e("data quality"))?;
        Ok(rows
            .into_iter()
            .map(|r| QualityRow {
                run_id: r.0,
                source: r.1,
                started_at: r.2,
                status: r.3,
                read: count(r.4),
                rejected: count(r.5),
                invalid_bsn: count(r.6),
                missing_contact: count(r.7),
                unknown_code: count(r.8),
            })
            .collect())
    }

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(e("ping"))?;
        Ok(())
    }
}
