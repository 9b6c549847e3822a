//! Operator commands for dead jobs: `worker dead list [--all]`,
//! `worker dead show <id>`, `worker dead replay <id>`. Dead jobs are read
//! from Postgres (they outlive Redis); a replay pushes the job again under a
//! new task id.

use anyhow::{Context, bail};
use shared::access::queue::JobQueue;
use shared::access::store::{DeadJobModel, Store};
use shared::ids::{AgentRunId, OutboxId, TenantId};
use shared::job::{DeliveryJob, Job, QueueName, WorkerJob};

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
/// replays at once only one goes on. One that fails takes the mark back and
/// gives up again what it reopened, except a turn's message, whose turn the
/// relay's sweeps queue anew. Returns the new task id.
pub async fn replay(store: &Store, queue: &JobQueue, id: uuid::Uuid) -> anyhow::Result<String> {
    let job = store.dead_job(id).await?;
    let name = QueueName::parse(&job.queue)
        .with_context(|| format!("dead job {id} names an unknown queue `{}`", job.queue))?;
    let task_id = format!("{}~replay-{}", job.task_id, uuid::Uuid::now_v7().simple());
    if !store.mark_dead_job_replayed(id, &task_id).await? {
        let at = store.dead_job(id).await?.replayed_at;
        bail!("dead job {id} was replayed already (at {at:?})");
    }
    let mut reopened = Reopened::Nothing;
    let pushed = async {
        reopened = reopen(store, name, &job.job).await?;
        queue
            .replay(name, &job.job, task_id.clone())
            .await
            .context("Cannot push the job")
    }
    .await;
    let Err(e) = pushed else {
        return Ok(task_id);
    };
    match reopened {
        Reopened::Message => {
            return Err(e.context("the message is reopened; the relay's sweeps queue its turn"));
        }
        // The relay pushes a delivery or run under its spent task id (a
        // no-op), so one reopened here would wait for good.
        Reopened::GivenUp(work) => {
            work.set_given_up(store, true).await?;
        }
        Reopened::Nothing => {}
    }
    store.unmark_dead_job_replayed(id, &task_id).await?;
    Err(e)
}

/// What a replay reopened.
enum Reopened {
    /// Nothing: the give-up closed nothing, or it is open already.
    Nothing,
    /// A turn's message, given up with a notice.
    Message,
    /// A reply's delivery or an agent run, marked given up.
    GivenUp(GivenUpWork),
}

/// Work that is marked given up when its job is dead-lettered.
enum GivenUpWork {
    /// A reply's delivery.
    Delivery(TenantId, OutboxId),
    /// An agent run.
    Run(TenantId, AgentRunId),
}

impl GivenUpWork {
    /// Marks it given up, or not any more; `false` when nothing changed.
    async fn set_given_up(&self, store: &Store, given_up: bool) -> anyhow::Result<bool> {
        Ok(match *self {
            Self::Delivery(tenant, id) => {
                store
                    .tenant(tenant)
                    .set_delivery_given_up(id, given_up)
                    .await?
            }
            Self::Run(tenant, id) => {
                store
                    .tenant(tenant)
                    .set_agent_run_given_up(id, given_up)
                    .await?
            }
        })
    }
}

/// Opens what a dead job's give-up closed, so its work is done again and the
/// relay's sweeps cover it.
async fn reopen(
    store: &Store,
    queue: QueueName,
    job: &serde_json::Value,
) -> anyhow::Result<Reopened> {
    let work = match queue {
        QueueName::Worker => match serde_json::from_value::<Job<WorkerJob>>(job.clone()) {
            Ok(Job {
                tenant_id,
                kind: WorkerJob::TurnV1 { inbox_id },
                ..
            }) => {
                let reopened = store
                    .tenant(tenant_id)
                    .reopen_failed_message(inbox_id)
                    .await?;
                return Ok(if reopened {
                    Reopened::Message
                } else {
                    Reopened::Nothing
                });
            }
            Ok(Job {
                tenant_id,
                kind: WorkerJob::RunV1 { run_id },
                ..
            }) => GivenUpWork::Run(tenant_id, run_id),
            _ => return Ok(Reopened::Nothing),
        },
        QueueName::Delivery => match serde_json::from_value::<Job<DeliveryJob>>(job.clone()) {
            Ok(Job {
                tenant_id,
                kind: DeliveryJob::DeliverV1 { outbox_id },
                ..
            }) => GivenUpWork::Delivery(tenant_id, outbox_id),
            _ => return Ok(Reopened::Nothing),
        },
    };
    Ok(if work.set_given_up(store, false).await? {
        Reopened::GivenUp(work)
    } else {
        Reopened::Nothing
    })
}
