//! A short-lived cache of lookups the gateway makes for every inbound
//! message and that change rarely (routes, members): a change takes effect
//! within the time-to-live.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Most keys kept; past it, expired entries go, then all.
const MAX_KEYS: usize = 10_000;

/// Each key's answer, with when it was read.
type Entries<K, V> = HashMap<K, (Instant, Arc<V>)>;

/// Answers kept for `ttl` each, shared by clones.
#[derive(Debug)]
pub(super) struct TtlCache<K, V: ?Sized> {
    ttl: Duration,
    entries: Arc<Mutex<Entries<K, V>>>,
}

impl<K, V: ?Sized> Clone for TtlCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            ttl: self.ttl,
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<K: Hash + Eq, V: ?Sized> TtlCache<K, V> {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Arc::default(),
        }
    }

    /// The answer for `key`, loaded with `load` when missing or older than
    /// the time-to-live.
    pub(super) async fn get_or_load<E, F>(&self, key: K, load: F) -> Result<Arc<V>, E>
    where
        F: Future<Output = Result<Arc<V>, E>>,
    {
        if let Some((read_at, value)) = self.lock().get(&key)
            && read_at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(value));
        }
        let value = load.await?;
        let mut entries = self.lock();
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, (read_at, _)| read_at.elapsed() < self.ttl);
            if entries.len() >= MAX_KEYS {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), Arc::clone(&value)));
        Ok(value)
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        // A panic while holding the map leaves it usable: it is only a cache.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
