//! Group work: callers hand in items one at a time; one task takes whatever
//! is waiting (at least one item, at most a batch) and handles it all at
//! once, and each caller gets its own result. Under a burst that is one
//! round trip per batch instead of one per item; a lone item is handled at
//! once. Used for the inbox's group commit and for pushing turn jobs.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use tokio::sync::{mpsc, oneshot};

/// An item waiting for its round, with where its result goes.
struct Waiting<T, R> {
    item: T,
    done: oneshot::Sender<R>,
}

/// Hands items to a batching task (see the module docs).
pub struct Batcher<T, R> {
    queue: mpsc::Sender<Waiting<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// No result for an item: its round's handler panicked or left it out, or
/// the batching task is gone (the runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no result from the batching task")]
pub struct Stopped;

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task. Each round, `handle` gets up to `max_batch` items
    /// and returns one result per item, in the same order (an item left
    /// without one gets [`Stopped`]). Rounds run one after another: while
    /// one is handled, the next gathers. The task stops when the last
    /// `Batcher` clone is dropped.
    pub fn start<F, Fut>(max_batch: usize, mut handle: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (queue, mut waiting) = mpsc::channel::<Waiting<T, R>>(max_batch * 2);
        tokio::spawn(async move {
            let mut round = Vec::with_capacity(max_batch);
            while waiting.recv_many(&mut round, max_batch).await > 0 {
                let (items, done): (Vec<T>, Vec<oneshot::Sender<R>>) =
                    round.drain(..).map(|w| (w.item, w.done)).unzip();
                // A round whose handler panics fails alone: its callers get
                // `Stopped`, the next round runs.
                let Ok(results) = AssertUnwindSafe(async { handle(items).await })
                    .catch_unwind()
                    .await
                else {
                    continue;
                };
                for (done, result) in done.into_iter().zip(results) {
                    // The caller may have given up waiting; nothing to do.
                    let _ = done.send(result);
                }
            }
        });
        Self { queue }
    }

    /// Hands `item` in and waits for its result.
    pub async fn submit(&self, item: T) -> Result<R, Stopped> {
        let (done, result) = oneshot::channel();
        self.queue
            .send(Waiting { item, done })
            .await
            .map_err(|_| Stopped)?;
        result.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn items_waiting_together_are_handled_in_one_round_each_with_its_own_result() {
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&rounds);
        let batcher = Batcher::start(3, move |items: Vec<u32>| {
            seen.lock().expect("not poisoned").push(items.clone());
            async move { items.into_iter().map(|i| i * 10).collect::<Vec<_>>() }
        });
        // Submitted before the task runs (single-threaded test runtime):
        // all five wait together and go in rounds of at most three.
        let results = futures::future::join_all((1..=5).map(|i| batcher.submit(i))).await;
        assert_eq!(results, [Ok(10), Ok(20), Ok(30), Ok(40), Ok(50)]);
        assert_eq!(*rounds.lock().unwrap(), [vec![1, 2, 3], vec![4, 5]]);
        // A lone item later is handled at once, alone.
        assert_eq!(batcher.submit(6).await, Ok(60));
        assert_eq!(rounds.lock().unwrap().last(), Some(&vec![6]));
    }

    #[tokio::test]
    async fn an_item_left_without_a_result_is_told_so_and_a_panic_fails_only_its_round() {
        let batcher = Batcher::start(8, |items: Vec<u32>| {
            assert!(!items.contains(&0), "a handler bug");
            async move { items.into_iter().take(1).collect::<Vec<_>>() }
        });
        let results = futures::future::join_all([1, 2].map(|i| batcher.submit(i))).await;
        assert_eq!(results, [Ok(1), Err(Stopped)]);
        assert_eq!(batcher.submit(0).await, Err(Stopped));
        assert_eq!(batcher.submit(3).await, Ok(3), "the next round runs");
    }
}
