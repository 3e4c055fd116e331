//! In-process store for short-lived state on the embedded default (one replica only): flows,
//! code challenges and rate-limit windows.
//!
//! Entries carry their expiry instant; an expired entry is treated as absent at once and removed
//! lazily (when looked at, and in a sweep every `SWEEP_EVERY` creates or hits), so no
//! background task is needed and no single call pays for scanning every entry.
//!
//! Entries that have reached their end (a passed flow, a used challenge no remembered `SendCode`
//! request points at) are kept only to answer a repeated request with "already used" instead of
//! "not found", and both refuse it. Of those, at most the newest [`FINISHED_KEPT_AT_MOST`] are
//! held: at full load the minutes they are otherwise kept came to hundreds of MiB of process
//! memory.
use super::codes::{
    AttemptOutcome, Challenge, ChallengeStore, KeptAfterUse, RateLimiter, ReplaceOutcome,
};
use super::{FlowStore, StoreError, StoreResult, StoredFlow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
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

/// Finished entries held at most, per store. At 1,700 step-ups a second that is the last ten
/// seconds of them (about 20 MiB of flows and challenges together); at 50 a second or fewer,
/// the whole five minutes a flow's are kept for.
pub const FINISHED_KEPT_AT_MOST: usize = 16_384;

/// The ids of finished entries, oldest first, each with the deadline it was given on finishing
/// (which tells whether the entry under that id is still the one that finished).
#[derive(Default)]
struct Finished {
    oldest_first: VecDeque<(Uuid, Instant)>,
}

impl Finished {
    /// Records `id` as finished until `kept_until`, then hands `remove`, from the front, every
    /// record beyond the bound or past its deadline, with the deadline it was recorded with.
    /// Deadlines are not in order (each is capped by its entry's own lifespan), so a record past
    /// its deadline may wait behind a live one; the bound holds either way.
    fn record(
        &mut self,
        id: Uuid,
        kept_until: Instant,
        now: Instant,
        mut remove: impl FnMut(&Uuid, Instant),
    ) {
        self.oldest_first.push_back((id, kept_until));
        while let Some(&(oldest, deadline)) = self.oldest_first.front() {
            if self.oldest_first.len() <= FINISHED_KEPT_AT_MOST && deadline > now {
                break;
            }
            self.oldest_first.pop_front();
            remove(&oldest, deadline);
        }
    }
}

#[derive(Default)]
struct FlowState {
    flows: HashMap<Uuid, Entry>,
    creates_since_sweep: u32,
    finished: Finished,
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

    async fn delete_flow(&self, id: Uuid) -> StoreResult<()> {
        self.state().flows.remove(&id);
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
        let FlowState {
            flows, finished, ..
        } = &mut *state;
        let Some(entry) = Self::live(flows, &id, now) else {
            return false;
        };
        if entry.flow.revision != expected_revision {
            return false;
        }
        entry.flow = StoredFlow {
            revision: expected_revision + 1,
            document: document.to_vec(),
        };
        if let Some(keep_for) = keep_for {
            if let Some(kept_until) = now.checked_add(keep_for) {
                entry.expires_at = entry.expires_at.min(kept_until);
            }
            let kept_until = entry.expires_at;
            finished.record(id, kept_until, now, |oldest, deadline| {
                // Changed since it finished (or gone): not the entry this record is about.
                if flows
                    .get(oldest)
                    .is_some_and(|entry| entry.expires_at == deadline)
                {
                    flows.remove(oldest);
                }
            });
        }
        true
    }
}

struct ChallengeEntry {
    challenge: Challenge,
    expires_at: Instant,
    /// Until when a remembered `SendCode` request answers its retries with this challenge: while
    /// it does, the used challenge keeps its time rather than joining the bounded finished ones.
    remembered_until: Option<Instant>,
}

impl ChallengeEntry {
    fn answers_a_request(&self, now: Instant) -> bool {
        self.remembered_until.is_some_and(|until| until > now)
    }
}

#[derive(Default)]
struct CodeState {
    challenges: HashMap<Uuid, ChallengeEntry>,
    requests: HashMap<String, (Uuid, Instant)>,
    /// Challenges a remembered request points at but not created yet (the request is remembered
    /// first, so that concurrent retries send one code), with the request's end.
    awaited: HashMap<Uuid, Instant>,
    /// Counters by (key, window index), each dropped once its window is over.
    windows: HashMap<(String, i64), (u32, Instant)>,
    /// Hits since the last sweep of `windows`.
    hits_since_sweep: u32,
    /// Creates since the last sweep of `challenges` and `requests`.
    creates_since_sweep: u32,
    /// Used challenges that answer no remembered request.
    used: Finished,
}

/// Challenges, sender idempotency keys and rate-limit windows for the embedded default, with the
/// same semantics as the Redis store except that used challenges beyond the bound go sooner. One
/// mutex makes every operation atomic.
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
            state.awaited.retain(|_, expires_at| *expires_at > now);
        }
        let remembered_until = state.awaited.remove(&challenge.id);
        state.challenges.insert(
            challenge.id,
            ChallengeEntry {
                challenge: challenge.clone(),
                expires_at: now + ttl,
                remembered_until,
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

    async fn delete_challenge(&self, id: Uuid) -> StoreResult<()> {
        self.state().challenges.remove(&id);
        Ok(())
    }

    async fn attempt(
        &self,
        id: Uuid,
        candidates: &[[u8; 32]],
        now: DateTime<Utc>,
        max_attempts: u32,
        kept_after_use: KeptAfterUse,
    ) -> StoreResult<AttemptOutcome> {
        let instant = Instant::now();
        let mut state = self.state();
        let CodeState {
            challenges, used, ..
        } = &mut *state;
        let Some(entry) = Self::live_challenge(challenges, &id, instant) else {
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
            if let Some(kept_until) = instant.checked_add(kept_after_use.at_most()) {
                entry.expires_at = entry.expires_at.min(kept_until);
            }
            let droppable = match kept_after_use {
                KeptAfterUse::ForItsFlow(_) => true,
                KeptAfterUse::ForItsCaller(_) => !entry.answers_a_request(instant),
            };
            if droppable {
                let kept_until = entry.expires_at;
                used.record(id, kept_until, instant, |oldest, deadline| {
                    if challenges.get(oldest).is_some_and(|entry| {
                        entry.challenge.consumed
                            && entry.expires_at == deadline
                            && !entry.answers_a_request(instant)
                    }) {
                        challenges.remove(oldest);
                    }
                });
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
        let expires_at = now + ttl;
        state
            .requests
            .insert(key.to_owned(), (challenge_id, expires_at));
        match state.challenges.get_mut(&challenge_id) {
            Some(entry) => entry.remembered_until = Some(expires_at),
            None => {
                state.awaited.insert(challenge_id, expires_at);
            }
        }
        Ok(None)
    }

    async fn forget_request(&self, key: &str) -> StoreResult<()> {
        let mut state = self.state();
        if let Some((challenge_id, _)) = state.requests.remove(key) {
            state.awaited.remove(&challenge_id);
            if let Some(entry) = state.challenges.get_mut(&challenge_id) {
                entry.remembered_until = None;
            }
        }
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
    use super::{
        AttemptOutcome, Challenge, ChallengeStore, FINISHED_KEPT_AT_MOST, FlowStore, KeptAfterUse,
        MemoryCodeStore, MemoryFlowStore, SWEEP_EVERY,
    };
    use crate::domain::aal::Channel;
    use chrono::Utc;
    use std::time::Duration;
    use uuid::Uuid;

    const HOUR: Duration = Duration::from_secs(3600);
    const KEPT: Duration = Duration::from_secs(300);

    async fn finished_flow(store: &MemoryFlowStore, keep_for: Duration) -> Uuid {
        let id = Uuid::new_v4();
        store.create_flow(id, b"open", HOUR).await.unwrap();
        assert!(store.finish_flow(id, 1, b"passed", keep_for).await.unwrap());
        id
    }

    #[tokio::test]
    async fn only_the_newest_finished_flows_are_held_and_open_ones_are_never_dropped() {
        let store = MemoryFlowStore::new();
        let open = Uuid::new_v4();
        store.create_flow(open, b"open", HOUR).await.unwrap();
        let oldest = finished_flow(&store, KEPT).await;
        let second = finished_flow(&store, KEPT).await;
        // A finished flow changed afterwards is still the one that finished.
        assert!(
            store
                .replace_flow(second, 2, b"passed again")
                .await
                .unwrap()
        );
        let third = finished_flow(&store, KEPT).await;
        for _ in 3..FINISHED_KEPT_AT_MOST {
            finished_flow(&store, KEPT).await;
        }
        assert!(
            store.get_flow(oldest).await.unwrap().is_some(),
            "not beyond the bound yet"
        );

        finished_flow(&store, KEPT).await;
        assert_eq!(
            store.get_flow(oldest).await.unwrap(),
            None,
            "beyond the bound"
        );
        assert!(store.get_flow(second).await.unwrap().is_some());
        finished_flow(&store, KEPT).await;
        assert_eq!(store.get_flow(second).await.unwrap(), None);
        assert!(store.get_flow(third).await.unwrap().is_some());
        let open_flow = store
            .get_flow(open)
            .await
            .unwrap()
            .expect("an open flow stays");
        assert_eq!(open_flow.document, b"open");
        let state = store.state();
        assert_eq!(state.flows.len(), FINISHED_KEPT_AT_MOST + 1);
        assert_eq!(state.finished.oldest_first.len(), FINISHED_KEPT_AT_MOST);
    }

    #[tokio::test]
    async fn finished_flows_past_their_deadline_go_at_the_next_finish() {
        let store = MemoryFlowStore::new();
        let brief = finished_flow(&store, Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let kept = finished_flow(&store, KEPT).await;
        let state = store.state();
        assert!(
            !state.flows.contains_key(&brief),
            "dropped, not left for a sweep"
        );
        assert!(state.flows.contains_key(&kept));
        assert_eq!(state.finished.oldest_first.len(), 1);
    }

    fn challenge(mac: [u8; 32]) -> Challenge {
        let id = Uuid::new_v4();
        Challenge {
            id,
            identity_id: Uuid::new_v4(),
            address: "+4915112345678".into(),
            channel: Channel::Sms,
            purpose: format!("login:{id}"),
            mac: mac.to_vec(),
            attempts: 0,
            sends: 1,
            expires_at: Utc::now() + chrono::Duration::minutes(15),
            resend_available_at: Utc::now(),
            consumed: false,
        }
    }

    const USED_MAC: [u8; 32] = [7u8; 32];

    async fn use_challenge(store: &MemoryCodeStore, id: Uuid, kept: KeptAfterUse) {
        let outcome = store
            .attempt(id, &[USED_MAC], Utc::now(), 5, kept)
            .await
            .unwrap();
        assert!(matches!(outcome, AttemptOutcome::Verified(_)));
    }

    async fn used_challenge(store: &MemoryCodeStore, kept: KeptAfterUse) -> Uuid {
        let challenge = challenge(USED_MAC);
        store.create_challenge(&challenge, HOUR).await.unwrap();
        use_challenge(store, challenge.id, kept).await;
        challenge.id
    }

    /// Remembers `key` for a new challenge, either before creating it (as `SendCode` does) or
    /// after, then forgets it if `forget` (as a failed send does), and uses the challenge.
    async fn used_for_a_request(
        store: &MemoryCodeStore,
        key: &str,
        remembered_first: bool,
        forget: bool,
    ) -> Uuid {
        let challenge = challenge(USED_MAC);
        if remembered_first {
            let first = store.remember_request(key, challenge.id, HOUR).await;
            assert_eq!(first.unwrap(), None);
        }
        store.create_challenge(&challenge, HOUR).await.unwrap();
        if !remembered_first {
            let first = store.remember_request(key, challenge.id, HOUR).await;
            assert_eq!(first.unwrap(), None);
        }
        if forget {
            store.forget_request(key).await.unwrap();
        }
        use_challenge(store, challenge.id, KeptAfterUse::ForItsCaller(KEPT)).await;
        challenge.id
    }

    #[tokio::test]
    async fn only_the_newest_used_challenges_are_held_unless_a_remembered_request_needs_them() {
        let store = MemoryCodeStore::new();
        let unused = challenge([1u8; 32]);
        store.create_challenge(&unused, HOUR).await.unwrap();
        let requested = used_for_a_request(&store, "before", true, false).await;
        let requested_after = used_for_a_request(&store, "after", false, false).await;
        assert!(
            store.state().used.oldest_first.is_empty(),
            "a challenge a request needs takes no place among the bounded ones"
        );
        let forgotten = used_for_a_request(&store, "forgotten", true, true).await;
        let forgotten_after = used_for_a_request(&store, "forgotten after", false, true).await;
        let by_a_flow = used_challenge(&store, KeptAfterUse::ForItsFlow(KEPT)).await;
        let by_a_caller = used_challenge(&store, KeptAfterUse::ForItsCaller(KEPT)).await;
        let held = [forgotten, forgotten_after, by_a_flow, by_a_caller];
        for round in held.len()..FINISHED_KEPT_AT_MOST {
            let kept = if round % 2 == 0 {
                KeptAfterUse::ForItsFlow(KEPT)
            } else {
                KeptAfterUse::ForItsCaller(KEPT)
            };
            used_challenge(&store, kept).await;
        }
        for id in held {
            assert!(
                store.get_challenge(id).await.unwrap().is_some(),
                "not beyond the bound yet"
            );
        }

        for (newer, dropped) in held.iter().enumerate() {
            used_challenge(&store, KeptAfterUse::ForItsCaller(KEPT)).await;
            assert_eq!(
                store.get_challenge(*dropped).await.unwrap(),
                None,
                "beyond the bound"
            );
            if let Some(next) = held.get(newer + 1) {
                assert!(store.get_challenge(*next).await.unwrap().is_some());
            }
        }
        assert!(
            store.get_challenge(unused.id).await.unwrap().is_some(),
            "a challenge not used yet is never dropped"
        );
        for id in [requested, requested_after] {
            let challenge = store.get_challenge(id).await.unwrap();
            assert!(
                challenge.is_some_and(|challenge| challenge.consumed),
                "a retried send must find the challenge its request remembers"
            );
            let again = store
                .attempt(
                    id,
                    &[USED_MAC],
                    Utc::now(),
                    5,
                    KeptAfterUse::ForItsCaller(KEPT),
                )
                .await
                .unwrap();
            assert_eq!(again, AttemptOutcome::AlreadyUsed);
        }
        let state = store.state();
        assert_eq!(state.challenges.len(), FINISHED_KEPT_AT_MOST + 3);
        assert!(
            state.awaited.is_empty(),
            "creating or forgetting ends the wait"
        );
    }

    /// A request holds its used challenge only while it is remembered: one used after its
    /// request ended goes with the bounded ones, and answers "not found" once dropped, so its
    /// code cannot verify again; one named by a request only after it was used is held from
    /// then on. A request forgotten before its challenge was created leaves nothing behind.
    #[tokio::test]
    async fn a_request_holds_its_used_challenge_only_while_it_is_remembered() {
        let store = MemoryCodeStore::new();
        let brief = challenge(USED_MAC);
        let first = store
            .remember_request("brief", brief.id, Duration::from_millis(1))
            .await;
        assert_eq!(first.unwrap(), None);
        store.create_challenge(&brief, HOUR).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        use_challenge(&store, brief.id, KeptAfterUse::ForItsCaller(KEPT)).await;
        let refused = Uuid::new_v4();
        let first = store.remember_request("refused", refused, HOUR).await;
        assert_eq!(first.unwrap(), None);
        store.forget_request("refused").await.unwrap();
        let late = used_challenge(&store, KeptAfterUse::ForItsCaller(KEPT)).await;
        let first = store.remember_request("late", late, HOUR).await;
        assert_eq!(first.unwrap(), None);
        for _ in 2..FINISHED_KEPT_AT_MOST {
            used_challenge(&store, KeptAfterUse::ForItsFlow(KEPT)).await;
        }
        assert!(store.get_challenge(brief.id).await.unwrap().is_some());

        used_challenge(&store, KeptAfterUse::ForItsFlow(KEPT)).await;
        assert_eq!(store.get_challenge(brief.id).await.unwrap(), None);
        let again = store
            .attempt(
                brief.id,
                &[USED_MAC],
                Utc::now(),
                5,
                KeptAfterUse::ForItsCaller(KEPT),
            )
            .await
            .unwrap();
        assert_eq!(again, AttemptOutcome::NotFound, "fails closed");
        used_challenge(&store, KeptAfterUse::ForItsFlow(KEPT)).await;
        assert!(
            store.get_challenge(late).await.unwrap().is_some(),
            "remembered since it was used"
        );
        assert!(store.state().awaited.is_empty());
    }

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
