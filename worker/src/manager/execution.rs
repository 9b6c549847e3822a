//! ExecutionManager: carries out an approved proposal — exactly the approved
//! request, with `Idempotency-Key: <proposal id>` — and tells the owner in
//! the conversation the proposal came from.

use std::time::Duration;

use sha2::{Digest, Sha256};
use shared::access::accounting::AccountingClient;
use shared::access::queue::JobQueue;
use shared::access::store::{ProposalChanges, Store};
use shared::engine::proposal::{Transition, next};
use shared::engine::retry::WriteStatus;
use shared::engine::review::{notice_executed, notice_failed, notice_gave_up};
use shared::event::{Actor, ActorKind, ExecutionFinished, ExecutionStarted, ProposalEvent};
use shared::ids::{ProposalId, TenantId};
use shared::proposal::ProposalState;

use super::accounts::Accounts;
use shared::job::JobFailure;

/// Carries out approved proposals.
#[derive(Debug, Clone)]
pub struct ExecutionManager {
    store: Store,
    queue: JobQueue,
    accounting: AccountingClient,
    accounts: Accounts,
    timeout: Duration,
}

/// How one attempt at the write ended.
enum Attempt {
    Succeeded {
        status: u16,
        response_sha256: String,
    },
    /// Refused for good: not retried.
    Refused { status: u16 },
    /// Worth retrying with the same idempotency key.
    Transient { status: Option<u16>, error: String },
}

impl ExecutionManager {
    /// A manager over its clients.
    pub fn new(
        store: Store,
        queue: JobQueue,
        accounting: AccountingClient,
        accounts: Accounts,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            queue,
            accounting,
            accounts,
            timeout,
        }
    }

    /// Tells the owner an approved proposal could not be carried out after
    /// every attempt (its job is dead-lettered); once per proposal.
    pub async fn give_up(
        &self,
        tenant: TenantId,
        id: ProposalId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let mut tx = store.lock_proposal(id).await?;
        // Only an approved write that did not finish has anything to tell.
        if !matches!(
            tx.proposal.state(),
            ProposalState::Approved
                | ProposalState::AutoApproved
                | ProposalState::Executing
                | ProposalState::ExecutionFailed
        ) {
            return Ok(());
        }
        let text = notice_gave_up(&tx.proposal.tool, id);
        let notice = tx
            .notify_conversation(&format!("execution-gave-up:{id}"), &text)
            .await?;
        tx.commit().await?;
        if let Some(outbox_id) = notice {
            self.queue
                .deliver_outbox(store.tenant_id(), outbox_id, traceparent)
                .await?;
        }
        Ok(())
    }

    /// Executes the proposal if it is approved and not yet executed.
    pub async fn execute(
        &self,
        tenant: TenantId,
        id: ProposalId,
        traceparent: &str,
        attempt: u32,
    ) -> Result<(), JobFailure> {
        let trace = shared::telemetry::trace_id(traceparent);
        let system = || Actor {
            kind: ActorKind::System,
            id: "execution".to_owned(),
        };

        let store = self.store.tenant(tenant);
        // Resolved before the state changes: a missing credential fails the
        // job without marking the write as started.
        let (_, target) = self.accounts.of(&store).await?;
        let mut tx = store.lock_proposal(id).await?;
        let proposal = tx.proposal.clone();
        let state = match next(proposal.state(), Transition::StartExecution) {
            Ok(state) => state,
            // Executed, rejected or expired: nothing (more) to do.
            Err(_)
                if matches!(
                    proposal.state(),
                    ProposalState::Executed | ProposalState::Rejected | ProposalState::Expired
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(JobFailure::permanent(e, "Proposal is not approved")),
        };
        let started = ProposalEvent::ExecutionStarted(ExecutionStarted { attempt });
        tx.record(
            &proposal.event(&started, system(), trace, "worker"),
            ProposalChanges {
                state: Some(state),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;

        let outcome = match self
            .accounting
            .send(
                &target,
                &proposal.request,
                Some(&id.to_string()),
                self.timeout,
            )
            .await
        {
            Ok(r) => match WriteStatus::of(r.status) {
                WriteStatus::Succeeded => Attempt::Succeeded {
                    status: r.status,
                    response_sha256: hex::encode(Sha256::digest(r.body.as_bytes())),
                },
                WriteStatus::Refused => Attempt::Refused { status: r.status },
                WriteStatus::Transient => Attempt::Transient {
                    status: Some(r.status),
                    error: format!("HTTP {}", r.status),
                },
            },
            Err(e) => Attempt::Transient {
                status: None,
                error: e.to_string(),
            },
        };

        let mut tx = store.lock_proposal(id).await?;
        let (finished, notice) = match &outcome {
            Attempt::Succeeded {
                status,
                response_sha256,
            } => (
                ExecutionFinished {
                    succeeded: true,
                    status: Some(*status),
                    response_sha256: Some(response_sha256.clone()),
                    error: None,
                },
                Some(notice_executed(&proposal.tool, id)),
            ),
            Attempt::Refused { status } => (
                ExecutionFinished {
                    succeeded: false,
                    status: Some(*status),
                    response_sha256: None,
                    error: Some(format!("HTTP {status}")),
                },
                Some(notice_failed(&proposal.tool, id, Some(*status))),
            ),
            Attempt::Transient { status, error } => (
                ExecutionFinished {
                    succeeded: false,
                    status: *status,
                    response_sha256: None,
                    error: Some(error.clone()),
                },
                None,
            ),
        };
        let transition = if finished.succeeded {
            Transition::Succeed
        } else {
            Transition::Fail
        };
        let state = next(tx.proposal.state(), transition)
            .map_err(|e| JobFailure::permanent(e, "Invalid execution result"))?;
        let finished = ProposalEvent::ExecutionFinished(finished);
        tx.record(
            &proposal.event(&finished, system(), trace, "worker"),
            ProposalChanges {
                state: Some(state),
                ..Default::default()
            },
        )
        .await?;
        let notice_id = match &notice {
            Some(text) => {
                tx.notify_conversation(&format!("execution:{id}"), text)
                    .await?
            }
            None => None,
        };
        tx.commit().await?;
        metrics::counter!("automate_e_proposals_total", "state" => state.as_str()).increment(1);
        if let Some(outbox_id) = notice_id {
            self.queue
                .deliver_outbox(store.tenant_id(), outbox_id, traceparent)
                .await?;
        }
        match outcome {
            Attempt::Transient { error, .. } => Err(JobFailure::retryable(
                anyhow::anyhow!("{error}"),
                "The write failed",
            )),
            _ => Ok(()),
        }
    }
}
