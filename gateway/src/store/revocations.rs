//! Token revocations and the subject block list (ACL-ACCT-1).
//!
//! ACL-ACCT-1 asks that leavers' and unused accounts be removed. The gateway
//! cannot delete accounts at the identity provider, but it can refuse their
//! tokens at once: a revoked `jti`, every token of a subject issued before a
//! time, or a subject blocked outright. Kept in the shared database so all
//! instances refuse the same tokens; the auth module polls
//! [`Store::list_revocations`] into memory, so the request path never waits
//! on the database.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::{Store, StoreError};
use crate::util::clock::unix_now;

/// Everything revoked, in the shape the token check needs: set membership
/// for `(issuer, jti)` and a cut-off time per `(issuer, subject)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSnapshot {
    /// Revoked token ids as `(issuer, jti)`.
    pub jtis: HashSet<(String, String)>,
    /// `(issuer, subject)` → unix seconds: tokens issued (`iat`) before this
    /// time are refused.
    pub subjects: HashMap<(String, String), i64>,
}

/// One entry of the block list, for listing and the review report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedSubject {
    /// The token `sub` that is refused, whatever its issuer.
    pub subject: String,
    /// Why, in the operator's words (shown in reports, never to clients).
    pub reason: String,
    /// Unix seconds when the block was added.
    pub created_at: i64,
}

impl Store {
    /// Revokes one token by its `jti`. Idempotent.
    pub async fn revoke_jti(&self, issuer: &str, jti: &str) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        sqlx::query(
            "INSERT INTO revocations (issuer, jti, subject, revoked_before, created_at) VALUES ($1, $2, '', 0, $3)
             ON CONFLICT (issuer, jti, subject) DO NOTHING",
        )
        .bind(issuer)
        .bind(jti)
        .bind(unix_now())
        .execute(pool)
        .await
        .map_err(StoreError::db("revoke jti"))?;
        Ok(())
    }

    /// Revokes every token of `subject` from `issuer` issued before
    /// `before_unix` (e.g. "now" when an account is closed). A later call
    /// replaces the cut-off, so an operator can also move it back.
    pub async fn revoke_subject(&self, issuer: &str, subject: &str, before_unix: i64) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        sqlx::query(
            "INSERT INTO revocations (issuer, jti, subject, revoked_before, created_at) VALUES ($1, '', $2, $3, $4)
             ON CONFLICT (issuer, jti, subject) DO UPDATE SET revoked_before = excluded.revoked_before",
        )
        .bind(issuer)
        .bind(subject)
        .bind(before_unix)
        .bind(unix_now())
        .execute(pool)
        .await
        .map_err(StoreError::db("revoke subject"))?;
        Ok(())
    }

    /// Reads all revocations at once; the table is small (entries can be
    /// pruned once the tokens they name have expired).
    pub async fn list_revocations(&self) -> Result<RevocationSnapshot, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query("SELECT issuer, jti, subject, revoked_before FROM revocations")
            .fetch_all(pool)
            .await
            .map_err(StoreError::db("list revocations"))?;
        let mut snap = RevocationSnapshot::default();
        for row in rows {
            let get = |c: &str| row.try_get::<String, _>(c).map_err(StoreError::db("decode revocation"));
            let (issuer, jti, subject) = (get("issuer")?, get("jti")?, get("subject")?);
            let before: i64 = row
                .try_get("revoked_before")
                .map_err(StoreError::db("decode revocation"))?;
            if !jti.is_empty() {
                snap.jtis.insert((issuer, jti));
            } else if !subject.is_empty() {
                snap.subjects.insert((issuer, subject), before);
            } else {
                return Err(StoreError::Corrupt {
                    table: "revocations",
                    detail: format!("row for issuer {issuer:?} has neither jti nor subject"),
                });
            }
        }
        Ok(snap)
    }

    /// Blocks a subject for every issuer; replaces the reason if already blocked.
    pub async fn block_subject(&self, subject: &str, reason: &str) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        sqlx::query(
            "INSERT INTO blocked_subjects (subject, reason, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (subject) DO UPDATE SET reason = excluded.reason",
        )
        .bind(subject)
        .bind(reason)
        .bind(unix_now())
        .execute(pool)
        .await
        .map_err(StoreError::db("block subject"))?;
        Ok(())
    }

    /// Lifts a block; `false` if the subject was not blocked (so the CLI can
    /// say so instead of claiming success).
    pub async fn unblock_subject(&self, subject: &str) -> Result<bool, StoreError> {
        let pool = self.ready().await?;
        let done = sqlx::query("DELETE FROM blocked_subjects WHERE subject = $1")
            .bind(subject)
            .execute(pool)
            .await
            .map_err(StoreError::db("unblock subject"))?;
        Ok(done.rows_affected() > 0)
    }

    /// All blocked subjects, oldest first.
    pub async fn list_blocked(&self) -> Result<Vec<BlockedSubject>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query("SELECT subject, reason, created_at FROM blocked_subjects ORDER BY created_at, subject")
            .fetch_all(pool)
            .await
            .map_err(StoreError::db("list blocked subjects"))?;
        rows.iter()
            .map(|row| {
                Ok(BlockedSubject {
                    subject: row.try_get("subject")?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::db("decode blocked subject"))
    }
}
