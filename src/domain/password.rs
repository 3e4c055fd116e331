//! Password hashing with argon2id (OWASP parameters: m=19 MiB, t=2, p=1).
//! Hashing is CPU-bound for tens of milliseconds, so callers run it on the blocking pool.
use super::error::{DomainError, FieldViolation};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

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
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| DomainError::Internal(format!("password hashing failed: {error}")))
    })
    .await
    .map_err(|error| DomainError::Internal(format!("password hashing task failed: {error}")))?
}

/// Verifies in constant time (argon2 compares digests in constant time). When `stored` is
/// `None` a dummy hash is still computed so unknown identifiers take as long as known ones.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, DomainError> {
    tokio::task::spawn_blocking(move || {
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
    .await
    .map_err(|error| DomainError::Internal(format!("password verification task failed: {error}")))?
}

#[cfg(test)]
mod tests {
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
