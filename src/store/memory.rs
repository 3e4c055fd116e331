//! In-process store for short-lived state on the embedded default (one replica only).
//!
//! Entries carry their expiry instant; an expired entry is treated as absent at once and removed
//! lazily (when looked at, and in a sweep on each create), so no background task is needed.
use super::{FlowStore, StoreResult, StoredFlow};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Entry {
    flow: StoredFlow,
    expires_at: Instant,
}

#[derive(Default)]
pub struct MemoryFlowStore {
    flows: Mutex<HashMap<Uuid, Entry>>,
}

impl MemoryFlowStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn flows(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // The map holds plain data and every critical section leaves it consistent, so a panic
        // elsewhere while holding the lock does not make it unusable.
        self.flows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live entry for `id`, dropping it if it has expired.
    fn live<'a>(
        flows: &'a mut HashMap<Uuid, Entry>,
        id: &Uuid,
        now: Instant,
    ) -> Option<&'a mut Entry> {
        if flows.get(id).is_some_and(|entry| entry.expires_at <= now) {
            flows.remove(id);
        }
        flows.get_mut(id)
    }
}

#[async_trait]
impl FlowStore for MemoryFlowStore {
    async fn create_flow(&self, id: Uuid, document: &[u8], ttl: Duration) -> StoreResult<()> {
        let now = Instant::now();
        let mut flows = self.flows();
        flows.retain(|_, entry| entry.expires_at > now);
        let flow = StoredFlow {
            revision: 1,
            document: document.to_vec(),
        };
        flows.insert(
            id,
            Entry {
                flow,
                expires_at: now + ttl,
            },
        );
        Ok(())
    }

    async fn get_flow(&self, id: Uuid) -> StoreResult<Option<StoredFlow>> {
        let mut flows = self.flows();
        Ok(Self::live(&mut flows, &id, Instant::now()).map(|entry| entry.flow.clone()))
    }

    async fn replace_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
    ) -> StoreResult<bool> {
        let mut flows = self.flows();
        let Some(entry) = Self::live(&mut flows, &id, Instant::now()) else {
            return Ok(false);
        };
        if entry.flow.revision != expected_revision {
            return Ok(false);
        }
        entry.flow = StoredFlow {
            revision: expected_revision + 1,
            document: document.to_vec(),
        };
        Ok(true)
    }
}
