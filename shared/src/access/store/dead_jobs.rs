//! Dead letters: jobs that failed for good, kept in Postgres (Redis may lose
//! its data) for operators to list, inspect and replay.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Store, StoreError};

/// A job to record as dead.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadJob {
    /// `worker` or `delivery`.
    pub queue: &'static str,
    /// The queue task id.
    pub task_id: String,
    /// Job kind (`turn`, `review`, …).
    pub kind: &'static str,
    /// The row the job is about (inbox, proposal, outbox id).
    pub subject: Option<uuid::Uuid>,
    /// The job as queued.
    pub job: Value,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: i32,
}

/// A recorded dead job.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadJobModel {
    /// The record.
    pub id: uuid::Uuid,
    pub queue: String,
    /// Queue task id.
    pub task_id: String,
    /// Job kind.
    pub kind: String,
    /// Subject row.
    pub subject: Option<uuid::Uuid>,
    /// The job as queued.
    pub job: Value,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it died.
    pub dead_at: DateTime<Utc>,
    /// When an operator replayed it.
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_task_id: Option<String>,
}

/// Reads dead jobs as [`DeadJobModel`]s: the statement after the columns.
macro_rules! select_dead_jobs {
    ($rest:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            DeadJobModel,
            "SELECT id, queue, task_id, kind, subject, job, error, attempts, dead_at, replayed_at, \
             replay_task_id " + $rest
            $(, $arg)*
        )
    };
}

impl Store {
    /// Records a dead job; returns its record id.
    pub async fn record_dead_job(&self, d: &NewDeadJob) -> Result<uuid::Uuid, StoreError> {
        let id = uuid::Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO dead_jobs (id, queue, task_id, kind, subject, job, error, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            id,
            d.queue,
            d.task_id,
            d.kind,
            d.subject,
            d.job,
            d.error,
            d.attempts
        )
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Dead jobs, newest first (record ids are time-ordered, for jobs that
    /// died at the same moment); with `open_only`, those not replayed yet.
    pub async fn dead_jobs(
        &self,
        open_only: bool,
        limit: i64,
    ) -> Result<Vec<DeadJobModel>, StoreError> {
        // Two statements, not one with `NOT $1 OR replayed_at IS NULL`: a
        // cached plan of that could not use the open jobs' partial index.
        let jobs = if open_only {
            select_dead_jobs!(
                "FROM dead_jobs WHERE replayed_at IS NULL ORDER BY dead_at DESC, id DESC LIMIT $1",
                limit
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            select_dead_jobs!(
                "FROM dead_jobs ORDER BY dead_at DESC, id DESC LIMIT $1",
                limit
            )
            .fetch_all(&self.pool)
            .await?
        };
        Ok(jobs)
    }

    /// One dead job.
    pub async fn dead_job(&self, id: uuid::Uuid) -> Result<DeadJobModel, StoreError> {
        select_dead_jobs!("FROM dead_jobs WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("dead job"))
    }

    /// Marks a dead job replayed under `replay_task_id`; `false` when it
    /// was replayed before.
    pub async fn mark_dead_job_replayed(
        &self,
        id: uuid::Uuid,
        replay_task_id: &str,
    ) -> Result<bool, StoreError> {
        let marked = sqlx::query!(
            "UPDATE dead_jobs SET replayed_at = now(), replay_task_id = $2 \
             WHERE id = $1 AND replayed_at IS NULL",
            id,
            replay_task_id
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(marked == 1)
    }

    /// Takes back the mark of a replay under `replay_task_id` that failed.
    pub async fn unmark_dead_job_replayed(
        &self,
        id: uuid::Uuid,
        replay_task_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE dead_jobs SET replayed_at = NULL, replay_task_id = NULL \
             WHERE id = $1 AND replay_task_id = $2",
            id,
            replay_task_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
