//! A per-process cache of "which session and identity does this token belong to", the read
//! behind every `WhoAmI`, that still honours a revocation at once on every replica.
//!
//! Each cached answer remembers the *versions* of its session and of its identity as they were
//! before the answer was read from SQL. Every write that could change an answer (revocation,
//! upgrade, identity update or deletion, address verification) gives the session or identity a
//! new version after it commits and before it returns. A cached answer is served only after
//! checking that both versions are unchanged: one Redis `MGET` (or a map lookup in process)
//! instead of a SQL query. A write that has returned is therefore seen by the next read on any
//! replica; at worst a replica reads SQL once more than needed.
//!
//! Where versions live:
//! - with `redis.url`, in Redis (shared by all replicas). A missing key never matches: a version
//!   that expired or was lost with a Redis restart makes every answer it guarded read SQL again.
//!   A restart that restores an older snapshot, or a failover to a replica that missed a write,
//!   could bring an old version back; the connection errors either causes make every process
//!   forget its cached answers (a failover without any error would not);
//! - without, in process memory. That is only correct for one process per database, which is
//!   what a deployment without Redis is anyway (its flows and codes are in process too).
//!
//! When versions cannot be read (Redis down), answers come from SQL, as without the cache, and
//! the process forgets its cached answers. Answers are kept at most [`ENTRY_TTL`] and at most
//! [`CAPACITY`] of them, so memory stays bounded; a version change that could not be written
//! (Redis down after a commit) is retried in the background for [`ENTRY_TTL`].
use super::{
    AfterUpgrade, IdentityStore, SessionStore, SessionUpgrade, SqlStore, StoreError, StoreResult,
    Upgraded,
};
use crate::domain::identity::{CredentialKind, Identity};
use crate::domain::session::Session;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long an answer may be served (its versions are still checked on every use).
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
/// Answers kept per process: about 2 KiB each, so a few tens of MiB at most.
pub const CAPACITY: usize = 10_000;

/// How often a failed announcement is tried again.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(200);

/// What a version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionKey {
    Session(Uuid),
    Identity(Uuid),
    /// An identity's code failure budget (see `budget_cache`).
    Failures(Uuid),
}

/// Where the versions live; see the module documentation. A key given twice (the failure budget
/// has one) is read, checked and replaced as one key.
#[async_trait]
pub trait Versions: Send + Sync + 'static {
    /// The current versions, giving keys that have none a fresh one. Called before the SQL read
    /// the versions will guard.
    async fn current(&self, keys: [VersionKey; 2]) -> StoreResult<[u64; 2]>;

    /// Whether both keys still have the versions `seen`.
    async fn unchanged(&self, keys: [VersionKey; 2], seen: [u64; 2]) -> StoreResult<bool>;

    /// Gives each key a new version; called after the write it announces has committed.
    async fn bump(&self, keys: &[VersionKey]) -> StoreResult<()>;

    /// Gives both keys new versions in one atomic step, but only if both still have the
    /// versions `seen`; returns the new versions, or `None` (and changes nothing) when either
    /// had moved on.
    async fn replace(&self, keys: [VersionKey; 2], seen: [u64; 2])
    -> StoreResult<Option<[u64; 2]>>;
}

/// A cached answer as [`CachedSessions::cached_answer`] finds it.
struct Held {
    answer: Arc<(Session, Identity)>,
    seen: [u64; 2],
    stored_at: Instant,
}

/// A cache entry: at first only the ids behind the token (they never change), then the answer.
#[derive(Clone)]
enum Entry {
    Known {
        session_id: Uuid,
        identity_id: Uuid,
        stored_at: Instant,
    },
    Cached {
        answer: Arc<(Session, Identity)>,
        seen: [u64; 2],
        stored_at: Instant,
    },
}

impl Entry {
    fn stored_at(&self) -> Instant {
        match self {
            Entry::Known { stored_at, .. } | Entry::Cached { stored_at, .. } => *stored_at,
        }
    }
}

fn keys(session_id: Uuid, identity_id: Uuid) -> [VersionKey; 2] {
    [
        VersionKey::Session(session_id),
        VersionKey::Identity(identity_id),
    ]
}

/// The SQL store with `find_with_identity` cached; every other call goes straight through, and
/// writes announce themselves through [`Versions`].
pub struct CachedSessions {
    inner: Arc<dyn SqlStore>,
    versions: Arc<dyn Versions>,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl CachedSessions {
    pub fn new(inner: Arc<dyn SqlStore>, versions: Arc<dyn Versions>) -> Self {
        Self {
            inner,
            versions,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, token_hash: &[u8]) -> Option<Entry> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(token_hash)
            .filter(|entry| entry.stored_at().elapsed() < ENTRY_TTL)
            .cloned()
    }

    fn store(&self, token_hash: &[u8], entry: Option<Entry>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(entry) = entry else {
            entries.remove(token_hash);
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(token_hash) {
            entries.retain(|_, entry| entry.stored_at().elapsed() < ENTRY_TTL);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(token_hash.to_vec(), entry);
    }

    /// The cached answer for `token_hash`, with the versions it is kept under and since when, if
    /// it answers for `keys`.
    fn cached_answer(&self, token_hash: &[u8], keys: [VersionKey; 2]) -> Option<Held> {
        match self.entry(token_hash)? {
            Entry::Cached {
                answer,
                seen,
                stored_at,
            } if self::keys(answer.0.id, answer.1.id) == keys => Some(Held {
                answer,
                seen,
                stored_at,
            }),
            _ => None,
        }
    }

    /// Reads versions, then SQL, and keeps the answer under those versions.
    async fn refill(
        &self,
        token_hash: &[u8],
        keys: [VersionKey; 2],
    ) -> StoreResult<Option<(Session, Identity)>> {
        // The answer's age counts from before its versions were read: every change it could
        // miss happened after that instant, so it expires before the bookkeeping of that change
        // (pruned in-process versions, a given-up retry) can be dropped.
        let read_started = Instant::now();
        let seen = match self.versions.current(keys).await {
            Ok(seen) => seen,
            Err(error) => return self.bypass(token_hash, error).await,
        };
        let found = self.inner.find_with_identity(token_hash).await?;
        let entry = found
            .as_ref()
            .filter(|(session, identity)| keys == self::keys(session.id, identity.id))
            .map(|answer| Entry::Cached {
                answer: Arc::new(answer.clone()),
                seen,
                stored_at: read_started,
            });
        self.store(token_hash, entry);
        Ok(found)
    }

    /// Versions cannot be read (Redis unreachable): answer from SQL, and forget every cached
    /// answer, since versions lost in the outage (a restart that restores an older snapshot, a
    /// failover) could otherwise make an old answer match again.
    async fn bypass(
        &self,
        token_hash: &[u8],
        error: StoreError,
    ) -> StoreResult<Option<(Session, Identity)>> {
        tracing::debug!(error = %error, "session cache bypassed: versions unreadable");
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        self.inner.find_with_identity(token_hash).await
    }

    /// Gives the changed keys new versions. When that fails (Redis unreachable) the write has
    /// committed all the same, so it is reported as done and the announcement is retried in the
    /// background until it lands or every answer it could contradict has expired. While Redis is
    /// unreachable no replica serves cached answers (it cannot check versions), so the retry
    /// closes the gap left once Redis answers again.
    async fn announce(&self, keys: &[VersionKey]) {
        announce(&self.versions, keys).await;
    }
}

/// Gives `keys` new versions after the write they announce has committed; a failure is retried
/// in the background (see [`CachedSessions::announce`]), never reported to the writer.
pub(super) async fn announce(versions: &Arc<dyn Versions>, keys: &[VersionKey]) {
    let Err(error) = versions.bump(keys).await else {
        return;
    };
    tracing::error!(error = %error, "a change could not be announced to the caches; retrying");
    let versions = versions.clone();
    let keys = keys.to_vec();
    tokio::spawn(async move {
        let give_up = Instant::now() + ENTRY_TTL;
        while Instant::now() < give_up {
            tokio::time::sleep(ANNOUNCE_RETRY).await;
            if versions.bump(&keys).await.is_ok() {
                tracing::info!("a delayed change announcement went through");
                return;
            }
        }
        tracing::error!("a change announcement was given up; cached answers have expired by now");
    });
}

#[async_trait]
impl SessionStore for CachedSessions {
    fn known_identity(&self, token_hash: &[u8]) -> Option<Uuid> {
        match self.entry(token_hash)? {
            Entry::Known { identity_id, .. } => Some(identity_id),
            Entry::Cached { answer, .. } => Some(answer.1.id),
        }
    }

    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        self.inner.insert_session(session).await?;
        // Whose token this is is known already, so its first lookup can be cached.
        self.store(
            &session.token_hash,
            Some(Entry::Known {
                session_id: session.id,
                identity_id: session.identity_id,
                stored_at: Instant::now(),
            }),
        );
        Ok(())
    }

    async fn find_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<Session>> {
        self.inner.find_by_token_hash(token_hash).await
    }

    async fn find_with_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(Session, Identity)>> {
        match self.entry(token_hash) {
            None => {
                // First sight of a token this process did not issue: learn whose it is, cache
                // nothing yet. The versions must be read before the data they guard, and they
                // cannot be named before now.
                let found = self.inner.find_with_identity(token_hash).await?;
                let entry = found.as_ref().map(|(session, identity)| Entry::Known {
                    session_id: session.id,
                    identity_id: identity.id,
                    stored_at: Instant::now(),
                });
                self.store(token_hash, entry);
                Ok(found)
            }
            Some(Entry::Cached { answer, seen, .. }) => {
                let keys = keys(answer.0.id, answer.1.id);
                match self.versions.unchanged(keys, seen).await {
                    Ok(true) => Ok(Some(answer.as_ref().clone())),
                    Ok(false) => self.refill(token_hash, keys).await,
                    Err(error) => self.bypass(token_hash, error).await,
                }
            }
            Some(Entry::Known {
                session_id,
                identity_id,
                ..
            }) => self.refill(token_hash, keys(session_id, identity_id)).await,
        }
    }

    async fn get_session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.inner.get_session(id).await
    }

    async fn list_sessions(
        &self,
        identity_id: Uuid,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Session>> {
        self.inner
            .list_sessions(identity_id, include_inactive, now)
            .await
    }

    async fn revoke_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let revoked = self.inner.revoke_session(id, at).await?;
        // Announced even when this call changed nothing: a concurrent revocation that did may
        // not have announced yet, and this one must not return before the change is visible.
        self.announce(&[VersionKey::Session(id)]).await;
        Ok(revoked)
    }

    async fn revoke_identity_sessions(
        &self,
        identity_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let revoked = self.inner.revoke_identity_sessions(identity_id, at).await?;
        // Announced even when nothing changed here, as for `revoke_session`.
        self.announce(&[VersionKey::Identity(identity_id)]).await;
        Ok(revoked)
    }

    async fn upgrade_session(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>> {
        self.upgrade_session_then(id, expected_token_hash, upgrade, Box::pin(async {}))
            .await
    }

    async fn upgrade_session_then<'a>(
        &'a self,
        id: Uuid,
        expected_token_hash: &'a [u8],
        upgrade: &'a SessionUpgrade,
        after: AfterUpgrade<'a>,
    ) -> StoreResult<Option<Upgraded>> {
        // The upgrade reads the new token's answer along with its write, so that answer can be
        // cached at once, under versions read before the write like any other answer. The
        // upgrade's own announcement would change those versions, so it is made as a
        // compare-and-set from them: when it succeeds, no change was announced since they were
        // read, and every change still to be announced will move the versions it set, which
        // are what the answer is kept under. When it fails, a concurrent change may be missing
        // from the answer; it is announced plainly and not kept.
        // This relies on the store reading the answer in a statement (or transaction) that
        // starts after the versions were read, as both SQL stores do.
        let keys = keys(id, upgrade.identity_id);
        let read_started = Instant::now();
        // Any versions the keys held before the write serve as the compare-and-set's start:
        // a version that has moved on does not come back while an answer read under it can be
        // served (Redis hands out random ones; in-process ones only grow, and fall back to 0 only
        // once every answer read before their change has expired). The old token's cached
        // answer holds such versions (read before its own SQL read, and just confirmed by the
        // caller's lookup), which saves reading them again; an announcement made since then only
        // fails the compare-and-set.
        let held = self.cached_answer(expected_token_hash, keys);
        let before = match &held {
            Some(held) => Ok(held.seen),
            None => self.versions.current(keys).await,
        };
        if before.is_err() {
            // As in `bypass`: versions lost in an outage could make an old answer match again.
            self.entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
        }
        // That answer's identity was read under those versions too, so the same compare-and-set
        // vouches for it: the store need not read it again (on Postgres, two aggregating
        // subqueries per upgrade; on SQLite, three of its six statements). It is then as old
        // as that answer, and so is the new one.
        let outcome = match &held {
            Some(_) => {
                self.inner
                    .upgrade_session_without_identity(id, expected_token_hash, upgrade)
                    .await
            }
            None => {
                self.inner
                    .upgrade_session(id, expected_token_hash, upgrade)
                    .await
            }
        };
        let upgraded = match outcome {
            Ok(Some(upgraded)) => upgraded,
            Ok(None) => return Ok(None),
            Err(error) => {
                // The upgrade may have committed before the error (a connection lost after
                // COMMIT, an answer that did not decode): the old token must stop being served.
                self.store(expected_token_hash, None);
                self.announce(&keys).await;
                return Err(error);
            }
        };
        // The identity the new answer is kept with: as the store read it, else the one held.
        let (identity, answer_started) = match (&upgraded.identity, held) {
            (Some(identity), _) => (Some(identity.clone()), read_started),
            (None, Some(held)) => (
                Some(upgrade.verified_in(held.answer.1.clone())),
                read_started.min(held.stored_at),
            ),
            (None, None) => (None, read_started),
        };
        // The old token's answer can never be served again: free it now rather than at expiry.
        self.store(expected_token_hash, None);
        let announced = async {
            let mut kept = None;
            if let (Ok(before), Some(identity)) = (before, identity)
                && keys == self::keys(upgraded.session.id, identity.id)
                && let Ok(Some(seen)) = self.versions.replace(keys, before).await
            {
                kept = Some(Entry::Cached {
                    answer: Arc::new((upgraded.session.clone(), identity)),
                    seen,
                    stored_at: answer_started,
                });
            }
            match kept {
                Some(entry) => self.store(&upgrade.new_token_hash, Some(entry)),
                None => {
                    // The new token's owner is known, so its first lookup can be cached. The old
                    // token stops working, and an address of the identity may now be verified.
                    self.store(
                        &upgrade.new_token_hash,
                        Some(Entry::Known {
                            session_id: id,
                            identity_id: upgrade.identity_id,
                            stored_at: Instant::now(),
                        }),
                    );
                    self.announce(&keys).await;
                }
            }
        };
        tokio::join!(announced, after);
        Ok(Some(upgraded))
    }
}

#[async_trait]
impl IdentityStore for CachedSessions {
    async fn insert_identity(
        &self,
        identity: &Identity,
        password_hash: Option<&str>,
    ) -> StoreResult<()> {
        self.inner.insert_identity(identity, password_hash).await
    }

    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool> {
        let updated = self.inner.update_identity(identity).await?;
        if updated {
            self.announce(&[VersionKey::Identity(identity.id)]).await;
        }
        Ok(updated)
    }

    async fn get_identity(&self, id: Uuid) -> StoreResult<Option<Identity>> {
        self.inner.get_identity(id).await
    }

    async fn find_by_identifier(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> StoreResult<Option<Identity>> {
        self.inner.find_by_identifier(kind, value).await
    }

    async fn password_hash(&self, identity_id: Uuid) -> StoreResult<Option<String>> {
        self.inner.password_hash(identity_id).await
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Identity>> {
        self.inner.list_identities(after, limit).await
    }

    async fn delete_identity(&self, id: Uuid) -> StoreResult<bool> {
        let deleted = self.inner.delete_identity(id).await?;
        // Announced even when nothing was deleted here, as for `revoke_session`.
        self.announce(&[VersionKey::Identity(id)]).await;
        Ok(deleted)
    }

    async fn mark_address_verified(
        &self,
        identity_id: Uuid,
        value: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let marked = self
            .inner
            .mark_address_verified(identity_id, value, at)
            .await?;
        if marked {
            self.announce(&[VersionKey::Identity(identity_id)]).await;
        }
        Ok(marked)
    }
}

/// Versions in process memory, for a single process per database.
pub struct MemoryVersions {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// Last version handed out; versions only grow, so an old one never comes back.
    last: u64,
    /// Keys changed recently (at least within the last [`ENTRY_TTL`]); a key not here has
    /// version 0.
    changed: HashMap<VersionKey, (u64, Instant)>,
    /// Bumps since `changed` was last pruned: pruning scans it all, so not on every bump.
    bumps_since_prune: u32,
}

/// Bumps between two prunes of the in-process versions.
const PRUNE_EVERY: u32 = 1024;

impl MemoryVersions {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(MemoryState::default()),
        }
    }

    fn read(&self, keys: [VersionKey; 2]) -> [u64; 2] {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .read(keys)
    }
}

impl Default for MemoryVersions {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Versions for MemoryVersions {
    async fn current(&self, keys: [VersionKey; 2]) -> StoreResult<[u64; 2]> {
        Ok(self.read(keys))
    }

    async fn unchanged(&self, keys: [VersionKey; 2], seen: [u64; 2]) -> StoreResult<bool> {
        Ok(self.read(keys) == seen)
    }

    async fn replace(
        &self,
        keys: [VersionKey; 2],
        seen: [u64; 2],
    ) -> StoreResult<Option<[u64; 2]>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.read(keys) != seen {
            return Ok(None);
        }
        state.bump(&keys);
        Ok(Some(state.read(keys)))
    }

    async fn bump(&self, keys: &[VersionKey]) -> StoreResult<()> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.bump(keys);
        Ok(())
    }
}

impl MemoryState {
    fn read(&self, keys: [VersionKey; 2]) -> [u64; 2] {
        keys.map(|key| self.changed.get(&key).map_or(0, |(version, _)| *version))
    }

    fn bump(&mut self, keys: &[VersionKey]) {
        // A key may fall back to 0 once every answer read before its change has expired.
        self.bumps_since_prune += 1;
        if self.bumps_since_prune >= PRUNE_EVERY {
            self.bumps_since_prune = 0;
            self.changed
                .retain(|_, (_, changed_at)| changed_at.elapsed() < ENTRY_TTL);
        }
        for key in keys {
            self.last += 1;
            let version = self.last;
            self.changed.insert(*key, (version, Instant::now()));
        }
    }
}

/// Versions in Redis, shared by every replica. Keys are `<prefix>version:session:<id>`,
/// `<prefix>version:identity:<id>` and `<prefix>version:failures:<id>`, each holding a random
/// number.
pub struct RedisVersions {
    connection: redis::aio::ConnectionManager,
    key_prefix: String,
}

/// Far longer than [`ENTRY_TTL`]: a key that expires takes only expired answers with it.
const REDIS_VERSION_TTL: Duration = Duration::from_secs(3600);

impl RedisVersions {
    pub fn new(connection: redis::aio::ConnectionManager, key_prefix: &str) -> Self {
        Self {
            connection,
            key_prefix: key_prefix.to_owned(),
        }
    }

    fn key(&self, key: VersionKey) -> String {
        match key {
            VersionKey::Session(id) => format!("{}version:session:{id}", self.key_prefix),
            VersionKey::Identity(id) => format!("{}version:identity:{id}", self.key_prefix),
            VersionKey::Failures(id) => format!("{}version:failures:{id}", self.key_prefix),
        }
    }
}

/// Compare-and-set of two versions (see [`Versions::replace`]); values are compared as the
/// decimal strings they are stored as.
static REPLACE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
            redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5])
            redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
            return 1
        end
        return 0
        ",
    )
});

/// `keys` with a key given twice named once: the failure budget guards its one key as a pair of
/// it (`budget_cache`), and naming it twice cost Redis a needless `SET` and `MGET` argument, and
/// made `replace` give it two new versions of which only the second stood.
fn distinct(keys: &[VersionKey; 2]) -> &[VersionKey] {
    if keys[0] == keys[1] { &keys[..1] } else { keys }
}

fn fresh_version() -> u64 {
    // Never 0, and never a value an earlier holder of the key is likely to have had.
    rand::random::<u64>() | 1
}

fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |error| super::redis::map_error(context, error)
}

#[async_trait]
impl Versions for RedisVersions {
    async fn current(&self, keys: [VersionKey; 2]) -> StoreResult<[u64; 2]> {
        let names = keys.map(|key| self.key(key));
        let names = &names[..distinct(&keys).len()];
        let ttl_ms = REDIS_VERSION_TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("SET")
                .arg(name)
                .arg(fresh_version())
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        pipe.cmd("MGET").arg(names);
        let mut connection = self.connection.clone();
        let (values,): (Vec<Option<u64>>,) = pipe
            .query_async(&mut connection)
            .await
            .map_err(redis_error("read session versions"))?;
        match values.as_slice() {
            [Some(first), Some(second)] => Ok([*first, *second]),
            [Some(only)] => Ok([*only, *only]),
            // Expired between the two commands: nothing can be guarded by it.
            _ => Err(StoreError::Unavailable(
                "session versions vanished while read".into(),
            )),
        }
    }

    async fn unchanged(&self, keys: [VersionKey; 2], seen: [u64; 2]) -> StoreResult<bool> {
        let names = keys.map(|key| self.key(key));
        let names = &names[..distinct(&keys).len()];
        let mut connection = self.connection.clone();
        let values: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(names)
            .query_async(&mut connection)
            .await
            .map_err(redis_error("check session versions"))?;
        Ok(match values.as_slice() {
            [first, second] => [*first, *second] == [Some(seen[0]), Some(seen[1])],
            // One key cannot have had two versions at once.
            [only] => seen[0] == seen[1] && *only == Some(seen[0]),
            _ => false,
        })
    }

    async fn replace(
        &self,
        keys: [VersionKey; 2],
        seen: [u64; 2],
    ) -> StoreResult<Option<[u64; 2]>> {
        // A key given twice gets one new version, not the second of two.
        let fresh = match distinct(&keys) {
            [_] => [fresh_version(); 2],
            _ => [fresh_version(), fresh_version()],
        };
        let mut connection = self.connection.clone();
        let replaced: bool = REPLACE_SCRIPT
            .key(self.key(keys[0]))
            .key(self.key(keys[1]))
            .arg(seen[0])
            .arg(seen[1])
            .arg(fresh[0])
            .arg(fresh[1])
            .arg(REDIS_VERSION_TTL.as_millis() as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error("announce a session change"))?;
        Ok(replaced.then_some(fresh))
    }

    async fn bump(&self, keys: &[VersionKey]) -> StoreResult<()> {
        let ttl_ms = REDIS_VERSION_TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("SET")
                .arg(self.key(*key))
                .arg(fresh_version())
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(redis_error("announce a session change"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_named_once() {
        let failures = VersionKey::Failures(Uuid::now_v7());
        assert_eq!(distinct(&[failures, failures]), &[failures]);
        let pair = [
            VersionKey::Session(Uuid::now_v7()),
            VersionKey::Identity(Uuid::now_v7()),
        ];
        assert_eq!(distinct(&pair), &pair);
    }
}
