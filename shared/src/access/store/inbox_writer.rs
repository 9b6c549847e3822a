//! Group commit for the inbox: messages that arrive together are recorded
//! together, one transaction per tenant, by one writer task (a
//! [`Batcher`]): under a burst of webhooks a few commits instead of one per
//! message, a lone message at once. Each caller gets its outcome only after
//! its transaction committed. One round at a time: more writers made smaller
//! batches and no more throughput; a round that waits on a lock holds the
//! next one back.

use std::collections::HashMap;

use futures::StreamExt;

use super::{NewMessageParams, RecordOutcome, Store, StoreError};
use crate::batch::Batcher;
use crate::ids::TenantId;

/// Most tenant transactions of one round open at once: a burst from many
/// tenants leaves the rest of the connection pool to everything else.
const TENANTS_AT_ONCE: usize = 4;

/// Records inbound messages with group commit (see the module docs).
#[derive(Debug, Clone)]
pub struct InboxWriter {
    rounds: Batcher<NewMessageParams, Result<RecordOutcome, StoreError>>,
}

impl InboxWriter {
    /// Starts the writer task, writing up to `max_batch` messages per
    /// round. It stops when the last `InboxWriter` clone is dropped.
    pub fn start(store: &Store, max_batch: usize) -> Self {
        let store = store.clone();
        Self {
            rounds: Batcher::start(max_batch, move |round| write_round(store.clone(), round)),
        }
    }

    /// Records a message once, like [`super::TenantStore::record_message`].
    pub async fn record(&self, params: NewMessageParams) -> Result<RecordOutcome, StoreError> {
        self.rounds
            .submit(params)
            .await
            .map_err(|_| StoreError::Stopped("inbox writer"))?
    }
}

/// Writes a round: each tenant's messages in a transaction of their own,
/// up to [`TENANTS_AT_ONCE`] tenants at once. Outcomes in the order of
/// `round`.
async fn write_round(
    store: Store,
    round: Vec<NewMessageParams>,
) -> Vec<Result<RecordOutcome, StoreError>> {
    let count = round.len();
    let mut by_tenant: HashMap<TenantId, Vec<(usize, NewMessageParams)>> = HashMap::new();
    for (position, params) in round.into_iter().enumerate() {
        by_tenant
            .entry(params.tenant_id)
            .or_default()
            .push((position, params));
    }
    let written: Vec<_> = futures::stream::iter(by_tenant)
        .map(|(tenant, batch)| write(&store, tenant, batch))
        .buffer_unordered(TENANTS_AT_ONCE)
        .collect()
        .await;
    let mut outcomes: Vec<Option<Result<RecordOutcome, StoreError>>> =
        (0..count).map(|_| None).collect();
    for (position, outcome) in written.into_iter().flatten() {
        outcomes[position] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Err(StoreError::Stopped("inbox writer"))))
        .collect()
}

/// Writes one tenant's batch in one call (its own transaction). If that fails, each
/// message is written alone, so one bad message does not fail the others.
async fn write(
    store: &Store,
    tenant: TenantId,
    batch: Vec<(usize, NewMessageParams)>,
) -> Vec<(usize, Result<RecordOutcome, StoreError>)> {
    let store = store.tenant(tenant);
    let params: Vec<&NewMessageParams> = batch.iter().map(|(_, p)| p).collect();
    match store.record_messages(&params).await {
        Ok(outcomes) => batch
            .into_iter()
            .map(|(position, _)| position)
            .zip(outcomes.into_iter().map(Ok))
            .collect(),
        Err(e) if batch.len() == 1 => vec![(batch[0].0, Err(e))],
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "An inbox batch failed; writing its messages one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for (position, params) in batch {
                outcomes.push((position, store.record_message(&params).await));
            }
            outcomes
        }
    }
}
