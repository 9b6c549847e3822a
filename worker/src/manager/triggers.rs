//! SchedulerManager: turns the triggers character files declare into agent
//! runs. Every tick, for every tenant that runs the agent, a due schedule
//! period and each new event of a subscribed type becomes one agent run row
//! (unique per tenant and trigger, so any number of workers ticking at once
//! create it once) and one run job.
//!
//! A tenant runs an agent's schedules and channel-posting event triggers
//! when it routes a chat channel to the agent (the answer goes there), and
//! its review-thread event triggers when it has a review channel.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::access::queue::JobQueue;
use shared::access::store::{NewAgentRun, Store, TenantStore};
use shared::character::{Character, Characters, PostTo};
use shared::event::event_type_matches;
use shared::job::{Job, JobFailure, WorkerJob};
use shared::trigger::{RunReason, event_key_prefix};
use tokio_util::sync::CancellationToken;

use crate::config::SchedulerConfig;

/// Events read per agent, tenant and tick.
const EVENT_BATCH: i64 = 100;

/// Creates agent runs from schedules and events.
#[derive(Debug, Clone)]
pub struct Triggers {
    store: Store,
    queue: JobQueue,
    characters: Arc<Characters>,
    cfg: SchedulerConfig,
}

impl Triggers {
    /// Triggers of the loaded characters.
    pub fn new(
        store: Store,
        queue: JobQueue,
        characters: Arc<Characters>,
        cfg: SchedulerConfig,
    ) -> Self {
        Self {
            store,
            queue,
            characters,
            cfg,
        }
    }

    /// Ticks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.tick_ms.max(50));
        if self.scheduled_agents().next().is_none() {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.tick(Utc::now()).await {
                tracing::warn!(error = %e, "Trigger tick failed");
            }
            metrics::counter!("automate_e_trigger_ticks_total").increment(1);
        }
    }

    /// Agents with schedules or event triggers.
    fn scheduled_agents(&self) -> impl Iterator<Item = &Character> {
        self.characters
            .all()
            .filter(|c| c.schedules().next().is_some() || c.event_triggers().next().is_some())
    }

    /// One look at every tenant's schedules and new events; the number of
    /// runs created.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<usize, JobFailure> {
        let mut created = 0;
        for tenant in self.store.tenant_ids().await? {
            // One tenant's failure does not starve the others.
            match self.tick_tenant(&self.store.tenant(tenant), now).await {
                Ok(n) => created += n,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "Trigger tick failed for a tenant")
                }
            }
        }
        Ok(created)
    }

    async fn tick_tenant(
        &self,
        store: &TenantStore,
        now: DateTime<Utc>,
    ) -> Result<usize, JobFailure> {
        let mut created = 0;
        let routed = store.routed_characters().await?;
        let has_review_channel = store.tenant_policy().await?.review_channel.is_some();
        for agent in self.scheduled_agents() {
            let runs_in_channel = routed.contains(&agent.name);
            if runs_in_channel {
                created += self.due_schedules(store, agent, now).await?;
            }
            created += self
                .new_events(store, agent, runs_in_channel, has_review_channel)
                .await?;
        }
        Ok(created)
    }

    async fn due_schedules(
        &self,
        store: &TenantStore,
        agent: &Character,
        now: DateTime<Utc>,
    ) -> Result<usize, JobFailure> {
        let lateness = chrono::Duration::milliseconds(
            i64::try_from(self.cfg.max_lateness_ms).unwrap_or(i64::MAX),
        );
        let mut created = 0;
        for (schedule, cron, task) in agent.schedules() {
            let Some(fire_at) = schedule.latest_due(now, lateness) else {
                continue;
            };
            let reason = RunReason::Schedule {
                cron: cron.to_owned(),
                fire_at,
                task: task.to_owned(),
            };
            created += usize::from(self.create_run(store, agent, &reason).await?);
        }
        Ok(created)
    }

    async fn new_events(
        &self,
        store: &TenantStore,
        agent: &Character,
        runs_in_channel: bool,
        has_review_channel: bool,
    ) -> Result<usize, JobFailure> {
        let triggers: Vec<(&str, &str, PostTo)> = agent
            .event_triggers()
            .filter(|(_, _, post_to)| match post_to {
                PostTo::AgentChannel => runs_in_channel,
                PostTo::ReviewThread => has_review_channel,
            })
            .collect();
        if triggers.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = triggers.iter().map(|(event, _, _)| *event).collect();
        let horizon = Duration::from_millis(self.cfg.max_lateness_ms);
        let cursor = store.trigger_cursor(&agent.name, horizon).await?;
        let events = store
            .untriggered_events(cursor, &names, &event_key_prefix(&agent.name), EVENT_BATCH)
            .await?;
        let full_batch = events.len() >= usize::try_from(EVENT_BATCH).unwrap_or(usize::MAX);
        let up_to = full_batch
            .then(|| events.last().map(|e| e.global_position))
            .flatten();
        let mut created = 0;
        for event in events {
            let Some((_, task, post_to)) = triggers
                .iter()
                .find(|(name, _, _)| event_type_matches(name, &event.type_name))
            else {
                continue;
            };
            let reason = RunReason::Event {
                event_id: event.id,
                event_type: event.type_name,
                stream: event.stream,
                payload: event.payload,
                task: (*task).to_owned(),
                post_to: *post_to,
            };
            created += usize::from(self.create_run(store, agent, &reason).await?);
        }
        store
            .advance_trigger_cursor(
                &agent.name,
                Duration::from_millis(self.cfg.event_settle_ms),
                up_to,
            )
            .await?;
        Ok(created)
    }

    /// Creates the run once and queues its job; `false` when it existed.
    async fn create_run(
        &self,
        store: &TenantStore,
        agent: &Character,
        reason: &RunReason,
    ) -> Result<bool, JobFailure> {
        let run = NewAgentRun {
            character: agent.name.clone(),
            dedupe_key: reason.dedupe_key(&agent.name),
            reason: serde_json::to_value(reason).unwrap_or_default(),
        };
        let Some(run_id) = store.create_agent_run(&run).await? else {
            return Ok(false);
        };
        queue_run(&self.queue, store, run_id).await?;
        Ok(true)
    }
}

/// Queues a run's job and notes it on the run (the relay re-queues a run
/// whose job never made it to the queue).
pub async fn queue_run(
    queue: &JobQueue,
    store: &TenantStore,
    run_id: shared::ids::AgentRunId,
) -> Result<(), JobFailure> {
    queue
        .enqueue(Job::new(
            store.tenant_id(),
            &shared::telemetry::current_traceparent(),
            WorkerJob::RunV1 { run_id },
        ))
        .await
        .map_err(|e| JobFailure::retryable(e, "Cannot enqueue an agent run"))?;
    store.mark_agent_run_enqueued(run_id).await?;
    Ok(())
}
