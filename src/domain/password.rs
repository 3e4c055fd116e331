//! Password hashing with argon2id (OWASP parameters: m=19 MiB, t=2, p=1).
//! Hashing is CPU-bound for tens of milliseconds, so callers run it on the blocking pool.
use super::error::{DomainError, FieldViolation};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use std::sync::LazyLock;
use tokio::sync::Semaphore;

/// At most one argon2 run per core. Each run holds 19 MiB; unbounded, a burst of logins would
/// spread over hundreds of blocking threads and keep gigabytes resident, for no more throughput
/// than the cores give. Extra callers wait their turn on the async side.
static HASHING_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(hashing_slots()));

fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn with_hashing_slot<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DomainError> {
    let _slot = HASHING_SLOTS
        .acquire()
        .await
        .map_err(|_| DomainError::Internal("password hashing slots closed".into()))?;
    tokio::task::spawn_blocking(move || {
        #[cfg(test)]
        let _running = tests::Running::enter();
        work()
    })
    .await
    .map_err(|error| DomainError::Internal(format!("password hashing task failed: {error}")))
}

pub const MIN_PASSWORD_LENGTH: usize = 8;
/// Long enough for passphrases, short enough that hashing cannot be used to burn CPU.
pub const MAX_PASSWORD_LENGTH: usize = 1024;

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
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
    with_hashing_slot(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| DomainError::Internal(format!("password hashing failed: {error}")))
    })
    .await?
}

/// Verifies in constant time (argon2 compares digests in constant time). When `stored` is
/// `None` a dummy hash is still computed so unknown identifiers take as long as known ones.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, DomainError> {
    with_hashing_slot(move || {
        let Some(stored) = stored else {
            let _ = hasher().hash_password(password.as_bytes());
            return Ok(false);
        };
        let parsed = stored.parse::<PasswordHash>().map_err(|error| {
            DomainError::Internal(format!("stored password hash unreadable: {error}"))
        })?;
        Ok(hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Counts argon2 runs in progress, to see the slot limit hold.
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_hashes_runs_at_most_one_per_core_and_all_finish() {
        let burst = super::hashing_slots() * 4;
        let hashes: Vec<_> = (0..burst)
            .map(|n| tokio::spawn(super::hash(format!("password number {n}"))))
            .collect();
        for hash in hashes {
            assert!(hash.await.unwrap().unwrap().starts_with("$argon2id$"));
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(peak >= 1, "no hash ran");
        assert!(
            peak <= super::hashing_slots(),
            "{peak} argon2 runs at once on {} slots",
            super::hashing_slots()
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

    #[test]
    fn policy_names_the_field() {
        let error = super::check_policy("password", "short", 8).unwrap_err();
        assert!(matches!(error, super::DomainError::PasswordPolicy(v) if v.field == "password"));
    }
}
