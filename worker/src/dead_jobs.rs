//! Operator commands for dead jobs: `worker dead list [--all]`,
//! `worker dead show <id>`, `worker dead replay <id>`. Dead jobs are read
//! from Postgres (they outlive Redis); a replay pushes the job again under a
//! new task id.

use anyhow::{Context, bail};
use shared::access::queue::{JobQueue, QueueName};
use shared::access::store::{DeadJobModel, Store};
use shared::job::{DeliveryJob, WorkerJob};

/// Most dead jobs `list` prints.
const LIST_LIMIT: i64 = 200;

/// Runs one dead-job command; returns what to print.
pub async fn command(store: &Store, queue: &JobQueue, args: &[String]) -> anyhow::Result<String> {
    match args {
        [cmd] if cmd == "list" => list(store, true).await,
        [cmd, all] if cmd == "list" && all == "--all" => list(store, false).await,
        [cmd, id] if cmd == "show" => {
            let job = store.dead_job(parse_id(id)?).await?;
            Ok(serde_json::to_string_pretty(&describe(&job))?)
        }
        [cmd, id] if cmd == "replay" => {
            let task_id = replay(store, queue, parse_id(id)?).await?;
            Ok(format!("replayed as task {task_id}"))
        }
        _ => bail!("usage: worker dead list [--all] | show <id> | replay <id>"),
    }
}

fn parse_id(id: &str) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).with_context(|| format!("`{id}` is not a dead job id"))
}

async fn list(store: &Store, open_only: bool) -> anyhow::Result<String> {
    let jobs = store.dead_jobs(open_only, LIST_LIMIT).await?;
    let mut out = format!(
        "{:<36}  {:<20}  {:<8}  {:<14}  {:>8}  {}\n",
        "ID", "DEAD AT (UTC)", "QUEUE", "KIND", "ATTEMPTS", "ERROR"
    );
    for job in &jobs {
        let error: String = job.error.chars().take(100).collect();
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<8}  {:<14}  {:>8}  {}{}\n",
            job.id,
            job.dead_at.format("%Y-%m-%d %H:%M:%S"),
            job.queue,
            job.kind,
            job.attempts,
            error,
            if job.replayed_at.is_some() {
                "  (replayed)"
            } else {
                ""
            },
        ));
    }
    out.push_str(&format!("{} dead job(s)", jobs.len()));
    Ok(out)
}

fn describe(job: &DeadJobModel) -> serde_json::Value {
    serde_json::json!({
        "id": job.id,
        "queue": job.queue,
        "task_id": job.task_id,
        "kind": job.kind,
        "subject": job.subject,
        "job": job.job,
        "error": job.error,
        "attempts": job.attempts,
        "dead_at": job.dead_at,
        "replayed_at": job.replayed_at,
        "replay_task_id": job.replay_task_id,
    })
}

/// Pushes a dead job again, after reopening what its give-up closed (see
/// [`reopen`]). The job is marked replayed before anything else, so of two
/// replays at once only one goes on; one that fails takes the mark back,
/// unless it got to reopen something (the relay's sweeps queue that).
/// Returns the new task id.
pub async fn replay(store: &Store, queue: &JobQueue, id: uuid::Uuid) -> anyhow::Result<String> {
    let job = store.dead_job(id).await?;
    let name = QueueName::parse(&job.queue)
        .with_context(|| format!("dead job {id} names an unknown queue `{}`", job.queue))?;
    let task_id = format!("{}~replay-{}", job.task_id, uuid::Uuid::now_v7().simple());
    if !store.mark_dead_job_replayed(id, &task_id).await? {
        let at = store.dead_job(id).await?.replayed_at;
        bail!("dead job {id} was replayed already (at {at:?})");
    }
    let mut reopened = false;
    let pushed = async {
        reopened = reopen(store, name, &job.job).await?;
        queue
            .replay(name, &job.job, task_id.clone())
            .await
            .context("Cannot push the job")
    }
    .await;
    if let Err(e) = pushed {
        if reopened {
            return Err(e.context("its work is reopened; the relay's sweeps queue it"));
        }
        store.unmark_dead_job_replayed(id, &task_id).await?;
        return Err(e);
    }
    Ok(task_id)
}

/// Opens what a dead job's give-up closed, so its work is done again and the
/// relay's sweeps cover it: a turn's message (given up with a notice), a
/// reply's delivery, an agent run. `true` when something was reopened.
async fn reopen(store: &Store, queue: QueueName, job: &serde_json::Value) -> anyhow::Result<bool> {
    let reopened = match queue {
        QueueName::Worker => match serde_json::from_value::<WorkerJob>(job.clone()) {
            Ok(WorkerJob::TurnV1 {
                inbox_id,
                tenant_id,
                ..
            }) => {
                store
                    .tenant(tenant_id)
                    .reopen_failed_message(inbox_id)
                    .await?
            }
            Ok(WorkerJob::RunV1 {
                run_id, tenant_id, ..
            }) => {
                store
                    .tenant(tenant_id)
                    .set_agent_run_given_up(run_id, false)
                    .await?
            }
            _ => false,
        },
        QueueName::Delivery => match serde_json::from_value::<DeliveryJob>(job.clone()) {
            Ok(DeliveryJob::DeliverV1 {
                outbox_id,
                tenant_id,
                ..
            }) => {
                store
                    .tenant(tenant_id)
                    .set_delivery_given_up(outbox_id, false)
                    .await?
            }
            _ => false,
        },
    };
    Ok(reopened)
}
