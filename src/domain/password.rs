//! Password hashing with argon2id (OWASP parameters: m=19 MiB, t=2, p=1).
//!
//! Hashing is CPU-bound for tens of milliseconds and needs 19 MiB of working memory, so it runs on
//! a few dedicated threads (one per core) that reuse their memory blocks while hashes keep coming.
//! Letting each run allocate and free its block on tokio's blocking pool kept hundreds of MiB
//! resident: glibc raises its mmap threshold after the first 19 MiB free, so later blocks come
//! from the per-thread arenas of whichever pool threads ran them and stay there. Callers wait on
//! the async side; more runs at once than cores would only add memory, not throughput.
//!
//! Blocks no run has used for [`IDLE_MEMORY_RELEASED_AFTER`] are freed: a server whose load is
//! code step-ups, not passwords, would otherwise keep 19 MiB per core for the rest of its life
//! (on two cores, 38 of the embedded server's 94 MiB under step-up load). The wait is short so
//! that a burst of logins, say the sessions of users who go on to step up, does not leave its
//! blocks resident under the load that follows: they came on top of it and took the process's
//! high-water mark past 100 MiB. A block allocated afresh costs a run 2–5 ms of its 25–35 ms, so
//! only logins further apart than the wait pay it. The memory leaves the process because the
//! server's allocator (mimalloc) hands a freed block of this size back to the system; under
//! glibc, as in the tests, only the first one would go.
use super::error::{DomainError, FieldViolation};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const MIN_PASSWORD_LENGTH: usize = 8;
/// Long enough for passphrases, short enough that hashing cannot be used to burn CPU.
pub const MAX_PASSWORD_LENGTH: usize = 1024;
/// Salt length for new hashes (the PHC recommendation).
const SALT_LENGTH: usize = 16;
/// Digest length for new hashes (argon2's default).
const OUTPUT_LENGTH: usize = 32;

fn new_hash_params() -> Params {
    Params::new(19 * 1024, 2, 1, Some(OUTPUT_LENGTH)).expect("argon2 parameters are valid")
}

/// Parameters beyond these in a stored hash are treated as unreadable rather than run: a hash
/// written by someone with database access must not pin gigabytes or a hashing thread.
const MAX_STORED_MEMORY_KIB: u32 = 256 * 1024;
const MAX_STORED_ITERATIONS: u32 = 16;
const MAX_STORED_LANES: u32 = 16;

/// A run on a hashing thread, given a memory block to use (grown as the run needs).
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// What the hashing threads' queue carries.
enum Work {
    Run(Job),
    /// A thread put a block back: the thread waiting for work, which may have begun its wait with
    /// nothing spare and so without a deadline, must now wait only until the block is to be freed.
    BlockPutBack,
}

/// How long a memory block may wait unused for the next run before it is freed.
pub const IDLE_MEMORY_RELEASED_AFTER: Duration = Duration::from_millis(250);

/// The hashing threads' shared queue. Threads start on first use and live as long as the process.
static HASHING_QUEUE: LazyLock<mpsc::Sender<Work>> = LazyLock::new(start_hashing_threads);

/// How often a hashing thread's wait for work ran out, which is when idle blocks are freed.
static IDLE_WAKE_UPS: AtomicU64 = AtomicU64::new(0);

/// Blocks between runs, shared by the threads: whichever thread is waiting for work frees the
/// idle ones, so no block depends on its own thread waking up.
static SPARE_MEMORY: Mutex<SpareMemory> = Mutex::new(SpareMemory::new());

/// Memory blocks put back after a run, each with when it was put back.
struct SpareMemory {
    blocks: Vec<(Vec<Block>, Instant)>,
}

impl SpareMemory {
    const fn new() -> Self {
        Self { blocks: Vec::new() }
    }

    /// The most recently used block (already the right size after a burst), or an empty one.
    fn take(&mut self) -> Vec<Block> {
        self.blocks
            .pop()
            .map(|(block, _)| block)
            .unwrap_or_default()
    }

    fn put_back(&mut self, block: Vec<Block>, now: Instant) {
        if !block.is_empty() {
            self.blocks.push((block, now));
        }
    }

    /// Takes out the blocks unused for [`IDLE_MEMORY_RELEASED_AFTER`] (`put_back` keeps them
    /// oldest first), for the caller to free once the pool is unlocked: freeing 19 MiB is a
    /// system call, and the thread waiting for work may be waiting on this lock.
    #[must_use]
    fn take_idle(&mut self, now: Instant) -> Vec<Vec<Block>> {
        let idle = self.blocks.partition_point(|(_, put_back)| {
            now.duration_since(*put_back) >= IDLE_MEMORY_RELEASED_AFTER
        });
        self.blocks.drain(..idle).map(|(block, _)| block).collect()
    }

    /// How long until the oldest block has been idle long enough to free; none with no block.
    fn next_release_in(&self, now: Instant) -> Option<Duration> {
        self.blocks.first().map(|(_, put_back)| {
            (*put_back + IDLE_MEMORY_RELEASED_AFTER).saturating_duration_since(now)
        })
    }

    fn bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|(block, _)| block.len() * size_of::<Block>())
            .sum()
    }
}

fn spare_memory() -> MutexGuard<'static, SpareMemory> {
    // A list of blocks is consistent at every step, so a panic elsewhere does not spoil it.
    SPARE_MEMORY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes the hashing threads hold between runs, for tests and measurements.
#[doc(hidden)]
pub fn spare_memory_bytes() -> usize {
    spare_memory().bytes()
}

/// How many times a hashing thread woke up with no work, for tests and measurements.
#[doc(hidden)]
pub fn idle_wake_ups() -> u64 {
    IDLE_WAKE_UPS.load(Ordering::Relaxed)
}

fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}

fn start_hashing_threads() -> mpsc::Sender<Work> {
    let (sender, receiver) = mpsc::channel::<Work>();
    let receiver = std::sync::Arc::new(Mutex::new(receiver));
    for number in 0..hashing_threads() {
        let receiver = receiver.clone();
        let queue = sender.clone();
        std::thread::Builder::new()
            .name(format!("twofold-argon2-{number}"))
            .spawn(move || {
                loop {
                    // Holding the lock only while waiting: the next idle thread takes the next job.
                    let work = match receiver.lock() {
                        // Only a waiting thread frees idle blocks, so it waits until the oldest is
                        // due; with none spare it waits for work alone, and an idle server's
                        // hashing threads do not wake at all. A block put back meanwhile sends
                        // `BlockPutBack`, which ends such a wait.
                        Ok(receiver) => {
                            // Its own statement: the pool's lock must not be held while waiting.
                            let release_in = spare_memory().next_release_in(Instant::now());
                            match release_in {
                                Some(release_in) => receiver.recv_timeout(release_in),
                                None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
                            }
                        }
                        Err(_) => return,
                    };
                    match work {
                        Ok(Work::BlockPutBack) => {}
                        Ok(Work::Run(job)) => {
                            let mut memory = spare_memory().take();
                            let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
                            // A panicking run loses its answer (the caller sees an internal
                            // error) and its block, not the thread.
                            let completed = std::panic::catch_unwind(run).is_ok();
                            // Runs every few seconds never let the wait time out, and a block
                            // left over from a burst must not stay for them.
                            let (idle, first_spare) = {
                                let mut spare = spare_memory();
                                let now = Instant::now();
                                let none_spare = spare.blocks.is_empty();
                                if completed {
                                    spare.put_back(memory, now);
                                }
                                let first_spare = none_spare && !spare.blocks.is_empty();
                                (spare.take_idle(now), first_spare)
                            };
                            drop(idle);
                            // Only a wait begun with nothing spare lacks a deadline: with blocks
                            // spare, the waiter wakes for the oldest and looks again then.
                            if first_spare {
                                // The queue lives as long as the process; a failed send would
                                // only leave the block until the next run.
                                let _ = queue.send(Work::BlockPutBack);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            IDLE_WAKE_UPS.fetch_add(1, Ordering::Relaxed);
                            let idle = spare_memory().take_idle(Instant::now());
                            drop(idle);
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("start a password hashing thread");
    }
    sender
}

/// Runs `work` on a hashing thread and waits for its answer.
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, DomainError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |memory| {
        #[cfg(test)]
        let _running = tests::Running::enter();
        let _ = answer.send(work(memory));
    });
    HASHING_QUEUE
        .send(Work::Run(job))
        .map_err(|_| DomainError::Internal("password hashing threads stopped".into()))?;
    answered
        .await
        .map_err(|_| DomainError::Internal("password hashing run failed".into()))
}

/// Computes the digest into `out`, growing the thread's memory when these parameters need more
/// (an imported hash with a larger `m`); it is kept for the next run rather than freed.
fn run_argon2(
    argon2: &Argon2<'_>,
    params: &Params,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::new());
    }
    let outcome = argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..needed]);
    // Keep only what new hashes need, so one large imported hash does not stay resident.
    let usual = new_hash_params().block_count();
    if memory.len() > usual {
        memory.truncate(usual);
        memory.shrink_to_fit();
    }
    outcome
}

fn internal(what: &str, error: impl std::fmt::Display) -> DomainError {
    DomainError::Internal(format!("{what}: {error}"))
}

/// A new PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<digest>`).
fn hash_with(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, DomainError> {
    let params = new_hash_params();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt: [u8; SALT_LENGTH] = rand::random();
    let mut digest = [0u8; OUTPUT_LENGTH];
    run_argon2(&argon2, &params, memory, password, &salt, &mut digest)
        .map_err(|error| internal("password hashing failed", error))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|error| internal("password hash parameters", error))?,
        salt: Some(Salt::new(&salt).map_err(|error| internal("password salt", error))?),
        hash: Some(Output::new(&digest).map_err(|error| internal("password digest", error))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string, with the parameters the string names; the
/// digests are compared in constant time (`Output`'s equality).
fn verify_with(
    memory: &mut Vec<Block>,
    password: &[u8],
    stored: &str,
) -> Result<bool, DomainError> {
    let unreadable =
        |error: &dyn std::fmt::Display| internal("stored password hash unreadable", error);
    let phc = PasswordHash::new(stored).map_err(|error| unreadable(&error))?;
    let algorithm =
        Algorithm::try_from(phc.algorithm.as_str()).map_err(|error| unreadable(&error))?;
    let version = match phc.version {
        Some(version) => Version::try_from(version).map_err(|error| unreadable(&error))?,
        None => Version::V0x10,
    };
    let params = Params::try_from(&phc).map_err(|error| unreadable(&error))?;
    if params.m_cost() > MAX_STORED_MEMORY_KIB
        || params.t_cost() > MAX_STORED_ITERATIONS
        || params.p_cost() > MAX_STORED_LANES
    {
        return Err(unreadable(&"parameters beyond the accepted maximum"));
    }
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Err(unreadable(&"no salt or digest"));
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut digest = vec![0u8; expected.len()];
    run_argon2(&argon2, &params, memory, password, salt, &mut digest)
        .map_err(|error| internal("password verification failed", error))?;
    let computed = Output::new(&digest).map_err(|error| internal("password digest", error))?;
    Ok(computed == *expected)
}

pub fn check_policy(field: &str, password: &str, min_length: usize) -> Result<(), DomainError> {
    let length = password.chars().count();
    if length < min_length {
        return Err(DomainError::PasswordPolicy(FieldViolation::new(
            field,
            format!("must be at least {min_length} characters long"),
        )));
    }
    if length > MAX_PASSWORD_LENGTH {
        return Err(DomainError::PasswordPolicy(FieldViolation::new(
            field,
            format!("must be at most {MAX_PASSWORD_LENGTH} characters long"),
        )));
    }
    Ok(())
}

pub async fn hash(password: String) -> Result<String, DomainError> {
    on_hashing_thread(move |memory| hash_with(memory, password.as_bytes())).await?
}

/// Verifies in constant time. When `stored` is `None` a hash is still computed so unknown
/// identifiers take as long as known ones.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, DomainError> {
    on_hashing_thread(move |memory| match stored {
        Some(stored) => verify_with(memory, password.as_bytes(), &stored),
        None => hash_with(memory, password.as_bytes()).map(|_| false),
    })
    .await?
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Counts argon2 runs in progress, to see the thread limit hold.
    pub(super) struct Running;

    impl Running {
        pub(super) fn enter() -> Self {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            Running
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn spare_blocks_are_reused_newest_first_and_freed_once_idle_long_enough() {
        use super::{Block, IDLE_MEMORY_RELEASED_AFTER, SpareMemory};
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let step = IDLE_MEMORY_RELEASED_AFTER / 5;
        let block = |blocks: usize| vec![Block::new(); blocks];
        let mut spare = SpareMemory::new();
        spare.put_back(block(1), start);
        spare.put_back(block(2), start + step);
        spare.put_back(Vec::new(), start + 2 * step);
        assert_eq!(
            spare.bytes(),
            3 * size_of::<Block>(),
            "an empty block is not kept"
        );

        let idle = spare.take_idle(start + IDLE_MEMORY_RELEASED_AFTER - Duration::from_millis(1));
        assert!(idle.is_empty());
        assert_eq!(
            spare.bytes(),
            3 * size_of::<Block>(),
            "nothing idle long enough yet"
        );
        let idle = spare.take_idle(start + IDLE_MEMORY_RELEASED_AFTER);
        assert_eq!(idle.len(), 1);
        assert_eq!(
            spare.bytes(),
            2 * size_of::<Block>(),
            "only the older block went"
        );

        assert_eq!(
            spare.next_release_in(start + 2 * step),
            Some(IDLE_MEMORY_RELEASED_AFTER - step),
            "the oldest block left was put back one step after the start"
        );
        assert_eq!(spare.take().len(), 2);
        assert_eq!(
            spare.take().len(),
            0,
            "nothing left: a run starts with an empty block"
        );
        assert_eq!(
            spare.next_release_in(start),
            None,
            "nothing to free, no deadline"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_hashes_runs_at_most_one_per_hashing_thread_and_all_finish() {
        let burst = super::hashing_threads() * 4;
        let hashes: Vec<_> = (0..burst)
            .map(|n| tokio::spawn(super::hash(format!("password number {n}"))))
            .collect();
        for hash in hashes {
            assert!(hash.await.unwrap().unwrap().starts_with("$argon2id$"));
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(peak >= 1, "no hash ran");
        assert!(
            peak <= super::hashing_threads(),
            "{peak} argon2 runs at once on {} threads",
            super::hashing_threads()
        );
    }

    #[tokio::test]
    async fn right_password_verifies_and_wrong_one_does_not() {
        let stored = super::hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            super::verify("correct horse battery".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !super::verify("wrong horse battery".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(!super::verify("anything".into(), None).await.unwrap());
    }

    /// Hashes made by the argon2 crate's own hasher (as earlier Twofold versions stored them, with
    /// other parameters too) verify here, and ours verify there: the PHC strings are the standard.
    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crate_in_both_directions() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let standard = |params: argon2::Params| {
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        };
        for params in [
            argon2::Params::new(19 * 1024, 2, 1, None).unwrap(),
            // Bigger memory, more lanes, a longer digest: the run reads them from the string.
            argon2::Params::new(32 * 1024, 3, 2, Some(48)).unwrap(),
            argon2::Params::new(8 * 1024, 1, 1, None).unwrap(),
        ] {
            let theirs = standard(params)
                .hash_password(b"imported password")
                .unwrap()
                .to_string();
            assert!(
                super::verify("imported password".into(), Some(theirs.clone()))
                    .await
                    .unwrap(),
                "{theirs} did not verify"
            );
            assert!(
                !super::verify("imported passwore".into(), Some(theirs))
                    .await
                    .unwrap()
            );
        }
        let ours = super::hash("made by twofold".into()).await.unwrap();
        let parsed = argon2::PasswordHash::new(&ours).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"made by twofold", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"made by twofolD", &parsed)
                .is_err()
        );
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
    }

    #[tokio::test]
    async fn a_changed_digest_fails_and_an_unreadable_hash_is_an_internal_error() {
        let stored = super::hash("correct horse battery".into()).await.unwrap();
        let (rest, digest) = stored.rsplit_once('$').unwrap();
        let flipped = if digest.starts_with('A') { "B" } else { "A" };
        let changed = format!("{rest}${flipped}{}", &digest[1..]);
        assert!(
            !super::verify("correct horse battery".into(), Some(changed))
                .await
                .unwrap()
        );
        let error = super::verify("x".into(), Some("not a hash".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, super::DomainError::Internal(_)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_stored_hash_with_outsized_parameters_is_unreadable_not_run() {
        let stored = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        let error = super::verify("x".into(), Some(stored.into()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, super::DomainError::Internal(_)),
            "{error:?}"
        );
        let stored = "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(
            super::verify("x".into(), Some(stored.into()))
                .await
                .is_err()
        );
    }

    #[test]
    fn policy_names_the_field() {
        let error = super::check_policy("password", "short", 8).unwrap_err();
        assert!(matches!(error, super::DomainError::PasswordPolicy(v) if v.field == "password"));
    }
}
