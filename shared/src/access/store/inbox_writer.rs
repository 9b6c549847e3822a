//! Group commit for the inbox: messages that arrive together are recorded
//! together, in one transaction per tenant, by a few writer tasks. Under a
//! burst of webhooks that is a few commits instead of one per message; a
//! lone message is written at once. Each caller still gets its own outcome
//! only after its transaction committed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{NewMessageParams, RecordOutcome, Store, StoreError};
use crate::ids::TenantId;

/// A message waiting to be written, with where its outcome goes.
struct Pending {
    params: NewMessageParams,
    done: oneshot::Sender<Result<RecordOutcome, StoreError>>,
}

/// Records inbound messages with group commit (see the module docs).
#[derive(Debug, Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<Pending>,
}

impl InboxWriter {
    /// Starts `writers` tasks, each writing up to `max_batch` messages per
    /// round. They stop when the last `InboxWriter` clone is dropped.
    pub fn start(store: &Store, writers: usize, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (queue, waiting) = mpsc::channel(max_batch * writers.max(1) * 2);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_rounds(store.clone(), Arc::clone(&waiting), max_batch));
        }
        Self { queue }
    }

    /// Records a message once, like [`super::TenantStore::record_message`].
    pub async fn record(&self, params: NewMessageParams) -> Result<RecordOutcome, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Pending { params, done })
            .await
            .map_err(|_| StoreError::Stopped("inbox writer"))?;
        outcome
            .await
            .map_err(|_| StoreError::Stopped("inbox writer"))?
    }
}

/// Takes whatever is waiting (at least one message, at most `max_batch`)
/// and writes it, until every sender is gone.
async fn write_rounds(
    store: Store,
    waiting: Arc<Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
) {
    loop {
        let round = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut round = vec![first];
            while round.len() < max_batch {
                match waiting.try_recv() {
                    Ok(next) => round.push(next),
                    Err(_) => break,
                }
            }
            round
        };
        let mut by_tenant: HashMap<TenantId, Vec<Pending>> = HashMap::new();
        for pending in round {
            by_tenant
                .entry(pending.params.tenant_id)
                .or_default()
                .push(pending);
        }
        for (tenant, batch) in by_tenant {
            write(&store, tenant, batch).await;
        }
    }
}

/// Writes one tenant's batch in one transaction. If that fails, each
/// message is written alone, so one bad message does not fail the others.
async fn write(store: &Store, tenant: TenantId, batch: Vec<Pending>) {
    let store = store.tenant(tenant);
    let together = async {
        let mut tx = store.begin().await?;
        let params: Vec<&NewMessageParams> = batch.iter().map(|p| &p.params).collect();
        let outcomes = tx.record_messages(&params).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(outcomes)
    };
    match together.await {
        Ok(outcomes) => {
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let _ = pending.done.send(Ok(outcome));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(pending) = batch.into_iter().next() {
                let _ = pending.done.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "An inbox batch failed; writing its messages one by one");
            for pending in batch {
                let outcome = store.record_message(&pending.params).await;
                let _ = pending.done.send(outcome);
            }
        }
    }
}
