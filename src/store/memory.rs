//! In-process store for short-lived state on the embedded default (one replica only): flows,
//! code challenges and rate-limit windows.
//!
//! Entries carry their expiry instant; an expired entry is treated as absent at once and removed
//! lazily (when looked at, and in a sweep every [`SWEEP_EVERY`] creates or hits), so no
//! background task is needed and no single call pays for scanning every entry.
use super::codes::{AttemptOutcome, Challenge, ChallengeStore, RateLimiter, ReplaceOutcome};
use super::{FlowStore, StoreError, StoreResult, StoredFlow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::{Choice, ConstantTimeEq};
use uuid::Uuid;

struct Entry {
    flow: StoredFlow,
    expires_at: Instant,
}

/// Sweeping on every create would make each create cost O(live entries): at a few hundred
/// step-ups a second with hour-long flows, tens of thousands of entries per call.
const SWEEP_EVERY: u32 = 1024;

#[derive(Default)]
struct FlowState {
    flows: HashMap<Uuid, Entry>,
    creates_since_sweep: u32,
}

#[derive(Default)]
pub struct MemoryFlowStore {
    state: Mutex<FlowState>,
}

impl MemoryFlowStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FlowState> {
        // The map holds plain data and every critical section leaves it consistent, so a panic
        // elsewhere while holding the lock does not make it unusable.
        self.state
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
        let mut state = self.state();
        state.creates_since_sweep += 1;
        if state.creates_since_sweep >= SWEEP_EVERY {
            state.creates_since_sweep = 0;
            state.flows.retain(|_, entry| entry.expires_at > now);
        }
        let flow = StoredFlow {
            revision: 1,
            document: document.to_vec(),
        };
        state.flows.insert(
            id,
            Entry {
                flow,
                expires_at: now + ttl,
            },
        );
        Ok(())
    }

    async fn get_flow(&self, id: Uuid) -> StoreResult<Option<StoredFlow>> {
        let mut state = self.state();
        Ok(Self::live(&mut state.flows, &id, Instant::now()).map(|entry| entry.flow.clone()))
    }

    async fn replace_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
    ) -> StoreResult<bool> {
        Ok(self.replace(id, expected_revision, document, None))
    }

    async fn finish_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
        keep_for: Duration,
    ) -> StoreResult<bool> {
        Ok(self.replace(id, expected_revision, document, Some(keep_for)))
    }
}

impl MemoryFlowStore {
    /// Compare-revision-and-set; with `keep_for`, the deadline also moves closer if it is further.
    fn replace(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
        keep_for: Option<Duration>,
    ) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let Some(entry) = Self::live(&mut state.flows, &id, now) else {
            return false;
        };
        if entry.flow.revision != expected_revision {
            return false;
        }
        entry.flow = StoredFlow {
            revision: expected_revision + 1,
            document: document.to_vec(),
        };
        if let Some(kept_until) = keep_for.and_then(|keep_for| now.checked_add(keep_for)) {
            entry.expires_at = entry.expires_at.min(kept_until);
        }
        true
    }
}

struct ChallengeEntry {
    challenge: Challenge,
    expires_at: Instant,
}

#[derive(Default)]
struct CodeState {
    challenges: HashMap<Uuid, ChallengeEntry>,
    requests: HashMap<String, (Uuid, Instant)>,
    /// Counters by (key, window index), each dropped once its window is over.
    windows: HashMap<(String, i64), (u32, Instant)>,
    /// Hits since the last sweep of `windows`.
    hits_since_sweep: u32,
    /// Creates since the last sweep of `challenges` and `requests`.
    creates_since_sweep: u32,
}

/// Challenges, sender idempotency keys and rate-limit windows for the embedded default, with the
/// same semantics as the Redis store. One mutex makes every operation atomic.
#[derive(Default)]
pub struct MemoryCodeStore {
    state: Mutex<CodeState>,
}

impl MemoryCodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, CodeState> {
        // As for flows: every critical section leaves the maps consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live_challenge<'a>(
        challenges: &'a mut HashMap<Uuid, ChallengeEntry>,
        id: &Uuid,
        now: Instant,
    ) -> Option<&'a mut ChallengeEntry> {
        if challenges
            .get(id)
            .is_some_and(|entry| entry.expires_at <= now)
        {
            challenges.remove(id);
        }
        challenges.get_mut(id)
    }
}

#[async_trait]
impl ChallengeStore for MemoryCodeStore {
    async fn create_challenge(&self, challenge: &Challenge, ttl: Duration) -> StoreResult<()> {
        if challenge.mac.len() != 32 {
            return Err(StoreError::Internal(
                "challenge mac must be 32 bytes".into(),
            ));
        }
        let now = Instant::now();
        let mut state = self.state();
        state.creates_since_sweep += 1;
        if state.creates_since_sweep >= SWEEP_EVERY {
            state.creates_since_sweep = 0;
            state.challenges.retain(|_, entry| entry.expires_at > now);
            state
                .requests
                .retain(|_, (_, expires_at)| *expires_at > now);
        }
        state.challenges.insert(
            challenge.id,
            ChallengeEntry {
                challenge: challenge.clone(),
                expires_at: now + ttl,
            },
        );
        Ok(())
    }

    async fn get_challenge(&self, id: Uuid) -> StoreResult<Option<Challenge>> {
        let mut state = self.state();
        Ok(
            Self::live_challenge(&mut state.challenges, &id, Instant::now())
                .map(|entry| entry.challenge.clone()),
        )
    }

    async fn attempt(
        &self,
        id: Uuid,
        candidates: &[[u8; 32]],
        now: DateTime<Utc>,
        max_attempts: u32,
        kept_after_use: Duration,
    ) -> StoreResult<AttemptOutcome> {
        let instant = Instant::now();
        let mut state = self.state();
        let Some(entry) = Self::live_challenge(&mut state.challenges, &id, instant) else {
            return Ok(AttemptOutcome::NotFound);
        };
        let challenge = &mut entry.challenge;
        if challenge.consumed {
            return Ok(AttemptOutcome::AlreadyUsed);
        }
        if now >= challenge.expires_at {
            return Ok(AttemptOutcome::Expired);
        }
        if challenge.attempts >= max_attempts {
            return Ok(AttemptOutcome::TooManyAttempts);
        }
        challenge.attempts += 1;
        // Every candidate is compared in full, whatever the earlier ones gave.
        let found = candidates.iter().fold(Choice::from(0), |found, candidate| {
            found | challenge.mac.as_slice().ct_eq(candidate.as_slice())
        });
        if bool::from(found) {
            challenge.consumed = true;
            let verified = challenge.clone();
            if let Some(kept_until) = instant.checked_add(kept_after_use) {
                entry.expires_at = entry.expires_at.min(kept_until);
            }
            return Ok(AttemptOutcome::Verified(verified));
        }
        Ok(AttemptOutcome::Wrong {
            attempts_left: max_attempts - challenge.attempts,
        })
    }

    async fn replace_code(
        &self,
        id: Uuid,
        mac: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        resend_available_at: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<ReplaceOutcome> {
        if mac.len() != 32 {
            return Err(StoreError::Internal(
                "challenge mac must be 32 bytes".into(),
            ));
        }
        let instant = Instant::now();
        let mut state = self.state();
        let Some(entry) = Self::live_challenge(&mut state.challenges, &id, instant) else {
            return Ok(ReplaceOutcome::NotFound);
        };
        let challenge = &mut entry.challenge;
        if challenge.consumed {
            return Ok(ReplaceOutcome::AlreadyUsed);
        }
        if now < challenge.resend_available_at {
            return Ok(ReplaceOutcome::Cooldown {
                available_at: challenge.resend_available_at,
            });
        }
        challenge.mac = mac.to_vec();
        challenge.attempts = 0;
        challenge.sends = challenge.sends.saturating_add(1);
        challenge.expires_at = expires_at;
        challenge.resend_available_at = resend_available_at;
        entry.expires_at = instant + ttl;
        Ok(ReplaceOutcome::Replaced(entry.challenge.clone()))
    }

    async fn remember_request(
        &self,
        key: &str,
        challenge_id: Uuid,
        ttl: Duration,
    ) -> StoreResult<Option<Uuid>> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some((first, expires_at)) = state.requests.get(key)
            && *expires_at > now
        {
            return Ok(Some(*first));
        }
        state
            .requests
            .insert(key.to_owned(), (challenge_id, now + ttl));
        Ok(None)
    }

    async fn forget_request(&self, key: &str) -> StoreResult<()> {
        self.state().requests.remove(key);
        Ok(())
    }
}

#[async_trait]
impl RateLimiter for MemoryCodeStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<u32, Duration>> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let now_ms = now.timestamp_millis();
        let index = now_ms.div_euclid(window_ms);
        let remaining_ms = (index + 1) * window_ms - now_ms;
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        let instant = Instant::now();
        let mut state = self.state();
        state.hits_since_sweep += 1;
        if state.hits_since_sweep >= SWEEP_EVERY {
            state.hits_since_sweep = 0;
            state.windows.retain(|_, (_, until)| *until > instant);
        }
        // Kept one window longer than needed, as in Redis, for callers whose clocks lag.
        let (count, _) = state
            .windows
            .entry((key.to_owned(), index))
            .or_insert((0, instant + remaining + window));
        *count = count.saturating_add(1);
        if *count > limit {
            return Ok(Err(remaining));
        }
        Ok(Ok(*count))
    }
}

#[cfg(test)]
mod tests {
    use super::{FlowStore, MemoryFlowStore, SWEEP_EVERY};
    use std::time::Duration;
    use uuid::Uuid;

    #[tokio::test]
    async fn expired_flows_are_reclaimed_by_a_later_sweep() {
        let store = MemoryFlowStore::new();
        let expired = Uuid::new_v4();
        store
            .create_flow(expired, b"old", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            store.get_flow(expired).await.unwrap(),
            None,
            "absent at once"
        );
        store
            .create_flow(expired, b"again", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 1..SWEEP_EVERY {
            store
                .create_flow(Uuid::new_v4(), b"new", Duration::from_secs(60))
                .await
                .unwrap();
        }
        // The sweep ran on the SWEEP_EVERY-th create and took the expired flow with it.
        assert_eq!(store.state().flows.len(), SWEEP_EVERY as usize - 1);
    }
}
