//! Remembers which identities have nothing on record against their code failure budget, so a
//! right code (the common case) is checked against the budget without a SQL read.
//!
//! Only "nothing on record" is cached: it does not depend on the time, unlike a count in a
//! window or a lockout, which are always read from SQL. The fact is guarded like the session
//! cache's answers (see `session_cache`): it remembers the version of the identity's
//! [`VersionKey::Failures`] read before the SQL read, every recorded failure gives that key a new
//! version after it commits, and the fact is used only while the version is unchanged. A failure
//! that has returned is therefore seen by the next check on any replica. Two checks racing a
//! failure that is still being recorded may both miss it, exactly as two SQL reads would.
use super::codes::{FailureBudgetStore, FailureState};
use super::session_cache::{CAPACITY, VersionKey, Versions, announce};
use super::{StoreError, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long "nothing on record" is kept: short, since it is what a replica would go on believing
/// about a failure whose announcement did not reach Redis (retried in the background meanwhile).
/// Well under the session cache's `ENTRY_TTL`, which the in-process versions' pruning relies on.
const CLEAN_TTL: Duration = Duration::from_secs(5);

const NOTHING_ON_RECORD: FailureState = FailureState {
    failures: 0,
    locked_until: None,
    recorded: false,
};

/// An identity seen with nothing on record: the version it was seen under, and since when.
#[derive(Clone, Copy)]
struct Clean {
    seen: [u64; 2],
    stored_at: Instant,
}

/// The failure budget store with "nothing on record" cached; writes go straight through, and a
/// recorded failure announces itself through [`Versions`].
pub struct CachedBudget {
    inner: Arc<dyn FailureBudgetStore>,
    versions: Arc<dyn Versions>,
    clean: Mutex<HashMap<Uuid, Clean>>,
}

/// [`Versions`] reads two keys at a time; the budget has one per identity, which Redis reads once.
fn keys(identity_id: Uuid) -> [VersionKey; 2] {
    [VersionKey::Failures(identity_id); 2]
}

impl CachedBudget {
    pub fn new(inner: Arc<dyn FailureBudgetStore>, versions: Arc<dyn Versions>) -> Self {
        Self {
            inner,
            versions,
            clean: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Clean>> {
        self.clean
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, identity_id: Uuid) -> Option<Clean> {
        self.entries()
            .get(&identity_id)
            .filter(|clean| clean.stored_at.elapsed() < CLEAN_TTL)
            .copied()
    }

    fn remember(&self, identity_id: Uuid, clean: Option<Clean>) {
        let mut entries = self.entries();
        let Some(clean) = clean else {
            entries.remove(&identity_id);
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(&identity_id) {
            entries.retain(|_, clean| clean.stored_at.elapsed() < CLEAN_TTL);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(identity_id, clean);
    }

    /// Versions cannot be read (Redis unreachable): read SQL, and forget everything cached, as
    /// the session cache does (lost versions could make an old fact match again).
    async fn bypass(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        error: StoreError,
    ) -> StoreResult<FailureState> {
        tracing::debug!(error = %error, "failure budget cache bypassed: versions unreadable");
        self.entries().clear();
        self.inner.failure_state(identity_id, now).await
    }
}

#[async_trait]
impl FailureBudgetStore for CachedBudget {
    async fn failure_state(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<FailureState> {
        let keys = keys(identity_id);
        if let Some(clean) = self.cached(identity_id) {
            match self.versions.unchanged(keys, clean.seen).await {
                Ok(true) => return Ok(NOTHING_ON_RECORD),
                Ok(false) => {}
                Err(error) => return self.bypass(identity_id, now, error).await,
            }
        }
        // The fact's age counts from before its version was read (see `session_cache`).
        let read_started = Instant::now();
        let seen = match self.versions.current(keys).await {
            Ok(seen) => seen,
            Err(error) => return self.bypass(identity_id, now, error).await,
        };
        let state = self.inner.failure_state(identity_id, now).await?;
        let clean = (!state.recorded).then_some(Clean {
            seen,
            stored_at: read_started,
        });
        self.remember(identity_id, clean);
        Ok(state)
    }

    async fn record_failure(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        budget: u32,
        window: Duration,
    ) -> StoreResult<FailureState> {
        let result = self
            .inner
            .record_failure(identity_id, now, budget, window)
            .await;
        // Announced even when the write reported an error: it may have committed all the same
        // (a connection lost after COMMIT was sent), and a needless announcement costs only a
        // SQL read on the next check.
        self.remember(identity_id, None);
        announce(&self.versions, &[VersionKey::Failures(identity_id)]).await;
        result
    }

    async fn reset_failures(&self, identity_id: Uuid) -> StoreResult<()> {
        // Clearing makes "nothing on record" true; no cached fact can be contradicted by it.
        self.inner.reset_failures(identity_id).await
    }
}
