//! One conformance suite per store trait, run against every backend: identities, sessions, the
//! failure budget and the outbox against Postgres, a SQLite file and in-memory SQLite; flows,
//! code challenges and rate limits against Redis and process memory.
//!
//! Postgres and Redis are real servers: `eval "$(scripts/services.sh)"` first. Without them the
//! Postgres and Redis tests fail (they never skip).
mod support;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use twofold::domain::aal::{Aal, Channel};
use twofold::domain::identity::{
    CredentialKind, Identifier, Identity, IdentityState, VerifiableAddress,
};
use twofold::domain::session::{AuthenticationMethod, MethodKind, Session};
use twofold::store::{
    FlowStore, IdentityStore, SessionStore, SessionUpgrade, StoreError, Upgraded,
};
use uuid::Uuid;

/// Both SQL backends implement both traits on one handle.
trait SqlStore: IdentityStore + SessionStore + twofold::store::codes::Outbox + Clone {}
impl<T: IdentityStore + SessionStore + twofold::store::codes::Outbox + Clone> SqlStore for T {}

/// Stores keep microseconds (Postgres's precision), so test timestamps are cut to that.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).expect("now is in range")
}

fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

fn unique_phone() -> String {
    let digits: String = Uuid::new_v4()
        .as_u128()
        .to_string()
        .chars()
        .take(9)
        .collect();
    format!("+1555{digits}")
}

/// An identity with an email (password and code identifier) and a phone (code identifier),
/// the phone already verified.
fn identity_with(email: &str, phone: &str) -> Identity {
    let at = now();
    Identity {
        id: Uuid::now_v7(),
        schema_id: "default".into(),
        traits: json!({ "email": email, "phone": phone, "name": { "first": "Ada" } }),
        state: IdentityState::Active,
        identifiers: vec![
            Identifier {
                kind: CredentialKind::Password,
                value: email.into(),
                trait_name: "email".into(),
                channel: None,
            },
            Identifier {
                kind: CredentialKind::Code,
                value: email.into(),
                trait_name: "email".into(),
                channel: Some(Channel::Email),
            },
            Identifier {
                kind: CredentialKind::Code,
                value: phone.into(),
                trait_name: "phone".into(),
                channel: Some(Channel::Sms),
            },
        ],
        verifiable_addresses: vec![
            VerifiableAddress {
                id: Uuid::new_v4(),
                value: email.into(),
                channel: Channel::Email,
                trait_name: "email".into(),
                verified: false,
                verified_at: None,
            },
            VerifiableAddress {
                id: Uuid::new_v4(),
                value: phone.into(),
                channel: Channel::Sms,
                trait_name: "phone".into(),
                verified: true,
                verified_at: Some(at - ChronoDuration::days(1)),
            },
        ],
        has_password: false,
        created_at: at,
        updated_at: at,
    }
}

fn new_identity() -> Identity {
    identity_with(&format!("{}@example.com", unique()), &unique_phone())
}

fn email_of(identity: &Identity) -> String {
    identity.traits["email"]
        .as_str()
        .expect("email trait")
        .to_owned()
}

fn phone_of(identity: &Identity) -> String {
    identity.traits["phone"]
        .as_str()
        .expect("phone trait")
        .to_owned()
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn token_hash() -> Vec<u8> {
    [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat()
}

fn session_for(identity_id: Uuid, issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Session {
    Session {
        id: Uuid::now_v7(),
        identity_id,
        token_hash: token_hash(),
        aal: Aal::Aal1,
        methods: vec![AuthenticationMethod {
            method: MethodKind::Password,
            aal: Aal::Aal1,
            completed_at: issued_at,
            channel: None,
            address_hash: None,
        }],
        issued_at,
        expires_at,
        authenticated_at: issued_at,
        revoked_at: None,
    }
}

fn ids(identities: &[Identity]) -> Vec<Uuid> {
    identities.iter().map(|identity| identity.id).collect()
}

fn session_ids(sessions: &[Session]) -> Vec<Uuid> {
    sessions.iter().map(|session| session.id).collect()
}

/// The identity/session suite. Each case gets a fresh, empty store.
mod sql_cases {
    use super::*;

    pub async fn round_trip<S: SqlStore>(store: &S) {
        let with_password = new_identity();
        store
            .insert_identity(&with_password, Some(HASH))
            .await
            .expect("insert");
        let stored = store
            .get_identity(with_password.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            stored,
            Identity {
                has_password: true,
                ..with_password.clone()
            }
        );

        let without_password = new_identity();
        store
            .insert_identity(&without_password, None)
            .await
            .expect("insert");
        let stored = store
            .get_identity(without_password.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored, without_password);

        assert!(
            store
                .get_identity(Uuid::now_v7())
                .await
                .expect("get")
                .is_none()
        );
    }

    pub async fn duplicate_identifier_writes_nothing<S: SqlStore>(store: &S) {
        let first = new_identity();
        store
            .insert_identity(&first, Some(HASH))
            .await
            .expect("insert first");

        // Same phone, different email: the phone's code identifier collides.
        let same_phone = identity_with(&format!("{}@example.com", unique()), &phone_of(&first));
        let error = store
            .insert_identity(&same_phone, Some(HASH))
            .await
            .expect_err("duplicate phone");
        match error {
            StoreError::IdentifierTaken { kind, trait_name } => {
                assert_eq!((kind, trait_name.as_str()), ("code", "phone"));
            }
            other => panic!("expected IdentifierTaken, got {other:?}"),
        }
        assert!(
            store
                .get_identity(same_phone.id)
                .await
                .expect("get")
                .is_none()
        );
        let by_new_email = store
            .find_by_identifier(CredentialKind::Password, &email_of(&same_phone))
            .await
            .expect("find");
        assert!(
            by_new_email.is_none(),
            "identifiers of the rejected identity were written"
        );
        assert!(
            store
                .password_hash(same_phone.id)
                .await
                .expect("hash")
                .is_none()
        );

        // Same email: the first identifier (password, email) collides.
        let same_email = identity_with(&email_of(&first), &unique_phone());
        match store.insert_identity(&same_email, None).await {
            Err(StoreError::IdentifierTaken { kind, trait_name }) => {
                assert_eq!((kind, trait_name.as_str()), ("password", "email"));
            }
            other => panic!("expected IdentifierTaken, got {other:?}"),
        }
        assert!(
            store
                .get_identity(same_email.id)
                .await
                .expect("get")
                .is_none()
        );
        assert_eq!(
            store.list_identities(None, 10).await.expect("list").len(),
            1
        );
    }

    pub async fn find_by_identifier_per_kind<S: SqlStore>(store: &S) {
        let identity = new_identity();
        let other = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        store
            .insert_identity(&other, None)
            .await
            .expect("insert other");
        let (email, phone) = (email_of(&identity), phone_of(&identity));

        for (kind, value) in [
            (CredentialKind::Password, &email),
            (CredentialKind::Code, &email),
            (CredentialKind::Code, &phone),
        ] {
            let found = store.find_by_identifier(kind, value).await.expect("find");
            assert_eq!(
                found.map(|found| found.id),
                Some(identity.id),
                "{kind:?} {value}"
            );
        }
        // The phone is no password identifier; identifiers are exact, normalised values.
        for (kind, value) in [
            (CredentialKind::Password, phone.clone()),
            (CredentialKind::Password, email.to_uppercase()),
            (CredentialKind::Code, "nobody@example.com".to_owned()),
        ] {
            let found = store.find_by_identifier(kind, &value).await.expect("find");
            assert!(found.is_none(), "{kind:?} {value} found something");
        }
    }

    pub async fn password_hash<S: SqlStore>(store: &S) {
        let with_password = new_identity();
        let without_password = new_identity();
        store
            .insert_identity(&with_password, Some(HASH))
            .await
            .expect("insert");
        store
            .insert_identity(&without_password, None)
            .await
            .expect("insert");
        assert_eq!(
            store
                .password_hash(with_password.id)
                .await
                .expect("hash")
                .as_deref(),
            Some(HASH)
        );
        assert_eq!(
            store
                .password_hash(without_password.id)
                .await
                .expect("hash"),
            None
        );
        assert_eq!(
            store.password_hash(Uuid::now_v7()).await.expect("hash"),
            None
        );
    }

    pub async fn list_pagination<S: SqlStore>(store: &S) {
        let mut created = Vec::new();
        for _ in 0..5 {
            let identity = new_identity();
            store
                .insert_identity(&identity, None)
                .await
                .expect("insert");
            created.push(identity);
        }
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_identities(after, 2).await.expect("list");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|identity| identity.id);
            pages.push(ids(&page));
        }
        let expected: Vec<Vec<Uuid>> = ids(&created).chunks(2).map(<[Uuid]>::to_vec).collect();
        assert_eq!(pages, expected);
        // Pages carry complete identities, each with its own identifiers and addresses.
        let full_page = store.list_identities(None, 10).await.expect("list");
        assert_eq!(full_page, created);
    }

    pub async fn update_replaces_identifiers_and_keeps_verification<S: SqlStore>(store: &S) {
        let original = new_identity();
        store
            .insert_identity(&original, Some(HASH))
            .await
            .expect("insert");
        let old_email = email_of(&original);
        let new_email = format!("{}@example.com", unique());
        let phone = phone_of(&original);

        let mut changed = identity_with(&new_email, &phone);
        changed.id = original.id;
        changed.created_at = original.created_at;
        changed.updated_at = original.updated_at + ChronoDuration::seconds(5);
        changed.traits["name"]["first"] = json!("Grace");
        changed.state = IdentityState::Inactive;
        // The caller passes the phone as unverified; the stored verification survives.
        for address in &mut changed.verifiable_addresses {
            address.verified = false;
            address.verified_at = None;
        }
        assert!(store.update_identity(&changed).await.expect("update"));

        let stored = store
            .get_identity(original.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored.traits, changed.traits);
        assert_eq!(stored.state, IdentityState::Inactive);
        assert_eq!(stored.updated_at, changed.updated_at);
        assert_eq!(stored.created_at, original.created_at);
        assert_eq!(stored.identifiers, changed.identifiers);
        assert!(stored.has_password, "update must not touch credentials");

        let stored_phone = &stored.verifiable_addresses[1];
        let original_phone = &original.verifiable_addresses[1];
        assert_eq!(stored_phone.value, phone);
        assert!(stored_phone.verified);
        assert_eq!(stored_phone.verified_at, original_phone.verified_at);
        assert_eq!(
            stored_phone.id, original_phone.id,
            "a remaining address keeps its id"
        );
        let stored_email = &stored.verifiable_addresses[0];
        assert_eq!(
            (stored_email.value.as_str(), stored_email.verified),
            (new_email.as_str(), false)
        );
        assert_eq!(stored.verifiable_addresses.len(), 2);

        for kind in [CredentialKind::Password, CredentialKind::Code] {
            let by_old = store
                .find_by_identifier(kind, &old_email)
                .await
                .expect("find");
            assert!(
                by_old.is_none(),
                "old {kind:?} identifier still finds the identity"
            );
            let by_new = store
                .find_by_identifier(kind, &new_email)
                .await
                .expect("find");
            assert_eq!(by_new.map(|found| found.id), Some(original.id));
        }

        // A given verification is kept too.
        let mut verify_email = stored.clone();
        let verified_at = now();
        verify_email.verifiable_addresses[0].verified = true;
        verify_email.verifiable_addresses[0].verified_at = Some(verified_at);
        assert!(store.update_identity(&verify_email).await.expect("update"));
        let stored = store
            .get_identity(original.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            stored.verifiable_addresses[0].verified_at,
            Some(verified_at)
        );

        let mut unknown = new_identity();
        unknown.id = Uuid::now_v7();
        assert!(
            !store
                .update_identity(&unknown)
                .await
                .expect("update unknown")
        );
        assert!(store.get_identity(unknown.id).await.expect("get").is_none());
    }

    pub async fn update_with_taken_identifier_changes_nothing<S: SqlStore>(store: &S) {
        let first = new_identity();
        let second = new_identity();
        store.insert_identity(&first, None).await.expect("insert");
        store.insert_identity(&second, None).await.expect("insert");

        let mut stealing = identity_with(&email_of(&second), &unique_phone());
        stealing.id = first.id;
        match store.update_identity(&stealing).await {
            Err(StoreError::IdentifierTaken { kind, trait_name }) => {
                assert_eq!((kind, trait_name.as_str()), ("password", "email"));
            }
            other => panic!("expected IdentifierTaken, got {other:?}"),
        }
        let stored = store
            .get_identity(first.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored, first);
    }

    pub async fn mark_address_verified<S: SqlStore>(store: &S) {
        let identity = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let email = email_of(&identity);
        let at = now();
        assert!(
            store
                .mark_address_verified(identity.id, &email, at)
                .await
                .expect("mark")
        );
        let stored = store
            .get_identity(identity.id)
            .await
            .expect("get")
            .expect("exists");
        let address = &stored.verifiable_addresses[0];
        assert_eq!((address.verified, address.verified_at), (true, Some(at)));
        // The phone was verified already and stays as it was.
        assert_eq!(
            stored.verifiable_addresses[1],
            identity.verifiable_addresses[1]
        );

        assert!(
            !store
                .mark_address_verified(identity.id, "nobody@example.com", at)
                .await
                .expect("mark")
        );
        assert!(
            !store
                .mark_address_verified(Uuid::now_v7(), &email, at)
                .await
                .expect("mark")
        );
    }

    pub async fn delete_cascades<S: SqlStore>(store: &S) {
        let identity = new_identity();
        store
            .insert_identity(&identity, Some(HASH))
            .await
            .expect("insert");
        let at = now();
        let session = session_for(identity.id, at, at + ChronoDuration::hours(1));
        store
            .insert_session(&session)
            .await
            .expect("insert session");

        assert!(store.delete_identity(identity.id).await.expect("delete"));
        assert!(
            store
                .get_identity(identity.id)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            store
                .password_hash(identity.id)
                .await
                .expect("hash")
                .is_none()
        );
        assert!(
            store
                .get_session(session.id)
                .await
                .expect("get session")
                .is_none()
        );
        assert!(
            store
                .find_by_token_hash(&session.token_hash)
                .await
                .expect("find")
                .is_none()
        );
        assert!(
            !store
                .delete_identity(identity.id)
                .await
                .expect("delete again")
        );

        // Its identifiers are free again.
        let mut again = identity.clone();
        again.id = Uuid::now_v7();
        store
            .insert_identity(&again, None)
            .await
            .expect("reuse identifiers");
    }

    pub async fn sessions<S: SqlStore>(store: &S) {
        let identity = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let hour = ChronoDuration::hours(1);
        let oldest = session_for(identity.id, now - hour * 3, now + hour);
        let expired = session_for(identity.id, now - hour * 2, now - hour);
        let newest = session_for(identity.id, now - hour, now + hour);
        for session in [&oldest, &expired, &newest] {
            store.insert_session(session).await.expect("insert session");
        }

        let found = store
            .find_by_token_hash(&oldest.token_hash)
            .await
            .expect("find");
        assert_eq!(found.as_ref(), Some(&oldest));
        assert_eq!(
            store.get_session(oldest.id).await.expect("get").as_ref(),
            Some(&oldest)
        );
        assert!(
            store
                .get_session(Uuid::now_v7())
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            store
                .find_by_token_hash(&token_hash())
                .await
                .expect("find")
                .is_none()
        );

        let active = store
            .list_sessions(identity.id, false, now)
            .await
            .expect("list");
        assert_eq!(session_ids(&active), vec![newest.id, oldest.id]);
        let all = store
            .list_sessions(identity.id, true, now)
            .await
            .expect("list");
        assert_eq!(session_ids(&all), vec![newest.id, expired.id, oldest.id]);
        assert_eq!(all[0], newest);

        assert!(store.revoke_session(oldest.id, now).await.expect("revoke"));
        assert!(
            !store
                .revoke_session(oldest.id, now)
                .await
                .expect("revoke again")
        );
        assert!(
            !store
                .revoke_session(Uuid::now_v7(), now)
                .await
                .expect("revoke unknown")
        );
        let revoked = store
            .get_session(oldest.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(revoked.revoked_at, Some(now));
        let found = store
            .find_by_token_hash(&oldest.token_hash)
            .await
            .expect("find");
        assert_eq!(
            found.and_then(|session| session.revoked_at),
            Some(now),
            "revoked sessions stay findable"
        );
        let active = store
            .list_sessions(identity.id, false, now)
            .await
            .expect("list");
        assert_eq!(session_ids(&active), vec![newest.id]);

        // The expired but unrevoked session counts; the revoked one does not.
        let later = now + ChronoDuration::seconds(1);
        assert_eq!(
            store
                .revoke_identity_sessions(identity.id, later)
                .await
                .expect("revoke all"),
            2
        );
        assert_eq!(
            store
                .revoke_identity_sessions(identity.id, later)
                .await
                .expect("revoke all"),
            0
        );
        assert!(
            store
                .list_sessions(identity.id, false, now)
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(
            store
                .list_sessions(identity.id, true, now)
                .await
                .expect("list")
                .len(),
            3
        );
        assert_eq!(
            store
                .list_sessions(Uuid::now_v7(), true, now)
                .await
                .expect("list")
                .len(),
            0
        );
    }

    /// An upgrade earned with a code sent to the identity's (unverified) e-mail address.
    pub fn upgrade_to_aal2(identity: &Identity, at: DateTime<Utc>) -> SessionUpgrade {
        SessionUpgrade {
            identity_id: identity.id,
            verified_address: Some(email_of(identity)),
            audit: vec![
                twofold::store::codes::AuditEvent {
                    id: Uuid::now_v7(),
                    event: "code.verified".into(),
                    identity_id: Some(identity.id),
                    flow_id: Some(Uuid::now_v7()),
                    address_hash: Some("cd".repeat(32)),
                    client_ip: None,
                    occurred_at: at,
                },
                twofold::store::codes::AuditEvent {
                    id: Uuid::now_v7(),
                    event: "session.aal_changed".into(),
                    identity_id: Some(identity.id),
                    flow_id: None,
                    address_hash: Some("cd".repeat(32)),
                    client_ip: None,
                    occurred_at: at,
                },
            ],
            new_token_hash: token_hash(),
            aal: Aal::Aal2,
            methods: vec![
                AuthenticationMethod {
                    method: MethodKind::Password,
                    aal: Aal::Aal1,
                    completed_at: at,
                    channel: None,
                    address_hash: None,
                },
                AuthenticationMethod {
                    method: MethodKind::Code,
                    aal: Aal::Aal2,
                    completed_at: at,
                    channel: Some(Channel::Sms),
                    address_hash: Some("ab".repeat(32)),
                },
            ],
            authenticated_at: at,
        }
    }

    /// A new identity with an hour-long session, both stored.
    pub async fn identity_with_session<S: SqlStore>(store: &S) -> (Identity, Session) {
        let identity = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        store
            .insert_session(&session)
            .await
            .expect("insert session");
        (identity, session)
    }

    pub async fn upgrade_session<S: SqlStore>(store: &S) {
        let (identity, session) = identity_with_session(store).await;
        let now = session.issued_at;
        let upgrade = upgrade_to_aal2(&identity, now + ChronoDuration::seconds(30));

        assert!(
            store
                .upgrade_session(session.id, &token_hash(), &upgrade)
                .await
                .expect("wrong hash")
                .is_none()
        );
        assert!(
            store
                .upgrade_session(Uuid::now_v7(), &session.token_hash, &upgrade)
                .await
                .expect("unknown")
                .is_none()
        );
        assert_eq!(
            store.get_session(session.id).await.expect("get").as_ref(),
            Some(&session)
        );
        let unaudited = SessionUpgrade {
            audit: vec![],
            ..upgrade.clone()
        };
        assert!(matches!(
            store
                .upgrade_session(session.id, &session.token_hash, &unaudited)
                .await,
            Err(StoreError::Internal(_))
        ));
        // A failed guard writes nothing else either, nor does an upgrade without audit events.
        assert_eq!(
            store.audit_events(identity.id).await.expect("audit"),
            vec![]
        );
        assert_eq!(
            store.get_identity(identity.id).await.expect("get"),
            Some(identity.clone())
        );

        let done = store
            .upgrade_session(session.id, &session.token_hash, &upgrade)
            .await
            .expect("upgrade")
            .expect("upgraded");
        // The address and the audit event were written with it.
        assert_eq!(
            store.audit_events(identity.id).await.expect("audit"),
            upgrade.audit.clone()
        );
        let stored = store
            .get_identity(identity.id)
            .await
            .expect("get")
            .expect("exists");
        let email = &stored.verifiable_addresses[0];
        assert_eq!(
            (email.verified, email.verified_at),
            (true, Some(upgrade.authenticated_at))
        );
        assert_eq!(
            stored.verifiable_addresses[1], identity.verifiable_addresses[1],
            "the other address is untouched"
        );
        assert!(
            store
                .find_by_token_hash(&session.token_hash)
                .await
                .expect("find")
                .is_none()
        );
        let upgraded = store
            .find_by_token_hash(&upgrade.new_token_hash)
            .await
            .expect("find")
            .expect("exists");
        let expected = Session {
            token_hash: upgrade.new_token_hash.clone(),
            aal: Aal::Aal2,
            methods: upgrade.methods.clone(),
            authenticated_at: upgrade.authenticated_at,
            ..session.clone()
        };
        assert_eq!(upgraded, expected);
        // The answer it gave is what a read right after it gives.
        assert_eq!(
            done,
            Upgraded {
                session: expected,
                identity: Some(stored)
            }
        );
        // The old token cannot upgrade again.
        let again = upgrade_to_aal2(&identity, now);
        assert!(
            store
                .upgrade_session(session.id, &session.token_hash, &again)
                .await
                .expect("replay")
                .is_none()
        );
        // Nor can the same upgrade be sent again (a retry after a lost answer): its audit events
        // are already on record, and it must not try to write them twice.
        assert!(
            store
                .upgrade_session(session.id, &session.token_hash, &upgrade)
                .await
                .expect("resent")
                .is_none()
        );

        assert_eq!(
            store.audit_events(identity.id).await.expect("audit").len(),
            upgrade.audit.len(),
            "a replay is not audited"
        );

        // A revoked session cannot be upgraded, and nothing is written for it.
        let other = new_identity();
        store.insert_identity(&other, None).await.expect("insert");
        let revoked = session_for(other.id, now, now + ChronoDuration::hours(1));
        store
            .insert_session(&revoked)
            .await
            .expect("insert session");
        assert!(store.revoke_session(revoked.id, now).await.expect("revoke"));
        // Even one that would leave the token as it is, so the token alone cannot tell whether
        // the upgrade happened.
        let on_revoked = SessionUpgrade {
            new_token_hash: revoked.token_hash.clone(),
            ..upgrade_to_aal2(&other, now)
        };
        assert!(
            store
                .upgrade_session(revoked.id, &revoked.token_hash, &on_revoked)
                .await
                .expect("revoked")
                .is_none()
        );
        assert_eq!(store.audit_events(other.id).await.expect("audit"), vec![]);
        assert_eq!(
            store.get_identity(other.id).await.expect("get"),
            Some(other.clone()),
            "no address verified"
        );
    }

    pub async fn session_with_identity<S: SqlStore>(store: &S) {
        let identity = new_identity();
        store
            .insert_identity(&identity, Some(HASH))
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        store
            .insert_session(&session)
            .await
            .expect("insert session");
        let stored_identity = store
            .get_identity(identity.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            store
                .find_with_identity(&session.token_hash)
                .await
                .expect("find"),
            Some((session.clone(), stored_identity.clone()))
        );
        assert!(stored_identity.has_password);
        assert_eq!(
            store.find_with_identity(&token_hash()).await.expect("find"),
            None
        );
        // Inactive sessions are found too; deciding what counts as active is the caller's job.
        assert!(store.revoke_session(session.id, now).await.expect("revoke"));
        let (revoked, _) = store
            .find_with_identity(&session.token_hash)
            .await
            .expect("find")
            .expect("still there");
        assert_eq!(revoked.revoked_at, Some(now));
        assert!(store.delete_identity(identity.id).await.expect("delete"));
        assert_eq!(
            store
                .find_with_identity(&session.token_hash)
                .await
                .expect("find"),
            None
        );
    }

    pub async fn concurrent_upgrades_have_one_winner<S: SqlStore>(store: &S) {
        let identity = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        store
            .insert_session(&session)
            .await
            .expect("insert session");

        let mut tasks = Vec::new();
        for _ in 0..32 {
            let store = store.clone();
            let identity = identity.clone();
            let (id, expected) = (session.id, session.token_hash.clone());
            tasks.push(tokio::spawn(async move {
                let upgrade = upgrade_to_aal2(&identity, now);
                let won = store
                    .upgrade_session(id, &expected, &upgrade)
                    .await
                    .expect("upgrade");
                won.map(|_| upgrade.new_token_hash)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(hash) = task.await.expect("task") {
                winners.push(hash);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one concurrent upgrade must win");
        let stored = store
            .get_session(session.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored.token_hash, winners[0]);
        let audited = twofold::store::codes::Outbox::audit_events(store, identity.id)
            .await
            .expect("audit events");
        assert_eq!(audited.len(), 2, "only the winner's upgrade is audited");
    }

    /// What [`upgrades_sent_at_once`] upgraded.
    pub struct UpgradedAtOnce {
        pub sessions: Vec<Uuid>,
        /// Answers of upgrades sent without their identity that came without it.
        pub identities_unread: usize,
        /// Upgrades sent without their identity that won.
        pub sent_without_identity: usize,
    }

    /// Upgrades of many sessions sent at once, which a store may write together, each answer
    /// for their own session, with their own audit events and address; one with a stale token
    /// loses and writes nothing. Every other one is sent without its identity: it writes the
    /// same, and its answer's identity, if there is one, is the stored one too.
    pub async fn upgrades_sent_at_once<S: SqlStore>(store: &S) -> UpgradedAtOnce {
        const SESSIONS: usize = 20;
        let now = now();
        let mut wanted = Vec::new();
        for _ in 0..SESSIONS {
            let identity = new_identity();
            store
                .insert_identity(&identity, None)
                .await
                .expect("insert");
            let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
            store
                .insert_session(&session)
                .await
                .expect("insert session");
            let upgrade = upgrade_to_aal2(&identity, now + ChronoDuration::seconds(1));
            wanted.push((identity, session, upgrade));
        }
        let stale = token_hash();
        let is_stale = |index: usize| index == SESSIONS / 2;
        let without_identity = |index: usize| index % 2 == 1;
        let answers = futures_util::future::join_all(wanted.iter().enumerate().map(
            |(index, (_, session, upgrade))| {
                let expected = if is_stale(index) {
                    &stale
                } else {
                    &session.token_hash
                };
                async move {
                    if without_identity(index) {
                        store
                            .upgrade_session_without_identity(session.id, expected, upgrade)
                            .await
                    } else {
                        store.upgrade_session(session.id, expected, upgrade).await
                    }
                }
            },
        ))
        .await;
        let mut upgraded_ids = Vec::new();
        let mut identities_unread = 0;
        let mut sent_without_identity = 0;
        for (index, ((identity, session, upgrade), answer)) in
            wanted.iter().zip(answers).enumerate()
        {
            let answer = answer.expect("upgrade");
            let audited = store.audit_events(identity.id).await.expect("audit");
            let stored = store.get_session(session.id).await.expect("get");
            if is_stale(index) {
                assert!(answer.is_none(), "a stale token must not upgrade");
                assert_eq!(audited, vec![], "a lost upgrade is not audited");
                assert_eq!(stored.as_ref(), Some(session));
                assert_eq!(
                    store.get_identity(identity.id).await.expect("get").as_ref(),
                    Some(identity)
                );
                continue;
            }
            let Upgraded {
                session: upgraded,
                identity: upgraded_identity,
            } = answer.expect("upgraded");
            assert_eq!(upgraded.id, session.id);
            assert_eq!(upgraded.token_hash, upgrade.new_token_hash);
            assert_eq!(upgraded.aal, Aal::Aal2);
            assert_eq!(stored.as_ref(), Some(&upgraded));
            let stored_identity = store.get_identity(identity.id).await.expect("get");
            assert!(
                stored_identity
                    .as_ref()
                    .expect("identity")
                    .verifiable_addresses
                    .iter()
                    .any(|address| address.value == email_of(identity) && address.verified),
                "the address is verified whether or not the answer has the identity"
            );
            sent_without_identity += usize::from(without_identity(index));
            let upgraded_identity = match upgraded_identity {
                Some(upgraded_identity) => upgraded_identity,
                None if without_identity(index) => {
                    identities_unread += 1;
                    assert_eq!(audited, upgrade.audit);
                    upgraded_ids.push(session.id);
                    continue;
                }
                None => panic!("an upgrade asked for its identity answers without it"),
            };
            assert_eq!(upgraded_identity.id, identity.id);
            assert_eq!(
                Some(&upgraded_identity),
                store.get_identity(identity.id).await.expect("get").as_ref(),
                "the answer's identity is the stored one, its address verified"
            );
            assert!(
                upgraded_identity
                    .verifiable_addresses
                    .iter()
                    .any(|address| address.value == email_of(identity) && address.verified)
            );
            assert_eq!(audited, upgrade.audit);
            upgraded_ids.push(session.id);
        }
        assert_eq!(upgraded_ids.len(), SESSIONS - 1);
        UpgradedAtOnce {
            sessions: upgraded_ids,
            identities_unread,
            sent_without_identity,
        }
    }
}

/// The flow suite. Each case gets its own store (own key prefix on Redis).
mod flow_cases {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    pub async fn create_get_replace<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store
            .create_flow(id, b"{\"step\":1}", LONG)
            .await
            .expect("create");
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!(
            (flow.revision, flow.document.as_slice()),
            (1, b"{\"step\":1}".as_slice())
        );

        assert!(
            store
                .replace_flow(id, 1, b"{\"step\":2}")
                .await
                .expect("replace")
        );
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!(
            (flow.revision, flow.document.as_slice()),
            (2, b"{\"step\":2}".as_slice())
        );

        assert!(
            !store
                .replace_flow(id, 1, b"stale")
                .await
                .expect("stale replace")
        );
        assert!(
            !store
                .replace_flow(id, 3, b"future")
                .await
                .expect("future replace")
        );
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!(
            (flow.revision, flow.document.as_slice()),
            (2, b"{\"step\":2}".as_slice())
        );

        // Documents are bytes, not text.
        let binary: Vec<u8> = (0..=255).collect();
        assert!(store.replace_flow(id, 2, &binary).await.expect("replace"));
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!((flow.revision, flow.document), (3, binary));
    }

    pub async fn concurrent_replacers_have_one_winner<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store.create_flow(id, b"start", LONG).await.expect("create");
        let mut tasks = Vec::new();
        for writer in 0..16u8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let document = vec![writer];
                let won = store.replace_flow(id, 1, &document).await.expect("replace");
                won.then_some(document)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(document) = task.await.expect("task") {
                winners.push(document);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one concurrent replace must win");
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!((flow.revision, &flow.document), (2, &winners[0]));
    }

    pub async fn expires_after_ttl<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store
            .create_flow(id, b"short", Duration::from_millis(300))
            .await
            .expect("create");
        assert!(store.get_flow(id).await.expect("get").is_some());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(store.get_flow(id).await.expect("get").is_none());
        assert!(!store.replace_flow(id, 1, b"late").await.expect("replace"));
        assert!(
            store.get_flow(id).await.expect("get").is_none(),
            "a late replace revived the flow"
        );
    }

    pub async fn replace_keeps_remaining_ttl<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store
            .create_flow(id, b"v1", Duration::from_millis(1000))
            .await
            .expect("create");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(store.replace_flow(id, 1, b"v2").await.expect("replace"));
        // Past the original deadline, but well before a TTL restarted by the replace would end.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            store.get_flow(id).await.expect("get").is_none(),
            "replace extended or dropped the ttl"
        );
    }

    pub async fn finish_replaces_and_shortens_the_ttl<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store.create_flow(id, b"open", LONG).await.expect("create");
        assert!(
            store
                .finish_flow(id, 1, b"passed", Duration::from_millis(300))
                .await
                .expect("finish")
        );
        let flow = store.get_flow(id).await.expect("get").expect("exists");
        assert_eq!(
            (flow.revision, flow.document.as_slice()),
            (2, b"passed".as_slice())
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store.get_flow(id).await.expect("get").is_none(),
            "a finished flow outlived its keep_for"
        );
    }

    pub async fn finish_never_extends_the_ttl<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store
            .create_flow(id, b"open", Duration::from_millis(300))
            .await
            .expect("create");
        assert!(
            store
                .finish_flow(id, 1, b"passed", LONG)
                .await
                .expect("finish")
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store.get_flow(id).await.expect("get").is_none(),
            "finish extended the flow past its deadline"
        );
    }

    pub async fn a_lost_finish_changes_nothing<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        store.create_flow(id, b"open", LONG).await.expect("create");
        assert!(
            !store
                .finish_flow(id, 2, b"passed", Duration::from_millis(100))
                .await
                .expect("finish")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let flow = store.get_flow(id).await.expect("get").expect("still there");
        assert_eq!(
            (flow.revision, flow.document.as_slice()),
            (1, b"open".as_slice())
        );
        assert!(
            !store
                .finish_flow(Uuid::now_v7(), 1, b"x", LONG)
                .await
                .expect("finish unknown")
        );
    }

    pub async fn unknown_flow<S: FlowStore>(store: Arc<S>) {
        let id = Uuid::now_v7();
        assert!(store.get_flow(id).await.expect("get").is_none());
        assert!(!store.replace_flow(id, 1, b"x").await.expect("replace"));
        assert!(store.get_flow(id).await.expect("get").is_none());
    }

    pub async fn delete_removes_the_flow<S: FlowStore>(store: Arc<S>) {
        let (deleted, kept) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [deleted, kept] {
            store.create_flow(id, b"open", LONG).await.expect("create");
        }
        store.delete_flow(deleted).await.expect("delete");
        assert!(store.get_flow(deleted).await.expect("get").is_none());
        assert!(
            !store.replace_flow(deleted, 1, b"x").await.expect("replace"),
            "a replace revived the deleted flow"
        );
        assert!(store.get_flow(deleted).await.expect("get").is_none());
        let flow = store
            .get_flow(kept)
            .await
            .expect("get")
            .expect("the other flow");
        assert_eq!(flow.document, b"open");
        // Deleting what is not there is not an error.
        store.delete_flow(deleted).await.expect("delete again");
        store
            .delete_flow(Uuid::now_v7())
            .await
            .expect("delete unknown");
    }
}

/// Challenges and rate limits: Redis and process memory.
mod code_cases {
    use super::*;
    use twofold::store::codes::{
        AttemptOutcome, Challenge, ChallengeStore, KeptAfterUse, OwnedAttempt, Owner, RateLimiter,
        ReplaceOutcome,
    };

    const TTL: Duration = Duration::from_secs(60);
    const KEPT: KeptAfterUse = KeptAfterUse::ForItsCaller(TTL);

    fn mac() -> [u8; 32] {
        let mut mac = [0u8; 32];
        mac[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        mac[16..].copy_from_slice(Uuid::new_v4().as_bytes());
        mac
    }

    fn challenge(at: DateTime<Utc>, right: &[u8; 32]) -> Challenge {
        Challenge {
            id: Uuid::now_v7(),
            identity_id: Uuid::now_v7(),
            address: unique_phone(),
            channel: Channel::Sms,
            purpose: format!("login:{}", Uuid::now_v7()),
            mac: right.to_vec(),
            attempts: 0,
            sends: 1,
            expires_at: at + ChronoDuration::minutes(10),
            resend_available_at: at + ChronoDuration::seconds(30),
            consumed: false,
        }
    }

    async fn created<S: ChallengeStore>(store: &S, at: DateTime<Utc>) -> (Challenge, [u8; 32]) {
        let right = mac();
        let challenge = challenge(at, &right);
        store
            .create_challenge(&challenge, TTL)
            .await
            .expect("create");
        (challenge, right)
    }

    pub async fn challenge_round_trip<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let (challenge, _) = created(&*store, now()).await;
        let stored = store
            .get_challenge(challenge.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored, challenge);
        let unknown = Uuid::now_v7();
        assert!(store.get_challenge(unknown).await.expect("get").is_none());
        assert_eq!(
            store
                .attempt(unknown, &[mac()], now(), 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::NotFound
        );
    }

    pub async fn a_deleted_challenge_is_gone<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let (deleted, right) = created(&*store, now()).await;
        let (kept, _) = created(&*store, now()).await;
        store.delete_challenge(deleted.id).await.expect("delete");
        assert!(
            store
                .get_challenge(deleted.id)
                .await
                .expect("get")
                .is_none()
        );
        assert_eq!(
            store
                .attempt(deleted.id, &[right], now(), 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::NotFound
        );
        // Only that one: another challenge stays, and deleting again is no error.
        assert!(store.get_challenge(kept.id).await.expect("get").is_some());
        store
            .delete_challenge(deleted.id)
            .await
            .expect("delete again");
    }

    /// An attempt for an owner counts only on that owner's challenge: another identity's, or
    /// another purpose's, is refused untouched, even with the right code, consumed or expired. A
    /// wrong code's answer names the challenge's address.
    pub async fn an_owned_attempt_counts_only_for_its_owner<S: ChallengeStore + RateLimiter>(
        store: Arc<S>,
    ) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        let owner = Owner {
            identity_id: challenge.identity_id,
            purpose: &challenge.purpose,
        };
        let strangers = [
            Owner {
                identity_id: Uuid::now_v7(),
                ..owner
            },
            Owner {
                purpose: "login:another",
                ..owner
            },
        ];
        let attempt = |owner, code, at| {
            let store = store.clone();
            async move {
                store
                    .attempt_owned(challenge.id, owner, &[code], at, 3, KEPT)
                    .await
                    .expect("attempt")
            }
        };
        for stranger in strangers {
            assert_eq!(attempt(stranger, right, at).await, OwnedAttempt::NotOwned);
        }
        let untouched = store.get_challenge(challenge.id).await.expect("get");
        assert_eq!(untouched.as_ref(), Some(&challenge), "nothing counted");

        assert_eq!(
            attempt(owner, mac(), at).await,
            OwnedAttempt::Wrong {
                attempts_left: 2,
                address: challenge.address.clone()
            }
        );
        let OwnedAttempt::Done(AttemptOutcome::Verified(verified)) =
            attempt(owner, right, at).await
        else {
            panic!("the owner's right code verifies");
        };
        assert_eq!((verified.id, verified.attempts), (challenge.id, 2));
        assert_eq!(
            attempt(strangers[0], right, at).await,
            OwnedAttempt::NotOwned,
            "consumed, and still not the stranger's"
        );
        assert_eq!(
            attempt(owner, right, at).await,
            OwnedAttempt::Done(AttemptOutcome::AlreadyUsed)
        );

        let (expired, right) = created(&*store, at).await;
        let owner = Owner {
            identity_id: expired.identity_id,
            purpose: &expired.purpose,
        };
        let later = at + ChronoDuration::hours(1);
        let stranger = Owner {
            identity_id: Uuid::now_v7(),
            ..owner
        };
        let answer = store
            .attempt_owned(expired.id, stranger, &[right], later, 3, KEPT)
            .await
            .expect("attempt");
        assert_eq!(
            answer,
            OwnedAttempt::NotOwned,
            "expired, and not the stranger's"
        );
        let answer = store
            .attempt_owned(expired.id, owner, &[right], later, 3, KEPT)
            .await
            .expect("attempt");
        assert_eq!(answer, OwnedAttempt::Done(AttemptOutcome::Expired));
        let answer = store
            .attempt_owned(Uuid::now_v7(), owner, &[right], at, 3, KEPT)
            .await
            .expect("attempt");
        assert_eq!(answer, OwnedAttempt::Done(AttemptOutcome::NotFound));
    }

    pub async fn wrong_codes_count_up_to_max<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        for left in [2, 1, 0] {
            assert_eq!(
                store
                    .attempt(challenge.id, &[mac()], at, 3, KEPT)
                    .await
                    .expect("attempt"),
                AttemptOutcome::Wrong {
                    attempts_left: left
                }
            );
        }
        assert_eq!(
            store
                .attempt(challenge.id, &[right], at, 3, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::TooManyAttempts,
            "the right code after max attempts"
        );
        let stored = store
            .get_challenge(challenge.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!((stored.attempts, stored.consumed), (3, false));
    }

    pub async fn expired_code_is_not_counted<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        let late = challenge.expires_at + ChronoDuration::seconds(1);
        assert_eq!(
            store
                .attempt(challenge.id, &[right], late, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Expired
        );
        let stored = store
            .get_challenge(challenge.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!((stored.attempts, stored.consumed), (0, false));
        // Just before the deadline it still works.
        let in_time = challenge.expires_at - ChronoDuration::seconds(1);
        assert!(matches!(
            store
                .attempt(challenge.id, &[right], in_time, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
    }

    pub async fn a_used_challenge_is_kept_only_a_while<S: ChallengeStore + RateLimiter>(
        store: Arc<S>,
    ) {
        let kept = KeptAfterUse::ForItsFlow(Duration::from_millis(300));
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        // A wrong code leaves the deadline alone.
        assert_eq!(
            store
                .attempt(challenge.id, &[mac()], at, 5, kept)
                .await
                .expect("attempt"),
            AttemptOutcome::Wrong { attempts_left: 4 }
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(matches!(
            store
                .attempt(challenge.id, &[right], at, 5, kept)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
        assert_eq!(
            store
                .attempt(challenge.id, &[right], at, 5, kept)
                .await
                .expect("attempt"),
            AttemptOutcome::AlreadyUsed
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store
                .get_challenge(challenge.id)
                .await
                .expect("get")
                .is_none(),
            "a used challenge outlived kept_after_use"
        );

        // Consuming never extends a nearer deadline.
        let short = Challenge {
            id: Uuid::now_v7(),
            ..challenge.clone()
        };
        store
            .create_challenge(&short, Duration::from_millis(300))
            .await
            .expect("create");
        assert!(matches!(
            store
                .attempt(short.id, &[right], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store.get_challenge(short.id).await.expect("get").is_none(),
            "consuming extended the challenge"
        );
    }

    pub async fn right_code_verifies_once<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        assert_eq!(
            store
                .attempt(challenge.id, &[mac()], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Wrong { attempts_left: 4 }
        );
        let verified = store
            .attempt(challenge.id, &[right], at, 5, KEPT)
            .await
            .expect("attempt");
        assert_eq!(
            verified,
            AttemptOutcome::Verified(Challenge {
                attempts: 2,
                consumed: true,
                ..challenge.clone()
            })
        );
        assert_eq!(
            store
                .attempt(challenge.id, &[right], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::AlreadyUsed
        );
        assert!(
            store
                .get_challenge(challenge.id)
                .await
                .expect("get")
                .expect("exists")
                .consumed
        );
    }

    pub async fn concurrent_right_codes_verify_once<S: ChallengeStore + RateLimiter>(
        store: Arc<S>,
    ) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .attempt(challenge.id, &[right], at, 5, KEPT)
                    .await
                    .expect("attempt")
            }));
        }
        let mut verified = 0;
        for task in tasks {
            match task.await.expect("task") {
                AttemptOutcome::Verified(_) => verified += 1,
                AttemptOutcome::AlreadyUsed => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(verified, 1, "exactly one concurrent submission may verify");
    }

    pub async fn any_candidate_may_match<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let at = now();
        let (challenge, right) = created(&*store, at).await;
        assert!(matches!(
            store
                .attempt(challenge.id, &[mac(), right], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
        // A near miss (one bit off), in the last, first or a middle word, is wrong; the right
        // code still works after them.
        let (other, right) = created(&*store, at).await;
        for (byte, left) in [(31, 4), (0, 3), (17, 2)] {
            let mut near = right;
            near[byte] ^= 1;
            assert_eq!(
                store
                    .attempt(other.id, &[near], at, 5, KEPT)
                    .await
                    .expect("attempt"),
                AttemptOutcome::Wrong {
                    attempts_left: left
                },
                "one bit off in byte {byte}"
            );
        }
        assert!(matches!(
            store
                .attempt(other.id, &[right], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
    }

    pub async fn replace_code<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let at = now();
        let (challenge, old) = created(&*store, at).await;
        assert_eq!(
            store
                .attempt(challenge.id, &[mac()], at, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Wrong { attempts_left: 4 }
        );
        let new = mac();
        let expires_at = at + ChronoDuration::minutes(20);
        let resend_at = at + ChronoDuration::minutes(1);
        assert_eq!(
            store
                .replace_code(challenge.id, &new, at, expires_at, resend_at, TTL)
                .await
                .expect("replace"),
            ReplaceOutcome::Cooldown {
                available_at: challenge.resend_available_at
            }
        );
        let after = challenge.resend_available_at;
        let replaced = store
            .replace_code(challenge.id, &new, after, expires_at, resend_at, TTL)
            .await
            .expect("replace");
        let expected = Challenge {
            mac: new.to_vec(),
            attempts: 0,
            sends: 2,
            expires_at,
            resend_available_at: resend_at,
            ..challenge.clone()
        };
        assert_eq!(replaced, ReplaceOutcome::Replaced(expected.clone()));
        assert_eq!(
            store.get_challenge(challenge.id).await.expect("get"),
            Some(expected)
        );
        assert_eq!(
            store
                .attempt(challenge.id, &[old], after, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Wrong { attempts_left: 4 },
            "the old code still works"
        );
        assert!(matches!(
            store
                .attempt(challenge.id, &[new], after, 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::Verified(_)
        ));
        assert_eq!(
            store
                .replace_code(challenge.id, &mac(), resend_at, expires_at, resend_at, TTL)
                .await
                .expect("replace"),
            ReplaceOutcome::AlreadyUsed
        );
        assert_eq!(
            store
                .replace_code(Uuid::now_v7(), &mac(), at, expires_at, resend_at, TTL)
                .await
                .expect("replace"),
            ReplaceOutcome::NotFound
        );
    }

    pub async fn challenge_expires_after_ttl<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let right = mac();
        let challenge = challenge(now(), &right);
        store
            .create_challenge(&challenge, Duration::from_millis(300))
            .await
            .expect("create");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store
                .get_challenge(challenge.id)
                .await
                .expect("get")
                .is_none()
        );
        assert_eq!(
            store
                .attempt(challenge.id, &[right], now(), 5, KEPT)
                .await
                .expect("attempt"),
            AttemptOutcome::NotFound
        );
    }

    pub async fn remember_request<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let key = format!("send:{}", unique());
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            store
                .remember_request(&key, first, TTL)
                .await
                .expect("remember"),
            None
        );
        assert_eq!(
            store
                .remember_request(&key, second, TTL)
                .await
                .expect("remember"),
            Some(first)
        );
        store.forget_request(&key).await.expect("forget");
        assert_eq!(
            store
                .remember_request(&key, second, TTL)
                .await
                .expect("remember"),
            None
        );
        assert_eq!(
            store
                .remember_request(&key, first, TTL)
                .await
                .expect("remember"),
            Some(second)
        );
        store
            .forget_request(&format!("never:{}", unique()))
            .await
            .expect("forget unknown");
    }

    pub async fn rate_limit_windows<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let key = format!("address:{}", unique());
        let window = Duration::from_secs(60);
        let at = now();
        for count in 1..=3 {
            assert_eq!(
                store.hit(&key, 3, window, at).await.expect("hit"),
                Ok(count)
            );
        }
        let retry_after = store
            .hit(&key, 3, window, at)
            .await
            .expect("hit")
            .expect_err("over the limit");
        assert!(
            retry_after <= window && retry_after > Duration::ZERO,
            "{retry_after:?}"
        );
        let other = format!("address:{}", unique());
        assert_eq!(store.hit(&other, 3, window, at).await.expect("hit"), Ok(1));
        let next_window = at + ChronoDuration::seconds(60);
        assert_eq!(
            store.hit(&key, 3, window, next_window).await.expect("hit"),
            Ok(1)
        );
    }

    /// `hit_each` counts its keys in turn, and a key over its limit stops the count there.
    pub async fn rate_limits_counted_together<S: ChallengeStore + RateLimiter>(store: Arc<S>) {
        let (first, second) = (
            format!("address:{}", unique()),
            format!("identity:{}", unique()),
        );
        let window = Duration::from_secs(60);
        let at = now();
        let limits = [(first.as_str(), 2), (second.as_str(), 3)];
        for _ in 0..2 {
            assert_eq!(
                store.hit_each(&limits, window, at).await.expect("hits"),
                Ok(())
            );
        }
        let retry_after = store
            .hit_each(&limits, window, at)
            .await
            .expect("hits")
            .expect_err("the first key is over its limit");
        assert!(
            retry_after <= window && retry_after > Duration::ZERO,
            "{retry_after:?}"
        );
        // Refused by the first key, so the second counted only the two that passed.
        assert_eq!(store.hit(&second, 3, window, at).await.expect("hit"), Ok(3));
        let over_second = [(format!("address:{}", unique()), 5), (second.clone(), 3)];
        let over_second: Vec<(&str, u32)> = over_second
            .iter()
            .map(|(key, limit)| (key.as_str(), *limit))
            .collect();
        assert!(
            store
                .hit_each(&over_second, window, at)
                .await
                .expect("hits")
                .is_err(),
            "the second key is over its limit"
        );
        let next_window = at + ChronoDuration::seconds(60);
        assert_eq!(
            store
                .hit_each(&limits, window, next_window)
                .await
                .expect("hits"),
            Ok(())
        );
    }
}

/// The failure budget and the outbox: Postgres and SQLite.
mod durable_cases {
    use super::*;
    use std::collections::HashSet;
    use twofold::store::codes::{
        AttemptResult, AuditEvent, DeliveryAttempt, FailureBudgetStore, FailureState,
        MessageStatus, Outbox, OutboxMessage,
    };
    use twofold::store::config_versions::{ConfigSource, ConfigVersion, ConfigVersionStore};

    const WINDOW: Duration = Duration::from_secs(60);

    fn seconds(count: i64) -> ChronoDuration {
        ChronoDuration::seconds(count)
    }

    pub async fn stored_identity<S: IdentityStore>(store: &S) -> Uuid {
        let identity = new_identity();
        store
            .insert_identity(&identity, None)
            .await
            .expect("insert identity");
        identity.id
    }

    pub async fn concurrent_failures_all_count<S: SqlStore + FailureBudgetStore>(store: &S) {
        let identity_id = stored_identity(store).await;
        let at = now();
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record_failure(identity_id, at, 1000, Duration::from_secs(3600))
                    .await
                    .expect("record failure")
            }));
        }
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.expect("task").failures);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<u32>>(),
            "every failure saw its own count"
        );
        assert_eq!(
            store.failure_state(identity_id, at).await.expect("state"),
            FailureState {
                failures: 100,
                locked_until: None,
                recorded: true,
            }
        );
    }

    pub async fn lockout_grows_and_resets<S: SqlStore + FailureBudgetStore>(store: &S) {
        let identity_id = stored_identity(store).await;
        let t0 = now();
        let window = seconds(60);
        assert_eq!(
            store.failure_state(identity_id, t0).await.expect("state"),
            FailureState {
                failures: 0,
                locked_until: None,
                recorded: false,
            }
        );
        for failures in 1..=2 {
            assert_eq!(
                store
                    .record_failure(identity_id, t0, 3, WINDOW)
                    .await
                    .expect("record"),
                FailureState {
                    failures,
                    locked_until: None,
                    recorded: true,
                }
            );
        }
        let locked = FailureState {
            failures: 0,
            locked_until: Some(t0 + window),
            recorded: true,
        };
        assert_eq!(
            store
                .record_failure(identity_id, t0, 3, WINDOW)
                .await
                .expect("record"),
            locked
        );
        assert_eq!(
            store
                .failure_state(identity_id, t0 + seconds(59))
                .await
                .expect("state"),
            locked
        );

        let t1 = t0 + window;
        assert_eq!(
            store.failure_state(identity_id, t1).await.expect("state"),
            FailureState {
                failures: 0,
                locked_until: None,
                recorded: true,
            },
            "the lockout is over"
        );
        for _ in 0..2 {
            store
                .record_failure(identity_id, t1, 3, WINDOW)
                .await
                .expect("record");
        }
        assert_eq!(
            store
                .record_failure(identity_id, t1, 3, WINDOW)
                .await
                .expect("record"),
            FailureState {
                failures: 0,
                locked_until: Some(t1 + window * 2),
                recorded: true,
            },
            "the second lockout lasts twice as long"
        );

        store.reset_failures(identity_id).await.expect("reset");
        assert_eq!(
            store.failure_state(identity_id, t1).await.expect("state"),
            FailureState {
                failures: 0,
                locked_until: None,
                recorded: false,
            }
        );
        for _ in 0..2 {
            store
                .record_failure(identity_id, t1, 3, WINDOW)
                .await
                .expect("record");
        }
        assert_eq!(
            store
                .record_failure(identity_id, t1, 3, WINDOW)
                .await
                .expect("record"),
            FailureState {
                failures: 0,
                locked_until: Some(t1 + window),
                recorded: true,
            },
            "a success clears the growth"
        );
    }

    pub async fn failures_expire_with_their_window<S: SqlStore + FailureBudgetStore>(store: &S) {
        let identity_id = stored_identity(store).await;
        let t0 = now();
        store
            .record_failure(identity_id, t0, 3, WINDOW)
            .await
            .expect("record");
        store
            .record_failure(identity_id, t0 + seconds(30), 3, WINDOW)
            .await
            .expect("record");
        assert_eq!(
            store
                .failure_state(identity_id, t0 + seconds(59))
                .await
                .expect("state")
                .failures,
            2
        );
        assert_eq!(
            store
                .failure_state(identity_id, t0 + seconds(60))
                .await
                .expect("state")
                .failures,
            0
        );
        // A replica whose clock lags counts in the same window instead of starting afresh.
        assert_eq!(
            store
                .record_failure(identity_id, t0 - seconds(1), 5, WINDOW)
                .await
                .expect("record")
                .failures,
            3
        );
        // A new window starts: the earlier failures no longer count towards a lockout.
        assert_eq!(
            store
                .record_failure(identity_id, t0 + seconds(60), 3, WINDOW)
                .await
                .expect("record"),
            FailureState {
                failures: 1,
                locked_until: None,
                recorded: true,
            }
        );
    }

    pub fn message(recipient: &str, at: DateTime<Utc>) -> OutboxMessage {
        OutboxMessage {
            id: Uuid::now_v7(),
            channel: Channel::Sms,
            recipient: recipient.to_owned(),
            template_type: "login_code".into(),
            locale: "en".into(),
            sealed_data: (0..=255).chain(0..=255).collect(),
            identity_id: Some(Uuid::now_v7()),
            status: MessageStatus::Queued,
            send_count: 0,
            not_after: Some(at + ChronoDuration::minutes(15)),
            next_attempt_at: at,
            lease_until: None,
            created_at: at,
            updated_at: at,
        }
    }

    pub fn audit_for(message: &OutboxMessage, at: DateTime<Utc>) -> AuditEvent {
        AuditEvent {
            id: Uuid::now_v7(),
            event: "code.sent".into(),
            identity_id: message.identity_id,
            flow_id: Some(Uuid::now_v7()),
            address_hash: Some("ab".repeat(32)),
            client_ip: Some("203.0.113.7".into()),
            occurred_at: at,
        }
    }

    async fn enqueued<S: Outbox>(store: &S, recipient: &str, at: DateTime<Utc>) -> OutboxMessage {
        let message = message(recipient, at);
        store
            .enqueue(&message, &audit_for(&message, at))
            .await
            .expect("enqueue");
        message
    }

    fn attempt(message_id: Uuid, at: DateTime<Utc>, succeeded: bool) -> DeliveryAttempt {
        DeliveryAttempt {
            message_id,
            attempted_at: at,
            gateway: "twilio".into(),
            succeeded,
            error: (!succeeded).then(|| "gateway timeout".to_owned()),
            provider_message_id: succeeded.then(|| "SM123".to_owned()),
        }
    }

    /// The ids of what one claim of up to ten messages at `at` takes.
    async fn claimed_ids<S: Outbox>(store: &S, at: DateTime<Utc>, lease: Duration) -> Vec<Uuid> {
        message_ids(&store.claim_due(at, 10, lease).await.expect("claim"))
    }

    fn message_ids(messages: &[OutboxMessage]) -> Vec<Uuid> {
        messages.iter().map(|message| message.id).collect()
    }

    /// Messages enqueued at once, which a store may write together, are each stored with their
    /// audit event; one that cannot be stored (its id is taken) fails alone and writes nothing.
    pub async fn enqueues_sent_at_once<S: SqlStore + Outbox>(store: &S) {
        enqueue_at_once(store, true).await;
    }

    /// Enqueues twenty messages at once, every other one queued already claimed and one with a
    /// taken id if `with_clash`, and checks that each is stored with its audit event or, the
    /// clashing one, fails and writes nothing. Returns the messages stored.
    pub async fn enqueue_at_once<S: SqlStore + Outbox>(
        store: &S,
        with_clash: bool,
    ) -> Vec<OutboxMessage> {
        const MESSAGES: usize = 20;
        let at = now();
        let taken = enqueued(store, &unique_phone(), at).await;
        let clash = if with_clash { MESSAGES / 2 } else { MESSAGES };
        let sent: Vec<(OutboxMessage, AuditEvent)> = (0..MESSAGES)
            .map(|index| {
                let mut message = message(&unique_phone(), at);
                if index % 2 == 1 {
                    // Handed straight to a worker: queued already claimed.
                    message.status = MessageStatus::Processing;
                    message.lease_until = Some(at + seconds(60));
                }
                let audit = audit_for(&message, at);
                if index == clash {
                    message.id = taken.id;
                }
                (message, audit)
            })
            .collect();
        let answers = futures_util::future::join_all(
            sent.iter()
                .map(|(message, audit)| store.enqueue(message, audit)),
        )
        .await;
        let mut stored = Vec::new();
        for (index, ((message, audit), answer)) in sent.iter().zip(answers).enumerate() {
            let identity_id = message.identity_id.expect("an identity");
            let audited = store.audit_events(identity_id).await.expect("audit");
            if index == clash {
                assert!(answer.is_err(), "a taken id must fail");
                assert_eq!(audited, vec![], "a message not stored is not audited");
                assert_eq!(
                    store.get_message(taken.id).await.expect("get"),
                    Some(taken.clone())
                );
                continue;
            }
            answer.expect("enqueue");
            assert_eq!(
                store.get_message(message.id).await.expect("get").as_ref(),
                Some(message)
            );
            assert_eq!(audited, vec![audit.clone()]);
            stored.push(message.clone());
        }
        assert_eq!(stored.len(), MESSAGES - usize::from(with_clash));
        stored
    }

    pub async fn outbox_lifecycle<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let message = message(&unique_phone(), t0);
        let audit = audit_for(&message, t0);
        store.enqueue(&message, &audit).await.expect("enqueue");
        assert_eq!(
            store.get_message(message.id).await.expect("get"),
            Some(message.clone())
        );
        let identity_id = message.identity_id.expect("identity");
        assert_eq!(
            store.audit_events(identity_id).await.expect("audit"),
            vec![audit.clone()]
        );
        assert!(
            store
                .get_message(Uuid::now_v7())
                .await
                .expect("get")
                .is_none()
        );

        let lease = Duration::from_secs(30);
        let claimed = store.claim_due(t0, 10, lease).await.expect("claim");
        assert_eq!(
            claimed,
            vec![OutboxMessage {
                status: MessageStatus::Processing,
                lease_until: Some(t0 + seconds(30)),
                updated_at: t0,
                ..message.clone()
            }]
        );
        assert!(claimed_ids(store, t0, lease).await.is_empty(), "leased");

        let retry_at = t0 + seconds(60);
        store
            .finish_attempt(
                &attempt(message.id, t0, false),
                AttemptResult::RetryAt(retry_at),
            )
            .await
            .expect("finish");
        let waiting = store
            .get_message(message.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (waiting.status, waiting.send_count, waiting.next_attempt_at),
            (MessageStatus::Queued, 1, retry_at)
        );
        assert!(
            claimed_ids(store, retry_at - seconds(1), lease)
                .await
                .is_empty(),
            "claimable before its retry time"
        );
        assert_eq!(claimed_ids(store, retry_at, lease).await, vec![message.id]);
        store
            .finish_attempt(&attempt(message.id, retry_at, true), AttemptResult::Sent)
            .await
            .expect("finish");
        let sent = store
            .get_message(message.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            sent,
            OutboxMessage {
                status: MessageStatus::Sent,
                send_count: 2,
                next_attempt_at: retry_at,
                updated_at: retry_at,
                ..message.clone()
            }
        );
        assert_eq!(
            store.attempts(message.id).await.expect("attempts"),
            vec![
                attempt(message.id, t0, false),
                attempt(message.id, retry_at, true)
            ]
        );
        assert!(
            claimed_ids(store, retry_at + seconds(3600), lease)
                .await
                .is_empty(),
            "a sent message was claimed again"
        );

        let later = t0 + seconds(1);
        let event = AuditEvent {
            event: "code.verified".into(),
            occurred_at: later,
            ..audit_for(&message, later)
        };
        store.record_audit(&event).await.expect("record audit");
        assert_eq!(
            store.audit_events(identity_id).await.expect("audit"),
            vec![audit, event]
        );
    }

    /// A courier round records all its attempts in one call, each with its own outcome.
    pub async fn a_round_finishes_together<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let sent = enqueued(store, &unique_phone(), t0).await;
        let retried = enqueued(store, &unique_phone(), t0).await;
        let given_up = enqueued(store, &unique_phone(), t0).await;
        let claimed = store
            .claim_due(t0, 10, Duration::from_secs(30))
            .await
            .expect("claim");
        let mut expected_ids = vec![sent.id, retried.id, given_up.id];
        let mut claimed_ids = message_ids(&claimed);
        expected_ids.sort();
        claimed_ids.sort();
        assert_eq!(claimed_ids, expected_ids);

        let retry_at = t0 + seconds(60);
        let t1 = t0 + seconds(1);
        store
            .finish_attempts(&[
                (attempt(sent.id, t1, true), AttemptResult::Sent),
                (
                    attempt(retried.id, t1, false),
                    AttemptResult::RetryAt(retry_at),
                ),
                (attempt(given_up.id, t1, false), AttemptResult::Abandoned),
            ])
            .await
            .expect("finish the round");
        store.finish_attempts(&[]).await.expect("an empty round");

        let state = |message: OutboxMessage| async move {
            let stored = store
                .get_message(message.id)
                .await
                .expect("get")
                .expect("exists");
            (
                stored.status,
                stored.send_count,
                stored.next_attempt_at,
                stored.updated_at,
            )
        };
        assert_eq!(state(sent.clone()).await, (MessageStatus::Sent, 1, t0, t1));
        assert_eq!(
            state(retried.clone()).await,
            (MessageStatus::Queued, 1, retry_at, t1)
        );
        assert_eq!(
            state(given_up.clone()).await,
            (MessageStatus::Abandoned, 1, t0, t1)
        );
        for (message, succeeded) in [(&sent, true), (&retried, false), (&given_up, false)] {
            assert_eq!(
                store.attempts(message.id).await.expect("attempts"),
                vec![attempt(message.id, t1, succeeded)]
            );
        }
    }

    pub async fn expired_lease_is_claimed_again<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let message = enqueued(store, &unique_phone(), t0).await;
        let lease = Duration::from_secs(30);
        assert_eq!(claimed_ids(store, t0, lease).await, vec![message.id]);
        assert!(claimed_ids(store, t0 + seconds(29), lease).await.is_empty());
        assert_eq!(
            claimed_ids(store, t0 + seconds(30), lease).await,
            vec![message.id],
            "a dead worker's message is never picked up again"
        );
    }

    /// A message handed straight to a worker is queued already claimed: no claim takes it while
    /// its lease lasts, any claim does once it has run out (its worker died), and its attempt
    /// clears the lease.
    pub async fn a_message_queued_claimed_waits_for_its_lease<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let lease_until = t0 + seconds(60);
        let message = OutboxMessage {
            status: MessageStatus::Processing,
            lease_until: Some(lease_until),
            ..message(&unique_phone(), t0)
        };
        store
            .enqueue(&message, &audit_for(&message, t0))
            .await
            .expect("enqueue");
        assert_eq!(
            store.get_message(message.id).await.expect("get"),
            Some(message.clone())
        );
        let lease = Duration::from_secs(30);
        assert!(
            claimed_ids(store, lease_until - seconds(1), lease)
                .await
                .is_empty(),
            "claimed while its worker's lease lasts"
        );
        assert_eq!(
            store
                .claim_due(lease_until, 10, lease)
                .await
                .expect("claim"),
            vec![OutboxMessage {
                lease_until: Some(lease_until + seconds(30)),
                updated_at: lease_until,
                ..message.clone()
            }],
            "a dead worker's message is never picked up"
        );
        store
            .finish_attempt(&attempt(message.id, lease_until, true), AttemptResult::Sent)
            .await
            .expect("finish");
        let sent = store
            .get_message(message.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (sent.status, sent.send_count, sent.lease_until),
            (MessageStatus::Sent, 1, None)
        );
    }

    /// Expired leases and queued messages are found apart: an expired lease goes first, and
    /// one claim never takes more than its limit of both together.
    pub async fn a_claim_takes_expired_leases_first_within_its_limit<S: SqlStore + Outbox>(
        store: &S,
    ) {
        let t0 = now();
        let lease = Duration::from_secs(30);
        let abandoned_by_a_worker = enqueued(store, &unique_phone(), t0).await;
        assert_eq!(
            message_ids(&store.claim_due(t0, 1, lease).await.expect("claim")),
            vec![abandoned_by_a_worker.id]
        );
        // Both due before the abandoned one, so "oldest due first" alone would take them both.
        let older = enqueued(store, &unique_phone(), t0 - seconds(2)).await;
        let newer = enqueued(store, &unique_phone(), t0 - seconds(1)).await;
        let expired = t0 + seconds(30);
        let mut claimed = message_ids(&store.claim_due(expired, 2, lease).await.expect("claim"));
        claimed.sort();
        let mut expected = vec![abandoned_by_a_worker.id, older.id];
        expected.sort();
        assert_eq!(claimed, expected);
        assert_eq!(
            claimed_ids(store, expired, lease).await,
            vec![newer.id],
            "the message left over is still queued"
        );
    }

    /// Versions follow each other; of two writers of the same version exactly one wins; a gap
    /// is refused; reads by number, by source and newest first.
    pub async fn config_versions_are_sequential<S: ConfigVersionStore>(store: &S) {
        let version = |number: u64, source: ConfigSource| ConfigVersion {
            version: number,
            document: format!("{{\"n\":{number}}}"),
            etag: format!("etag-{number}"),
            source,
            created_at: now(),
        };
        // Each fixture has its own database, so numbering starts at 1.
        assert_eq!(store.latest_config_version().await.unwrap(), None);
        assert!(
            store
                .insert_config_version(&version(1, ConfigSource::File))
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_config_version(&version(1, ConfigSource::Api))
                .await
                .unwrap(),
            "taken"
        );
        assert!(
            !store
                .insert_config_version(&version(3, ConfigSource::Api))
                .await
                .unwrap(),
            "gap"
        );
        let (api, rollback) = (
            version(2, ConfigSource::Api),
            version(2, ConfigSource::Rollback),
        );
        let (a, b) = tokio::join!(
            store.insert_config_version(&api),
            store.insert_config_version(&rollback)
        );
        assert_eq!(
            [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
            1
        );
        assert_eq!(store.latest_config_version().await.unwrap(), Some(2));
        assert_eq!(store.latest_config().await.unwrap().unwrap().version, 2);
        let first = store.config_version(1).await.unwrap().unwrap();
        assert_eq!(
            first,
            version(1, ConfigSource::File).with_created_at(first.created_at)
        );
        assert_eq!(
            store
                .latest_config_from(ConfigSource::File)
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );
        let listed: Vec<u64> = store
            .list_config_versions()
            .await
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(listed, vec![2, 1]);
        assert_eq!(store.config_version(9).await.unwrap(), None);
    }

    trait WithCreatedAt {
        fn with_created_at(self, at: DateTime<Utc>) -> Self;
    }

    impl WithCreatedAt for ConfigVersion {
        fn with_created_at(mut self, at: DateTime<Utc>) -> Self {
            self.created_at = at;
            self
        }
    }

    pub async fn abandon<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let queued = enqueued(store, &unique_phone(), t0).await;
        let claimed = enqueued(store, &unique_phone(), t0).await;
        let claims = store.claim_due(t0, 1, WINDOW).await.expect("claim");
        assert_eq!(claims.len(), 1);
        let (first, second) = if claims[0].id == queued.id {
            (queued, claimed)
        } else {
            (claimed, queued)
        };
        store
            .abandon(first.id, t0 + seconds(1))
            .await
            .expect("abandon");
        store
            .abandon(second.id, t0 + seconds(2))
            .await
            .expect("abandon");
        for (message, at) in [(&first, t0 + seconds(1)), (&second, t0 + seconds(2))] {
            let stored = store
                .get_message(message.id)
                .await
                .expect("get")
                .expect("exists");
            assert_eq!(
                (stored.status, stored.updated_at, stored.send_count),
                (MessageStatus::Abandoned, at, 0)
            );
        }
        assert!(
            claimed_ids(store, t0 + seconds(3600), WINDOW)
                .await
                .is_empty()
        );
        assert!(store.attempts(first.id).await.expect("attempts").is_empty());
    }

    pub async fn list_filters_and_pages<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let (alice, bob) = (unique_phone(), unique_phone());
        let mut alices = Vec::new();
        for _ in 0..5 {
            alices.push(enqueued(store, &alice, t0).await.id);
        }
        let mut bobs = Vec::new();
        for _ in 0..2 {
            bobs.push(enqueued(store, &bob, t0).await.id);
        }
        store.abandon(alices[1], t0).await.expect("abandon");
        let newest_first = |mut ids: Vec<Uuid>| {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        };
        let all = newest_first([alices.clone(), bobs.clone()].concat());
        assert_eq!(
            message_ids(
                &store
                    .list_messages(None, None, None, 100)
                    .await
                    .expect("list")
            ),
            all
        );

        let alices_desc = newest_first(alices.clone());
        let page1 = store
            .list_messages(None, Some(&alice), None, 2)
            .await
            .expect("list");
        assert_eq!(message_ids(&page1), alices_desc[..2]);
        let page2 = store
            .list_messages(None, Some(&alice), Some(page1[1].id), 2)
            .await
            .expect("list");
        assert_eq!(message_ids(&page2), alices_desc[2..4]);
        let page3 = store
            .list_messages(None, Some(&alice), Some(page2[1].id), 2)
            .await
            .expect("list");
        assert_eq!(message_ids(&page3), alices_desc[4..]);

        assert_eq!(
            message_ids(
                &store
                    .list_messages(Some(MessageStatus::Abandoned), None, None, 10)
                    .await
                    .expect("list")
            ),
            vec![alices[1]]
        );
        let queued_bob = store
            .list_messages(Some(MessageStatus::Queued), Some(&bob), None, 10)
            .await
            .expect("list");
        assert_eq!(message_ids(&queued_bob), newest_first(bobs));
        // The sealed data comes back byte for byte.
        assert_eq!(
            queued_bob[0].sealed_data,
            (0..=255).chain(0..=255).collect::<Vec<u8>>()
        );
        assert!(
            store
                .list_messages(Some(MessageStatus::Sent), None, None, 10)
                .await
                .expect("list")
                .is_empty()
        );
    }

    pub async fn concurrent_claimers_never_share<S: SqlStore + Outbox>(store: &S) {
        let t0 = now();
        let mut expected = HashSet::new();
        for _ in 0..60 {
            expected.insert(enqueued(store, &unique_phone(), t0).await.id);
        }
        let mut workers = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_due(t0, 5, WINDOW).await.expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|message| message.id));
                    tokio::task::yield_now().await;
                }
            }));
        }
        let mut claimed = Vec::new();
        for worker in workers {
            claimed.extend(worker.await.expect("worker"));
        }
        let unique_claims: HashSet<Uuid> = claimed.iter().copied().collect();
        assert_eq!(
            unique_claims.len(),
            claimed.len(),
            "a message was claimed twice"
        );
        assert_eq!(unique_claims, expected);
    }
}

/// A store plus whatever must outlive it (the SQLite file's directory, the Postgres database).
struct Fixture<S> {
    store: S,
    _dir: Option<tempfile::TempDir>,
    database: Option<support::TestDatabase>,
}

impl<S: twofold::store::SqlStore + 'static> Fixture<S> {
    /// The same fixture, its store shared as the cache suites take it.
    fn shared(self) -> Fixture<Arc<dyn twofold::store::SqlStore>> {
        Fixture {
            store: Arc::new(self.store),
            _dir: self._dir,
            database: self.database,
        }
    }
}

mod open {
    use super::*;
    use twofold::store::{
        memory::{MemoryCodeStore, MemoryFlowStore},
        postgres::PostgresStore,
        redis::RedisFlowStore,
        redis_codes::RedisCodeStore,
        sqlite::SqliteStore,
    };

    pub async fn postgres() -> Fixture<PostgresStore> {
        let database = support::TestDatabase::create().await;
        let store = PostgresStore::connect(database.dsn())
            .await
            .expect("connect to postgres");
        Fixture {
            store,
            _dir: None,
            database: Some(database),
        }
    }

    pub async fn sqlite_file() -> Fixture<SqliteStore> {
        let dir = tempfile::tempdir().expect("tempdir");
        let dsn = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("twofold.sqlite").display()
        );
        let store = SqliteStore::connect(&dsn).await.expect("open sqlite file");
        Fixture {
            store,
            _dir: Some(dir),
            database: None,
        }
    }

    pub async fn sqlite_memory() -> Fixture<SqliteStore> {
        let store = SqliteStore::connect("memory")
            .await
            .expect("open sqlite memory");
        Fixture {
            store,
            _dir: None,
            database: None,
        }
    }

    pub async fn redis() -> Arc<RedisFlowStore> {
        let store = RedisFlowStore::connect(&support::redis_url(), &support::unique_redis_prefix())
            .await
            .expect("connect to redis");
        Arc::new(store)
    }

    pub async fn memory() -> Arc<MemoryFlowStore> {
        Arc::new(MemoryFlowStore::new())
    }

    pub async fn redis_codes() -> Arc<RedisCodeStore> {
        let store = RedisCodeStore::connect(&support::redis_url(), &support::unique_redis_prefix())
            .await
            .expect("connect to redis");
        Arc::new(store)
    }

    pub async fn memory_codes() -> Arc<MemoryCodeStore> {
        Arc::new(MemoryCodeStore::new())
    }
}

macro_rules! sql_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            sql_suite!(@cases $backend;
                round_trip,
                duplicate_identifier_writes_nothing,
                find_by_identifier_per_kind,
                password_hash,
                list_pagination,
                update_replaces_identifiers_and_keeps_verification,
                update_with_taken_identifier_changes_nothing,
                mark_address_verified,
                delete_cascades,
                sessions,
                upgrade_session,
                session_with_identity,
                concurrent_upgrades_have_one_winner,
                upgrades_sent_at_once
            );
        }
    };
    (@cases $backend:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = open::$backend().await;
                let _ = sql_cases::$case(&fixture.store).await;
            }
        )*
    };
}

macro_rules! flow_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            flow_suite!(@cases $backend;
                create_get_replace,
                concurrent_replacers_have_one_winner,
                expires_after_ttl,
                replace_keeps_remaining_ttl,
                finish_replaces_and_shortens_the_ttl,
                finish_never_extends_the_ttl,
                a_lost_finish_changes_nothing,
                unknown_flow,
                delete_removes_the_flow
            );
        }
    };
    (@cases $backend:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                flow_cases::$case(open::$backend().await).await;
            }
        )*
    };
}

macro_rules! code_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            code_suite!(@cases $backend;
                challenge_round_trip,
                a_deleted_challenge_is_gone,
                an_owned_attempt_counts_only_for_its_owner,
                wrong_codes_count_up_to_max,
                expired_code_is_not_counted,
                right_code_verifies_once,
                a_used_challenge_is_kept_only_a_while,
                concurrent_right_codes_verify_once,
                any_candidate_may_match,
                replace_code,
                challenge_expires_after_ttl,
                remember_request,
                rate_limit_windows,
                rate_limits_counted_together
            );
        }
    };
    (@cases $backend:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                code_cases::$case(open::$backend().await).await;
            }
        )*
    };
}

macro_rules! durable_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            durable_suite!(@cases $backend;
                concurrent_failures_all_count,
                lockout_grows_and_resets,
                failures_expire_with_their_window,
                outbox_lifecycle,
                a_round_finishes_together,
                expired_lease_is_claimed_again,
                a_message_queued_claimed_waits_for_its_lease,
                a_claim_takes_expired_leases_first_within_its_limit,
                abandon,
                list_filters_and_pages,
                concurrent_claimers_never_share,
                config_versions_are_sequential,
                enqueues_sent_at_once
            );
        }
    };
    (@cases $backend:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = open::$backend().await;
                let _ = durable_cases::$case(&fixture.store).await;
            }
        )*
    };
}

sql_suite!(postgres);
sql_suite!(sqlite_file);
sql_suite!(sqlite_memory);
flow_suite!(redis);
flow_suite!(memory);

mod codes {
    use super::*;
    code_suite!(redis_codes);
    code_suite!(memory_codes);
    durable_suite!(postgres);
    durable_suite!(sqlite_file);
    durable_suite!(sqlite_memory);
}

/// `store::open` with the embedded settings needs no servers.
#[tokio::test]
async fn open_embedded_in_memory() {
    let config = twofold::config::Config {
        dsn: Some("memory".into()),
        ..Default::default()
    };
    let stores = twofold::store::open(&config).await.expect("open");
    let identity = new_identity();
    stores
        .identities
        .insert_identity(&identity, None)
        .await
        .expect("insert");
    let at = now();
    let session = session_for(identity.id, at, at + ChronoDuration::hours(1));
    stores
        .sessions
        .insert_session(&session)
        .await
        .expect("insert session");
    assert!(
        stores
            .sessions
            .get_session(session.id)
            .await
            .expect("get")
            .is_some()
    );
    let flow = Uuid::now_v7();
    stores
        .flows
        .create_flow(flow, b"x", Duration::from_secs(5))
        .await
        .expect("create flow");
    assert!(
        stores
            .flows
            .get_flow(flow)
            .await
            .expect("get flow")
            .is_some()
    );
    // The code-engine stores are real backends, not placeholders.
    assert!(
        stores
            .challenges
            .get_challenge(Uuid::now_v7())
            .await
            .expect("get challenge")
            .is_none()
    );
    assert_eq!(
        stores
            .limits
            .hit(&unique(), 1, Duration::from_secs(60), at)
            .await
            .expect("hit"),
        Ok(1)
    );
    let failures = stores
        .budget
        .record_failure(identity.id, at, 5, Duration::from_secs(60))
        .await
        .expect("record failure");
    assert_eq!(failures.failures, 1);
    assert!(
        stores
            .outbox
            .list_messages(None, None, None, 10)
            .await
            .expect("list messages")
            .is_empty()
    );
}

/// `store::open` with Postgres and Redis puts the code-engine stores on them.
#[tokio::test]
async fn open_with_servers() {
    let database = support::TestDatabase::create().await;
    let mut config = twofold::config::Config {
        dsn: Some(database.dsn().to_owned()),
        ..Default::default()
    };
    config.redis.url = Some(support::redis_url());
    let stores = twofold::store::open(&config).await.expect("open");
    let key = format!("open-test:{}", unique());
    let at = now();
    for count in 1..=2 {
        assert_eq!(
            stores
                .limits
                .hit(&key, 5, Duration::from_secs(60), at)
                .await
                .expect("hit"),
            Ok(count)
        );
    }
    assert!(
        stores
            .outbox
            .list_messages(None, None, None, 10)
            .await
            .expect("list messages")
            .is_empty()
    );
}

/// Recently used Postgres connections are handed out without a ping, but one that sat idle is
/// pinged first: a connection the server ended meanwhile (a restart, a proxy's idle cut) is
/// replaced, not handed to a request that would then fail.
#[tokio::test]
async fn postgres_replaces_a_connection_ended_while_idle() {
    use sqlx::Connection;
    use twofold::store::postgres::PostgresStore;
    let database = support::TestDatabase::create().await;
    let dsn = database.dsn();
    let store = PostgresStore::connect(dsn).await.expect("connect");
    let identity = new_identity();
    store
        .insert_identity(&identity, None)
        .await
        .expect("insert");
    // Longer than the store's idle threshold (one second).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut admin = sqlx::PgConnection::connect(dsn)
        .await
        .expect("admin connection");
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("end the store's connections");
    assert!(!ended.is_empty(), "the store held no connection to end");
    assert!(ended.iter().all(|ended| *ended));
    let _ = admin.close().await;
    let found = store
        .get_identity(identity.id)
        .await
        .expect("read after the restart");
    assert_eq!(found.map(|found| found.id), Some(identity.id));
}

/// A courier round finds its messages by key however much the outbox grew since the
/// connection first ran one. Postgres keeps a prepared statement's generic plan, and the one it
/// made for rounds of many messages while the outbox was small joined by scanning all of it:
/// every round then read the whole outbox until the table was next analyzed.
#[tokio::test]
async fn postgres_courier_rounds_do_not_scan_a_grown_outbox() {
    use sqlx::Connection;
    use twofold::store::codes::{AttemptResult, DeliveryAttempt, Outbox};
    /// A courier round's most, as the courier claims them under load.
    const PER_ROUND: usize = 64;
    /// Enough rounds that each of the pool's connections runs more than five, after which
    /// Postgres may settle on a generic plan.
    const ROUNDS: usize = 30;
    const GROWN: i64 = 50_000;
    let database = support::TestDatabase::create().await;
    let (store, mut admin) = postgres_with_admin(&database).await;
    let insert = |count: i64| {
        sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO courier_messages (id, channel, recipient, template_type, locale, \
             sealed_data, status, send_count, next_attempt_at, created_at, updated_at) \
             SELECT gen_random_uuid(), 'sms', '+15550100', 'login_code', 'en', '\\x00', \
             'processing', 0, now(), now(), now() FROM generate_series(1, $1) RETURNING id",
        )
        .bind(count)
    };
    let round = |ids: &[Uuid]| {
        ids.iter()
            .map(|id| {
                let attempt = DeliveryAttempt {
                    message_id: *id,
                    attempted_at: now(),
                    gateway: "sms".into(),
                    succeeded: true,
                    error: None,
                    provider_message_id: None,
                };
                (attempt, AttemptResult::Sent)
            })
            .collect::<Vec<_>>()
    };
    let small = insert((ROUNDS * PER_ROUND) as i64)
        .fetch_all(&mut admin)
        .await
        .expect("a small outbox");
    for ids in small.chunks(PER_ROUND) {
        store.finish_attempts(&round(ids)).await.expect("round");
    }
    let grown = insert(GROWN)
        .fetch_all(&mut admin)
        .await
        .expect("the outbox grows");
    let after = &grown[..ROUNDS * PER_ROUND];
    for ids in after.chunks(PER_ROUND) {
        store.finish_attempts(&round(ids)).await.expect("round");
    }
    // A connection reports its table statistics when it ends (Postgres 15 and later; before,
    // they went by UDP and could be lost).
    store.pool().close().await;
    let scanned = outbox_statistics(&mut admin, small.len() + after.len()).await;
    // Scans of the small outbox read at most all of it each round.
    let most_while_small = (ROUNDS * small.len()) as i64;
    assert!(
        scanned <= most_while_small,
        "the rounds read {} messages by scanning the grown outbox",
        scanned - most_while_small
    );
    let _ = admin.close().await;
}

/// Checks that the rows `ids` of `table`, written at once, took at most half as many
/// transactions as rows, and that every audit event of their identities is in its row's.
async fn shared_commits(admin: &mut sqlx::PgConnection, table: &'static str, ids: &[Uuid]) {
    // `table` is one of the test's own constants, so formatting it in is safe.
    let (transactions, unaligned): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT r.xmin::text), \
                count(*) FILTER (WHERE e.xmin::text <> r.xmin::text) \
         FROM {table} r JOIN audit_events e ON e.identity_id = r.identity_id \
         WHERE r.id = ANY($1)"
    )))
    .bind(ids)
    .fetch_one(admin)
    .await
    .expect("the rows' transactions");
    assert!(
        transactions * 2 <= ids.len() as i64,
        "{} {table} rows written at once took {transactions} transactions",
        ids.len()
    );
    assert_eq!(
        unaligned, 0,
        "an audit event outside its {table} row's transaction"
    );
}

/// On SQLite too, an upgrade sent without its identity does not read it back: those three
/// statements were half of an upgrade's, each an answer the write thread waits for while it
/// holds the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_upgrades_sent_without_their_identity_do_not_read_it() {
    let fixture = open::sqlite_file().await;
    let upgraded = sql_cases::upgrades_sent_at_once(&fixture.store).await;
    assert!(upgraded.sent_without_identity > 0);
    assert_eq!(
        upgraded.identities_unread, upgraded.sent_without_identity,
        "an upgrade sent without its identity does not read it"
    );
}

/// On Postgres, writes sent at once share statements, and so commits: rows written in one
/// transaction carry the same `xmin`. Each audit event is in the transaction of the row it
/// records, so none can outlive or precede its upgrade or message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writes_sent_at_once_share_commits() {
    use sqlx::Connection;
    let database = support::TestDatabase::create().await;
    let (store, mut admin) = postgres_with_admin(&database).await;

    let upgraded = sql_cases::upgrades_sent_at_once(&store).await;
    shared_commits(&mut admin, "sessions", &upgraded.sessions).await;
    assert_eq!(
        upgraded.identities_unread, upgraded.sent_without_identity,
        "a batched upgrade sent without its identity does not read it"
    );
    assert!(upgraded.sent_without_identity > 0);
    // Without a clash: a failed batch's writes run again alone, in transactions of their own.
    let messages = durable_cases::enqueue_at_once(&store, false).await;
    let ids: Vec<Uuid> = messages.iter().map(|message| message.id).collect();
    shared_commits(&mut admin, "courier_messages", &ids).await;
    let _ = admin.close().await;
}

/// A queued code or a session upgrade, sent at once with others of both kinds.
enum DurableWrite {
    Enqueue(
        twofold::store::codes::OutboxMessage,
        twofold::store::codes::AuditEvent,
    ),
    Upgrade {
        identity: Identity,
        session: Session,
        expected_token_hash: Vec<u8>,
        upgrade: SessionUpgrade,
    },
}

/// Ten codes and ten upgrades of stored sessions, interleaved.
async fn codes_and_upgrades<S: SqlStore>(store: &S) -> Vec<DurableWrite> {
    let at = now();
    let mut writes = Vec::new();
    for _ in 0..10 {
        let message = durable_cases::message(&unique_phone(), at);
        let audit = durable_cases::audit_for(&message, at);
        writes.push(DurableWrite::Enqueue(message, audit));
        let (identity, session) = sql_cases::identity_with_session(store).await;
        writes.push(DurableWrite::Upgrade {
            upgrade: sql_cases::upgrade_to_aal2(&identity, session.issued_at),
            expected_token_hash: session.token_hash.clone(),
            identity,
            session,
        });
    }
    writes
}

/// Sends `writes` at once, in their order, and answers each: true for a code queued or a
/// session upgraded, false for an upgrade that found its token gone.
async fn send_at_once<S: SqlStore>(
    store: &S,
    writes: &[DurableWrite],
) -> Vec<Result<bool, StoreError>> {
    futures_util::future::join_all(writes.iter().map(|write| async move {
        match write {
            DurableWrite::Enqueue(message, audit) => {
                store.enqueue(message, audit).await.map(|()| true)
            }
            DurableWrite::Upgrade {
                session,
                expected_token_hash,
                upgrade,
                ..
            } => store
                .upgrade_session(session.id, expected_token_hash, upgrade)
                .await
                .map(|upgraded| upgraded.is_some()),
        }
    }))
    .await
}

/// A Postgres store on `database`, and a connection of the test's own to look at what it wrote.
async fn postgres_with_admin(
    database: &support::TestDatabase,
) -> (twofold::store::postgres::PostgresStore, sqlx::PgConnection) {
    postgres_reached_by_with_admin(database.dsn(), database).await
}

/// The same, with the store reaching `database` by `store_dsn` (its options, say).
async fn postgres_reached_by_with_admin(
    store_dsn: &str,
    database: &support::TestDatabase,
) -> (twofold::store::postgres::PostgresStore, sqlx::PgConnection) {
    use sqlx::Connection;
    let store = twofold::store::postgres::PostgresStore::connect(store_dsn)
        .await
        .expect("connect");
    let admin = sqlx::PgConnection::connect(database.dsn())
        .await
        .expect("admin connection");
    (store, admin)
}

/// Sends `writes` at once, checks that every one was stored with its audit events, and answers
/// the ids of the messages and of the sessions they wrote.
async fn all_stored_at_once<S: SqlStore>(
    store: &S,
    writes: &[DurableWrite],
) -> (Vec<Uuid>, Vec<Uuid>) {
    let answers = send_at_once(store, writes).await;
    assert!(
        answers.iter().all(|answer| matches!(answer, Ok(true))),
        "{answers:?}"
    );
    check_stored(store, writes, answers).await;
    let (mut message_ids, mut session_ids) = (Vec::new(), Vec::new());
    for write in writes {
        match write {
            DurableWrite::Enqueue(message, _) => message_ids.push(message.id),
            DurableWrite::Upgrade { session, .. } => session_ids.push(session.id),
        }
    }
    (message_ids, session_ids)
}

/// Checks that each write was stored with its audit events, except that a code whose answer
/// is an error and an upgrade that answered false wrote nothing at all.
async fn check_stored<S: SqlStore>(
    store: &S,
    writes: &[DurableWrite],
    answers: Vec<Result<bool, StoreError>>,
) {
    for (write, answer) in writes.iter().zip(answers) {
        match (write, answer) {
            (DurableWrite::Enqueue(message, audit), Ok(true)) => {
                let identity_id = message.identity_id.expect("an identity");
                assert_eq!(
                    store.get_message(message.id).await.expect("get").as_ref(),
                    Some(message)
                );
                let audited = store.audit_events(identity_id).await.expect("audit");
                assert_eq!(audited, vec![audit.clone()]);
            }
            (DurableWrite::Enqueue(message, _), Err(_)) => {
                let identity_id = message.identity_id.expect("an identity");
                let audited = store.audit_events(identity_id).await.expect("audit");
                assert_eq!(audited, vec![], "a code not queued is not audited");
            }
            (
                DurableWrite::Upgrade {
                    identity,
                    session,
                    upgrade,
                    ..
                },
                Ok(upgraded),
            ) => {
                let stored = store.get_session(session.id).await.expect("get");
                let audited = store.audit_events(identity.id).await.expect("audit");
                if upgraded {
                    let stored = stored.expect("stored");
                    assert_eq!(stored.token_hash, upgrade.new_token_hash);
                    assert_eq!(stored.aal, Aal::Aal2);
                    assert_eq!(audited, upgrade.audit);
                } else {
                    assert_eq!(stored.as_ref(), Some(session), "a lost upgrade wrote");
                    assert_eq!(audited, vec![], "a lost upgrade is not audited");
                }
            }
            (write, answer) => panic!(
                "{} answered {answer:?}",
                match write {
                    DurableWrite::Enqueue(..) => "a code",
                    DurableWrite::Upgrade { .. } => "an upgrade",
                }
            ),
        }
    }
}

/// On Postgres, queued codes and session upgrades sent at once share statements, and so
/// commits, with each other: a message row and a session row carry the same `xmin`, and each
/// audit event is in the transaction of the row it records. A batch that fails (one code's id
/// is taken) is written again one by one, so only that code fails; an upgrade whose token is
/// gone writes nothing, beside codes and upgrades that are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_codes_and_upgrades_sent_at_once_share_commits() {
    use sqlx::Connection;
    let database = support::TestDatabase::create().await;
    let (store, mut admin) = postgres_with_admin(&database).await;

    let writes = codes_and_upgrades(&store).await;
    let (message_ids, session_ids) = all_stored_at_once(&store, &writes).await;
    shared_commits(&mut admin, "courier_messages", &message_ids).await;
    shared_commits(&mut admin, "sessions", &session_ids).await;
    let (shared,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT m.xmin::text) FROM courier_messages m \
         JOIN sessions s ON s.xmin::text = m.xmin::text \
         WHERE m.id = ANY($1) AND s.id = ANY($2)",
    )
    .bind(&message_ids)
    .bind(&session_ids)
    .fetch_one(&mut admin)
    .await
    .expect("the transactions both kinds share");
    assert!(shared > 0, "no code was committed with an upgrade");

    let mut writes = codes_and_upgrades(&store).await;
    let (clash, stale) = (8, 11);
    match (&mut writes[clash], message_ids[0]) {
        (DurableWrite::Enqueue(message, _), taken) => message.id = taken,
        _ => unreachable!("codes are at even places"),
    }
    match &mut writes[stale] {
        DurableWrite::Upgrade {
            expected_token_hash,
            ..
        } => *expected_token_hash = token_hash(),
        _ => unreachable!("upgrades are at odd places"),
    }
    let answers = send_at_once(&store, &writes).await;
    for (index, answer) in answers.iter().enumerate() {
        match index {
            _ if index == clash => assert!(answer.is_err(), "a taken id must fail"),
            _ if index == stale => assert!(matches!(answer, Ok(false)), "{answer:?}"),
            _ => assert!(matches!(answer, Ok(true)), "write {index}: {answer:?}"),
        }
    }
    check_stored(&store, &writes, answers).await;
    let _ = admin.close().await;
}

/// Over a Unix socket a batch takes up to 32 writes, four times what it takes over TCP (see
/// `MOST_PER_BATCH_OVER_SOCKET`): eighty codes and upgrades sent at once are all stored with their
/// audit events, and the rows they wrote share transactions of more than eight rows, none of more
/// than 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_over_a_socket_a_batch_takes_up_to_32_writes() {
    use sqlx::Connection;
    let database = support::TestDatabase::create_reached_by_socket().await;
    let (store, mut admin) = postgres_with_admin(&database).await;
    let mut writes = Vec::new();
    for _ in 0..4 {
        writes.extend(codes_and_upgrades(&store).await);
    }

    let (message_ids, session_ids) = all_stored_at_once(&store, &writes).await;
    let (largest,): (i64,) = sqlx::query_as(
        "SELECT max(rows) FROM (SELECT count(*) AS rows FROM ( \
             SELECT xmin::text AS transaction FROM courier_messages WHERE id = ANY($1) \
             UNION ALL SELECT xmin::text FROM sessions WHERE id = ANY($2)) written \
         GROUP BY transaction) per_transaction",
    )
    .bind(&message_ids)
    .bind(&session_ids)
    .fetch_one(&mut admin)
    .await
    .expect("rows per transaction");
    assert!(
        (9..=32).contains(&largest),
        "the largest transaction of 80 writes sent at once wrote {largest} rows"
    );
    let _ = admin.close().await;
}

/// A store on `database` whose connections wait 300 ms for a locked row (the DSN's own
/// `lock_timeout`), and a connection for another transaction to hold rows with.
async fn impatient_postgres(
    database: &support::TestDatabase,
) -> (twofold::store::postgres::PostgresStore, sqlx::PgConnection) {
    let dsn = database.dsn();
    let separator = if dsn.contains('?') { '&' } else { '?' };
    let impatient = format!("{dsn}{separator}options=-c%20lock_timeout%3D300ms");
    postgres_reached_by_with_admin(&impatient, database).await
}

/// On Postgres, an upgrade of a session that another transaction holds locked gives up after the
/// lock timeout (here the DSN's own, 300 ms) with `LockTimedOut` and writes nothing, while the
/// writes sent beside it, batched with it or not, are stored. Once the other transaction ends the
/// same upgrades go through: nothing was lost. Without a lock timeout they waited for as long as
/// the other transaction stayed open, and every write batched with them did too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_upgrade_of_a_row_locked_elsewhere_times_out_and_the_rest_are_stored() {
    use sqlx::Connection;
    let database = support::TestDatabase::create().await;
    let (store, mut holder) = impatient_postgres(&database).await;
    let writes = codes_and_upgrades(&store).await;
    // Two of the ten upgrades (the writes alternate: a code, then an upgrade).
    let locked_ids: Vec<Uuid> = [&writes[1], &writes[5]]
        .into_iter()
        .map(|write| match write {
            DurableWrite::Upgrade { session, .. } => session.id,
            DurableWrite::Enqueue(..) => unreachable!("codes and upgrades alternate"),
        })
        .collect();
    let is_locked = |write: &DurableWrite| match write {
        DurableWrite::Upgrade { session, .. } => locked_ids.contains(&session.id),
        DurableWrite::Enqueue(..) => false,
    };
    let mut other = holder.begin().await.expect("begin");
    sqlx::query("SELECT id FROM sessions WHERE id = ANY($1) FOR UPDATE")
        .bind(&locked_ids)
        .fetch_all(&mut *other)
        .await
        .expect("lock two sessions");

    let answers = tokio::time::timeout(Duration::from_secs(30), send_at_once(&store, &writes))
        .await
        .expect("no write waited for the lock past its timeout");
    let (locked, others): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .zip(answers)
        .partition(|(write, _)| is_locked(write));
    let (locked, locked_answers): (Vec<_>, Vec<_>) = locked.into_iter().unzip();
    for answer in &locked_answers {
        assert!(
            matches!(answer, Err(StoreError::LockTimedOut(_))),
            "{answer:?}"
        );
    }
    let (others, others_answers): (Vec<_>, Vec<_>) = others.into_iter().unzip();
    assert!(
        others_answers
            .iter()
            .all(|answer| matches!(answer, Ok(true))),
        "{others_answers:?}"
    );
    check_stored(&store, &others, others_answers).await;
    let nothing_written = locked_answers.iter().map(|_| Ok(false)).collect();
    check_stored(&store, &locked, nothing_written).await;

    other.rollback().await.expect("the other transaction ends");
    all_stored_at_once(&store, &locked).await;
    let _ = holder.close().await;
}

/// On Postgres, a wrong code's count waits for the failure state's lock past the store's lock
/// timeout (here 300 ms, while another transaction holds the row for a second), and so does a
/// reset: a count given up on would go uncounted (G2), and a reset given up on would refuse a
/// right code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_failure_budget_waits_for_its_lock_past_the_lock_timeout() {
    use sqlx::Connection;
    use twofold::store::codes::FailureBudgetStore;
    let database = support::TestDatabase::create().await;
    let (store, mut holder) = impatient_postgres(&database).await;
    let identity_id = durable_cases::stored_identity(&store).await;
    let (at, window) = (now(), Duration::from_secs(3600));
    store
        .record_failure(identity_id, at, 1000, window)
        .await
        .expect("the first failure");

    let counted = while_its_failure_state_is_locked(
        &mut holder,
        identity_id,
        store.record_failure(identity_id, at, 1000, window),
    )
    .await;
    assert_eq!(counted.expect("counted once the row was free").failures, 2);
    let reset = while_its_failure_state_is_locked(
        &mut holder,
        identity_id,
        store.reset_failures(identity_id),
    )
    .await;
    reset.expect("reset once the row was free");
    assert_eq!(
        store
            .failure_state(identity_id, at)
            .await
            .expect("state")
            .failures,
        0
    );
    let _ = holder.close().await;
}

/// Runs `write` while another transaction, on `holder`, holds the failure state of
/// `identity_id` for a second; answers what `write` answered.
async fn while_its_failure_state_is_locked<T>(
    holder: &mut sqlx::PgConnection,
    identity_id: Uuid,
    write: impl std::future::Future<Output = T>,
) -> T {
    use sqlx::Connection;
    let mut other = holder.begin().await.expect("begin");
    sqlx::query("SELECT failures FROM identity_code_failures WHERE identity_id = $1 FOR UPDATE")
        .bind(identity_id)
        .fetch_one(&mut *other)
        .await
        .expect("lock the failure state");
    let held_for_a_second = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        other.commit().await
    };
    let (written, ended) = tokio::join!(write, held_for_a_second);
    ended.expect("the other transaction ends");
    written
}

/// The store's own connections wait a second for a locked row: Postgres takes the option as
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_stores_connections_wait_a_second_for_a_locked_row() {
    let database = support::TestDatabase::create().await;
    let store = twofold::store::postgres::PostgresStore::connect(database.dsn())
        .await
        .expect("connect");
    let (waits,): (String,) = sqlx::query_as("SHOW lock_timeout")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(waits, "1s");
}

/// On Postgres, a lone upgrade sent without its identity (the session cache holds it already)
/// writes what any upgrade writes, and leaves the identity unread: the answer has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_lone_upgrade_without_its_identity_leaves_it_unread() {
    use twofold::store::codes::Outbox;
    use twofold::store::postgres::PostgresStore;
    let database = support::TestDatabase::create().await;
    let store = PostgresStore::connect(database.dsn())
        .await
        .expect("connect");
    let (identity, session) = sql_cases::identity_with_session(&store).await;
    let upgrade = sql_cases::upgrade_to_aal2(&identity, session.issued_at);

    let upgraded = store
        .upgrade_session_without_identity(session.id, &session.token_hash, &upgrade)
        .await
        .expect("upgrade")
        .expect("upgraded");
    assert_eq!(upgraded.identity, None, "the identity was not read");
    assert_eq!(upgraded.session.token_hash, upgrade.new_token_hash);
    assert_eq!(upgraded.session.aal, Aal::Aal2);
    let (stored, stored_identity) = store
        .find_with_identity(&upgrade.new_token_hash)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(stored, upgraded.session);
    assert!(
        stored_identity
            .verifiable_addresses
            .iter()
            .any(|address| address.value == email_of(&identity) && address.verified)
    );
    assert_eq!(
        store.audit_events(identity.id).await.expect("audit"),
        upgrade.audit
    );
}

/// A step-up whose address is already verified leaves the address row alone: rewriting it on
/// every step-up cost a row version and its WAL record for nothing. An address marked verified
/// without a time still gets the upgrade's. Each backend counts the row's writes with a trigger.
async fn a_verified_address_is_written_by_its_first_upgrade_only<S: SqlStore>(
    store: &S,
    mut address_writes: impl AsyncFnMut() -> i64,
    mut forget_verified_at: impl AsyncFnMut(&str),
) {
    let identity = new_identity();
    store
        .insert_identity(&identity, None)
        .await
        .expect("insert");
    let email = email_of(&identity);
    let verified_at = async |store: &S| {
        let stored = store
            .get_identity(identity.id)
            .await
            .expect("read")
            .expect("identity");
        let address = stored
            .verifiable_addresses
            .iter()
            .find(|address| address.value == email)
            .expect("email address")
            .clone();
        assert!(address.verified);
        address.verified_at
    };
    let start = now();
    let session = session_for(identity.id, start, start + ChronoDuration::hours(1));
    store
        .insert_session(&session)
        .await
        .expect("insert session");
    let mut token = session.token_hash.clone();
    let mut upgrade_at = async |at: DateTime<Utc>| {
        let upgrade = sql_cases::upgrade_to_aal2(&identity, at);
        let upgraded = store
            .upgrade_session(session.id, &token, &upgrade)
            .await
            .expect("upgrade");
        assert!(upgraded.is_some(), "the session was upgraded");
        token = upgrade.new_token_hash;
    };
    assert_eq!(address_writes().await, 0);
    let mut upgraded_then = async |at, writes: i64, verified: DateTime<Utc>, why: &str| {
        upgrade_at(at).await;
        assert_eq!(address_writes().await, writes, "{why}");
        assert_eq!(verified_at(store).await, Some(verified), "{why}");
    };

    let first = start + ChronoDuration::seconds(1);
    upgraded_then(first, 1, first, "the first upgrade verifies the address").await;
    upgraded_then(
        start + ChronoDuration::seconds(2),
        1,
        first,
        "an address already verified is not written again and keeps its first time",
    )
    .await;
    // One more write, by the test.
    forget_verified_at(&email).await;
    let third = start + ChronoDuration::seconds(3);
    upgraded_then(
        third,
        3,
        third,
        "verified without a time: the upgrade gives it one",
    )
    .await;
}

/// Runs [`a_verified_address_is_written_by_its_first_upgrade_only`] on `$store`, counting the
/// address rows' writes with `$trigger` and forgetting a time with `$forget` through connections
/// of type `$connection` (the backends differ only in this SQL).
macro_rules! count_address_writes_of_upgrades {
    ($store:expr, $connection:ty, $dsn:expr, $trigger:expr, $forget:expr) => {{
        use sqlx::Connection;
        let mut counter = <$connection>::connect($dsn).await.expect("connect");
        sqlx::raw_sql($trigger)
            .execute(&mut counter)
            .await
            .expect("count address writes");
        let mut editor = <$connection>::connect($dsn).await.expect("connect");
        a_verified_address_is_written_by_its_first_upgrade_only(
            &$store,
            async || {
                sqlx::query_scalar("SELECT n FROM address_writes")
                    .fetch_one(&mut counter)
                    .await
                    .expect("count")
            },
            async |value: &str| {
                sqlx::query($forget)
                    .bind(value)
                    .execute(&mut editor)
                    .await
                    .expect("forget the time");
            },
        )
        .await;
    }};
}

#[tokio::test]
async fn postgres_a_verified_address_is_written_by_its_first_upgrade_only() {
    use twofold::store::postgres::PostgresStore;
    let database = support::TestDatabase::create().await;
    let dsn = database.dsn();
    let store = PostgresStore::connect(dsn).await.expect("connect");
    count_address_writes_of_upgrades!(
        store,
        sqlx::PgConnection,
        dsn,
        "CREATE TABLE address_writes (n bigint NOT NULL); \
         INSERT INTO address_writes VALUES (0); \
         CREATE FUNCTION count_address_write() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN UPDATE address_writes SET n = n + 1; RETURN NULL; END $$; \
         CREATE TRIGGER count_address_writes AFTER UPDATE ON identity_verifiable_addresses \
             FOR EACH ROW EXECUTE FUNCTION count_address_write();",
        "UPDATE identity_verifiable_addresses SET verified_at = NULL WHERE value = $1"
    );
}

#[tokio::test]
async fn sqlite_a_verified_address_is_written_by_its_first_upgrade_only() {
    use twofold::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("twofold.sqlite").display()
    );
    let store = SqliteStore::connect(&dsn).await.expect("open sqlite file");
    count_address_writes_of_upgrades!(
        store,
        sqlx::SqliteConnection,
        &dsn,
        "CREATE TABLE address_writes (n INTEGER NOT NULL); \
         INSERT INTO address_writes VALUES (0); \
         CREATE TRIGGER count_address_writes AFTER UPDATE ON identity_verifiable_addresses \
         BEGIN UPDATE address_writes SET n = n + 1; END;",
        "UPDATE identity_verifiable_addresses SET verified_at = NULL WHERE value = ?1"
    );
}

/// The rows scanned in `courier_messages` so far, once its statistics show `updated` updates.
async fn outbox_statistics(admin: &mut sqlx::PgConnection, updated: usize) -> i64 {
    let mut reported = (0_i64, 0_i64);
    for _ in 0..100 {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *admin)
            .await
            .expect("fresh statistics");
        reported = sqlx::query_as(
            "SELECT n_tup_upd, seq_tup_read FROM pg_stat_user_tables \
             WHERE relname = 'courier_messages'",
        )
        .fetch_one(&mut *admin)
        .await
        .expect("table statistics");
        if reported.0 >= updated as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reported.0, updated as i64,
        "every round's update was reported"
    );
    reported.1
}

/// A server that is not there is `Unavailable` (retry later), not `Internal` (a bug).
#[tokio::test]
async fn unreachable_servers_are_unavailable() {
    use twofold::store::{postgres::PostgresStore, redis::RedisFlowStore};
    // Port 1 on loopback refuses connections at once.
    let started = std::time::Instant::now();
    match PostgresStore::connect("postgres://postgres:postgres@127.0.0.1:1/postgres").await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable from postgres, got {other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    match RedisFlowStore::connect("redis://127.0.0.1:1", "unused:").await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable from redis, got {other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "giving up took {:?}",
        started.elapsed()
    );
}

/// A Redis that accepts connections but never answers must not hang the caller.
#[tokio::test]
async fn silent_redis_times_out() {
    use twofold::store::redis::RedisFlowStore;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let outcome = match RedisFlowStore::connect(&format!("redis://{address}"), "unused:").await {
        Ok(store) => store.get_flow(Uuid::now_v7()).await.map(|_| ()),
        Err(error) => Err(error),
    };
    match outcome {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "giving up took {:?}",
        started.elapsed()
    );
    accepted.abort();
}

/// The session cache (`store::session_cache`) in front of a real SQL store: two caches sharing
/// one set of versions stand for two replicas. Each case first shows that an answer really is
/// served from the cache (a change written behind its back stays unseen), then that a change
/// made through either cache is seen by the other at once.
mod session_cache_cases {
    use super::*;
    use twofold::store::SqlStore;
    use twofold::store::session_cache::{CachedSessions, VersionKey, Versions};

    pub struct Replicas {
        pub inner: Arc<dyn SqlStore>,
        pub one: CachedSessions,
        pub two: CachedSessions,
        _database: Option<support::TestDatabase>,
    }

    impl Replicas {
        pub fn new(inner: Arc<dyn SqlStore>, versions: Arc<dyn Versions>) -> Self {
            Self {
                one: CachedSessions::new(inner.clone(), versions.clone()),
                two: CachedSessions::new(inner.clone(), versions),
                inner,
                _database: None,
            }
        }

        /// These replicas with the database their store must not outlive.
        pub fn keeping(self, database: Option<support::TestDatabase>) -> Self {
            Self {
                _database: database,
                ..self
            }
        }
    }

    async fn answer(cache: &CachedSessions, token_hash: &[u8]) -> Option<(Session, Identity)> {
        cache.find_with_identity(token_hash).await.expect("find")
    }

    /// An identity with a session, and that session's answer cached in `cache`.
    async fn cached_session(replicas: &Replicas, cache: &CachedSessions) -> (Identity, Session) {
        let identity = new_identity();
        replicas
            .inner
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        replicas
            .inner
            .insert_session(&session)
            .await
            .expect("insert session");
        // The first sight learns whose token it is, the second caches the answer.
        for _ in 0..2 {
            assert_eq!(
                answer(cache, &session.token_hash).await.map(|(s, _)| s),
                Some(session.clone())
            );
        }
        (identity, session)
    }

    fn email_verified(found: &Option<(Session, Identity)>) -> bool {
        found.as_ref().expect("answer").1.verifiable_addresses[0].verified
    }

    pub async fn revocation_through_one_replica_holds_on_the_other(replicas: &Replicas) {
        let (identity, session) = cached_session(replicas, &replicas.one).await;
        // Behind the caches' back: the cached answer does not change.
        assert!(
            replicas
                .inner
                .mark_address_verified(identity.id, &email_of(&identity), now())
                .await
                .expect("mark")
        );
        assert!(!email_verified(
            &answer(&replicas.one, &session.token_hash).await
        ));

        assert!(
            replicas
                .two
                .revoke_session(session.id, now())
                .await
                .expect("revoke")
        );
        let after = answer(&replicas.one, &session.token_hash).await;
        assert!(after.as_ref().expect("answer").0.revoked_at.is_some());
        assert!(email_verified(&after), "the answer was read again");
    }

    pub async fn an_upgrade_retires_the_old_tokens_answer(replicas: &Replicas) {
        let (identity, session) = cached_session(replicas, &replicas.one).await;
        let upgrade = sql_cases::upgrade_to_aal2(&identity, now());
        assert!(
            replicas
                .two
                .upgrade_session(session.id, &session.token_hash, &upgrade)
                .await
                .expect("upgrade")
                .is_some()
        );
        assert_eq!(answer(&replicas.one, &session.token_hash).await, None);
        let upgraded = answer(&replicas.one, &upgrade.new_token_hash).await;
        assert_eq!(upgraded.as_ref().expect("answer").0.aal, Aal::Aal2);
        assert!(email_verified(&upgraded));
    }

    pub async fn the_write_after_an_upgrade_follows_its_commit(replicas: &Replicas) {
        let (identity, session) = cached_session(replicas, &replicas.one).await;
        write_after_upgrade(replicas, &replicas.two, &identity, &session).await;
        assert_eq!(answer(&replicas.one, &session.token_hash).await, None);
        // A store without the cache (the trait's own method) keeps the same order.
        let (identity, session) = cached_session(replicas, &replicas.one).await;
        write_after_upgrade(replicas, &*replicas.inner, &identity, &session).await;
    }

    /// Upgrades `session` through `store` twice, first with a token that is not its own, each
    /// time with a write after the upgrade: it must run only for the upgrade that happened, and
    /// only once that upgrade is in SQL.
    async fn write_after_upgrade<S: SessionStore + ?Sized>(
        replicas: &Replicas,
        store: &S,
        identity: &Identity,
        session: &Session,
    ) {
        let upgrade = sql_cases::upgrade_to_aal2(identity, now());
        let ran = std::sync::atomic::AtomicBool::new(false);
        let after = || {
            Box::pin(async {
                let committed = replicas
                    .inner
                    .find_by_token_hash(&upgrade.new_token_hash)
                    .await
                    .expect("read");
                assert_eq!(committed.expect("upgraded").aal, Aal::Aal2);
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
            }) as twofold::store::AfterUpgrade<'_>
        };
        let refused = store
            .upgrade_session_then(session.id, &token_hash(), &upgrade, after())
            .await
            .expect("upgrade");
        assert!(refused.is_none());
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "not run when the guard failed"
        );
        let upgraded = store
            .upgrade_session_then(session.id, &session.token_hash, &upgrade, after())
            .await
            .expect("upgrade");
        assert!(upgraded.is_some());
        assert!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            "run, and done"
        );
    }

    pub async fn identity_changes_reach_every_sessions_answer(replicas: &Replicas) {
        let (identity, first) = cached_session(replicas, &replicas.one).await;
        let now = now();
        let second = session_for(identity.id, now, now + ChronoDuration::hours(1));
        replicas
            .inner
            .insert_session(&second)
            .await
            .expect("insert session");
        for _ in 0..2 {
            assert!(answer(&replicas.one, &second.token_hash).await.is_some());
        }

        assert!(
            replicas
                .two
                .mark_address_verified(identity.id, &email_of(&identity), now)
                .await
                .expect("mark")
        );
        assert!(email_verified(
            &answer(&replicas.one, &first.token_hash).await
        ));
        assert!(email_verified(
            &answer(&replicas.one, &second.token_hash).await
        ));

        assert_eq!(
            replicas
                .two
                .revoke_identity_sessions(identity.id, now)
                .await
                .expect("revoke all"),
            2
        );
        for token_hash in [&first.token_hash, &second.token_hash] {
            let revoked = answer(&replicas.one, token_hash).await;
            assert!(revoked.expect("answer").0.revoked_at.is_some());
        }

        assert!(
            replicas
                .two
                .delete_identity(identity.id)
                .await
                .expect("delete")
        );
        assert_eq!(answer(&replicas.one, &first.token_hash).await, None);
        assert_eq!(answer(&replicas.one, &second.token_hash).await, None);
    }

    /// A token this replica issued (or rotated) is cached from its first lookup: the owner is
    /// known without asking SQL.
    pub async fn tokens_issued_here_are_cached_from_their_first_lookup(replicas: &Replicas) {
        let identity = new_identity();
        replicas
            .inner
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        replicas
            .one
            .insert_session(&session)
            .await
            .expect("insert session");
        assert!(!email_verified(
            &answer(&replicas.one, &session.token_hash).await
        ));
        // Behind the caches' back: the answer read at the first lookup is served again.
        assert!(
            replicas
                .inner
                .mark_address_verified(identity.id, &email_of(&identity), now)
                .await
                .expect("mark")
        );
        assert!(!email_verified(
            &answer(&replicas.one, &session.token_hash).await
        ));

        let upgrade = sql_cases::upgrade_to_aal2(&identity, now);
        assert!(
            replicas
                .one
                .upgrade_session(session.id, &session.token_hash, &upgrade)
                .await
                .expect("upgrade")
                .is_some()
        );
        let upgraded = answer(&replicas.one, &upgrade.new_token_hash).await;
        assert_eq!(upgraded.as_ref().expect("answer").0.aal, Aal::Aal2);
        assert!(
            replicas
                .inner
                .revoke_session(session.id, now)
                .await
                .expect("revoke")
        );
        let cached = answer(&replicas.one, &upgrade.new_token_hash).await;
        assert_eq!(
            cached.expect("answer").0.revoked_at,
            None,
            "served from the cache"
        );
        // The other replica never saw these tokens: it reads SQL.
        let elsewhere = answer(&replicas.two, &upgrade.new_token_hash).await;
        assert!(elsewhere.expect("answer").0.revoked_at.is_some());
    }

    /// The upgrade reads the new token's answer as it writes, and the cache keeps it: the first
    /// lookup of the new token reads no SQL, and a change through the other replica is still
    /// seen at once.
    pub async fn an_upgrade_caches_the_new_tokens_answer_at_once(replicas: &Replicas) {
        let (identity, session) = cached_session(replicas, &replicas.one).await;
        let (upgrade, first) = upgrade_then_revoke_behind(replicas, &identity, &session).await;
        let first = first.expect("answer");
        assert_eq!(
            (first.0.aal, first.0.revoked_at),
            (Aal::Aal2, None),
            "served from the upgrade's own answer"
        );
        assert!(first.1.verifiable_addresses[0].verified);

        replicas
            .two
            .revoke_session(session.id, now())
            .await
            .expect("revoke");
        let after = answer(&replicas.one, &upgrade.new_token_hash).await;
        assert!(after.expect("answer").0.revoked_at.is_some());
    }

    /// A change announced while an upgrade was under way may be missing from the answer the
    /// upgrade read: that answer is not kept, and the new token's first lookup reads SQL.
    pub async fn an_upgrade_racing_another_change_keeps_no_answer(inner: Arc<dyn SqlStore>) {
        let versions = Arc::new(Flaky::new());
        versions
            .interleave
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let replicas = Replicas::new(inner, versions);
        let (identity, session) = cached_session(&replicas, &replicas.one).await;
        // The change that was announced in between is the revocation behind the caches' back.
        let (_, first) = upgrade_then_revoke_behind(&replicas, &identity, &session).await;
        assert!(
            first.expect("answer").0.revoked_at.is_some(),
            "read from SQL, not from the upgrade"
        );
    }

    /// Upgrades `session` through replica one, revokes it behind the caches' back before the new
    /// token was ever looked up, and returns the new token's first answer from replica one.
    async fn upgrade_then_revoke_behind(
        replicas: &Replicas,
        identity: &Identity,
        session: &Session,
    ) -> (SessionUpgrade, Option<(Session, Identity)>) {
        let upgrade = sql_cases::upgrade_to_aal2(identity, now());
        assert!(
            replicas
                .one
                .upgrade_session(session.id, &session.token_hash, &upgrade)
                .await
                .expect("upgrade")
                .is_some()
        );
        assert!(
            replicas
                .inner
                .revoke_session(session.id, now())
                .await
                .expect("revoke")
        );
        let first = answer(&replicas.one, &upgrade.new_token_hash).await;
        (upgrade, first)
    }

    /// An upgrade of a session whose answer is cached starts its compare-and-set from that
    /// answer's versions, read no versions of its own, and keeps the new token's answer. A change
    /// announced since the answer was cached (here without the lookup that would have noticed
    /// it) fails the compare-and-set: the upgrade's answer is not kept.
    pub async fn an_upgrade_starts_from_the_cached_answers_versions(inner: Arc<dyn SqlStore>) {
        use std::sync::atomic::Ordering;
        let versions = Arc::new(Flaky::new());
        let replicas = Replicas::new(inner, versions.clone());

        let (identity, session) = cached_session(&replicas, &replicas.one).await;
        let reads_before = versions.current_reads.load(Ordering::SeqCst);
        // The revocation behind the caches' back is not seen by the kept answer.
        let (_, kept) = upgrade_then_revoke_behind(&replicas, &identity, &session).await;
        assert_eq!(
            versions.current_reads.load(Ordering::SeqCst),
            reads_before,
            "no versions read for the upgrade"
        );
        assert_eq!(
            kept.expect("answer").0.revoked_at,
            None,
            "served from the upgrade"
        );

        let (identity, session) = cached_session(&replicas, &replicas.one).await;
        assert!(
            replicas
                .two
                .mark_address_verified(identity.id, &email_of(&identity), now())
                .await
                .expect("mark")
        );
        let (_, first) = upgrade_then_revoke_behind(&replicas, &identity, &session).await;
        assert!(
            first.expect("answer").0.revoked_at.is_some(),
            "read from SQL, not from the upgrade"
        );
    }

    /// In-process versions that can be switched off, like a Redis that goes away and comes back,
    /// or made to let another replica's announcement land just before an upgrade's own.
    pub struct Flaky {
        pub inner: twofold::store::session_cache::MemoryVersions,
        pub down: std::sync::atomic::AtomicBool,
        /// Every `replace` finds the identity's version changed since it was read.
        pub interleave: std::sync::atomic::AtomicBool,
        /// How many times `current` was called.
        pub current_reads: std::sync::atomic::AtomicUsize,
    }

    impl Flaky {
        pub fn new() -> Self {
            Self {
                inner: twofold::store::session_cache::MemoryVersions::new(),
                down: std::sync::atomic::AtomicBool::new(false),
                interleave: std::sync::atomic::AtomicBool::new(false),
                current_reads: std::sync::atomic::AtomicUsize::new(0),
            }
        }

        fn check(&self) -> twofold::store::StoreResult<()> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(StoreError::Unavailable("versions down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl Versions for Flaky {
        async fn current(&self, keys: [VersionKey; 2]) -> twofold::store::StoreResult<[u64; 2]> {
            self.current_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.check()?;
            self.inner.current(keys).await
        }

        async fn unchanged(
            &self,
            keys: [VersionKey; 2],
            seen: [u64; 2],
        ) -> twofold::store::StoreResult<bool> {
            self.check()?;
            self.inner.unchanged(keys, seen).await
        }

        async fn bump(&self, keys: &[VersionKey]) -> twofold::store::StoreResult<()> {
            self.check()?;
            self.inner.bump(keys).await
        }

        async fn replace(
            &self,
            keys: [VersionKey; 2],
            seen: [u64; 2],
        ) -> twofold::store::StoreResult<Option<[u64; 2]>> {
            self.check()?;
            if self.interleave.load(std::sync::atomic::Ordering::SeqCst) {
                self.inner.bump(&keys[1..]).await?;
            }
            self.inner.replace(keys, seen).await
        }
    }

    /// A revocation made while versions are unreachable is done, and announced in the background
    /// once they are back.
    pub async fn an_announcement_that_failed_is_retried(inner: Arc<dyn SqlStore>) {
        use std::sync::atomic::Ordering;
        let flaky = Arc::new(Flaky::new());
        let replicas = Replicas::new(inner, flaky.clone());
        let (_, session) = cached_session(&replicas, &replicas.one).await;

        flaky.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            replicas.two.revoke_session(session.id, now()).await,
            Ok(true)
        ));
        // Replica one does not look while versions are away (looking would make it forget its
        // answers); its cached answer still holds the versions from before the revocation.
        flaky.down.store(false, Ordering::SeqCst);
        let started = std::time::Instant::now();
        loop {
            let after = answer(&replicas.one, &session.token_hash).await;
            if after.expect("answer").0.revoked_at.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the revocation was never announced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Once versions could not be read, a replica forgets its cached answers: versions lost in
    /// the outage must not make an old answer match again.
    pub async fn a_versions_outage_forgets_cached_answers(inner: Arc<dyn SqlStore>) {
        use std::sync::atomic::Ordering;
        let flaky = Arc::new(Flaky::new());
        let replicas = Replicas::new(inner, flaky.clone());
        let (identity, session) = cached_session(&replicas, &replicas.one).await;
        flaky.down.store(true, Ordering::SeqCst);
        assert!(answer(&replicas.one, &session.token_hash).await.is_some());
        // Behind the caches' back, as if the announcement had been lost with the outage.
        assert!(
            replicas
                .inner
                .mark_address_verified(identity.id, &email_of(&identity), now())
                .await
                .expect("mark")
        );
        flaky.down.store(false, Ordering::SeqCst);
        assert!(email_verified(
            &answer(&replicas.one, &session.token_hash).await
        ));
    }

    /// Versions that cannot be read or written, like a Redis that is down.
    pub struct Unreachable;

    #[async_trait::async_trait]
    impl Versions for Unreachable {
        async fn current(&self, _: [VersionKey; 2]) -> twofold::store::StoreResult<[u64; 2]> {
            Err(StoreError::Unavailable("versions down".into()))
        }

        async fn unchanged(
            &self,
            _: [VersionKey; 2],
            _: [u64; 2],
        ) -> twofold::store::StoreResult<bool> {
            Err(StoreError::Unavailable("versions down".into()))
        }

        async fn bump(&self, _: &[VersionKey]) -> twofold::store::StoreResult<()> {
            Err(StoreError::Unavailable("versions down".into()))
        }

        async fn replace(
            &self,
            _: [VersionKey; 2],
            _: [u64; 2],
        ) -> twofold::store::StoreResult<Option<[u64; 2]>> {
            Err(StoreError::Unavailable("versions down".into()))
        }
    }

    /// Without versions every answer comes from SQL, and a change that cannot be announced is
    /// still done (it committed; the announcement is retried in the background).
    pub async fn without_versions_answers_come_from_sql(inner: Arc<dyn SqlStore>) {
        let replicas = Replicas::new(inner, Arc::new(Unreachable));
        let identity = new_identity();
        replicas
            .inner
            .insert_identity(&identity, None)
            .await
            .expect("insert");
        let now = now();
        let session = session_for(identity.id, now, now + ChronoDuration::hours(1));
        replicas
            .inner
            .insert_session(&session)
            .await
            .expect("insert session");
        for _ in 0..3 {
            assert!(answer(&replicas.one, &session.token_hash).await.is_some());
        }
        assert!(
            replicas
                .inner
                .revoke_session(session.id, now)
                .await
                .expect("revoke")
        );
        let after = answer(&replicas.one, &session.token_hash).await;
        assert!(after.expect("answer").0.revoked_at.is_some());
        assert!(matches!(
            replicas
                .two
                .revoke_identity_sessions(identity.id, now)
                .await,
            Ok(0)
        ));
        let second = session_for(identity.id, now, now + ChronoDuration::hours(1));
        replicas
            .inner
            .insert_session(&second)
            .await
            .expect("insert session");
        // The revocation committed; its announcement is retried in the background.
        assert!(matches!(
            replicas.two.revoke_session(second.id, now).await,
            Ok(true)
        ));
    }
}

macro_rules! session_cache_suite {
    ($backend:ident, $replicas:expr, $inner:expr) => {
        mod $backend {
            use super::session_cache_cases::*;
            session_cache_suite!(@cases $replicas;
                revocation_through_one_replica_holds_on_the_other,
                an_upgrade_retires_the_old_tokens_answer,
                the_write_after_an_upgrade_follows_its_commit,
                identity_changes_reach_every_sessions_answer,
                tokens_issued_here_are_cached_from_their_first_lookup,
                an_upgrade_caches_the_new_tokens_answer_at_once
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_upgrade_racing_another_change_keeps_no_answer() {
                let backing = $inner.await;
                super::session_cache_cases::an_upgrade_racing_another_change_keeps_no_answer(
                    backing.store,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_upgrade_starts_from_the_cached_answers_versions() {
                let backing = $inner.await;
                super::session_cache_cases::an_upgrade_starts_from_the_cached_answers_versions(
                    backing.store,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn without_versions_answers_come_from_sql() {
                let backing = $inner.await;
                super::session_cache_cases::without_versions_answers_come_from_sql(backing.store)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_versions_outage_forgets_cached_answers() {
                let backing = $inner.await;
                super::session_cache_cases::a_versions_outage_forgets_cached_answers(backing.store)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_announcement_that_failed_is_retried() {
                let backing = $inner.await;
                super::session_cache_cases::an_announcement_that_failed_is_retried(backing.store)
                    .await;
            }
        }
    };
    (@cases $replicas:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let replicas: Replicas = $replicas.await;
                super::session_cache_cases::$case(&replicas).await;
            }
        )*
    };
}

/// The stores and versions the cache suites run on.
mod cache_backends {
    use super::*;
    use twofold::store::SqlStore;
    use twofold::store::session_cache::RedisVersions;

    pub async fn postgres() -> Fixture<Arc<dyn SqlStore>> {
        open::postgres().await.shared()
    }

    pub async fn sqlite_memory() -> Fixture<Arc<dyn SqlStore>> {
        open::sqlite_memory().await.shared()
    }

    /// Versions in the test Redis, under a key prefix of their own.
    pub async fn redis_versions() -> RedisVersions {
        let connection = twofold::store::redis::connect_manager(&support::redis_url())
            .await
            .expect("connect to redis");
        RedisVersions::new(connection, &support::unique_redis_prefix())
    }
}

mod session_cache {
    use super::cache_backends::{postgres, redis_versions, sqlite_memory};
    use super::*;
    use twofold::store::session_cache::{MemoryVersions, VersionKey, Versions};

    async fn postgres_with_redis_versions() -> session_cache_cases::Replicas {
        let backing = postgres().await;
        session_cache_cases::Replicas::new(backing.store, Arc::new(redis_versions().await))
            .keeping(backing.database)
    }

    async fn sqlite_with_memory_versions() -> session_cache_cases::Replicas {
        session_cache_cases::Replicas::new(
            sqlite_memory().await.store,
            Arc::new(MemoryVersions::new()),
        )
    }

    /// `replace` changes both versions only while both are as seen, and a refusal changes
    /// nothing.
    async fn replace_is_a_compare_and_set(versions: &dyn Versions) {
        let keys = [
            VersionKey::Session(Uuid::now_v7()),
            VersionKey::Identity(Uuid::now_v7()),
        ];
        let seen = versions.current(keys).await.expect("current");
        let next = versions
            .replace(keys, seen)
            .await
            .expect("replace")
            .expect("replaced");
        assert_ne!(next[0], seen[0]);
        assert_ne!(next[1], seen[1]);
        assert!(versions.unchanged(keys, next).await.expect("check"));
        assert_eq!(versions.replace(keys, seen).await.expect("replace"), None);
        assert!(
            versions.unchanged(keys, next).await.expect("check"),
            "a refused replace changes nothing"
        );
        versions.bump(&keys[1..]).await.expect("bump");
        assert_eq!(
            versions.replace(keys, next).await.expect("replace"),
            None,
            "one of the two moved on"
        );
    }

    /// A key given twice (the failure budget's one key) reads as one version, checks against a
    /// pair of it, and moves on and is replaced as one.
    async fn one_key_given_twice_is_one_version(versions: &dyn Versions) {
        let key = VersionKey::Failures(Uuid::now_v7());
        let keys = [key, key];
        let seen = versions.current(keys).await.expect("current");
        assert_eq!(seen[0], seen[1]);
        assert_eq!(
            versions.current(keys).await.expect("current again"),
            seen,
            "a key that has a version keeps it"
        );
        assert!(versions.unchanged(keys, seen).await.expect("check"));
        assert!(
            !versions
                .unchanged(keys, [seen[0], seen[0] ^ 2])
                .await
                .expect("check"),
            "one key cannot match two versions"
        );
        versions.bump(&[key]).await.expect("bump");
        assert!(!versions.unchanged(keys, seen).await.expect("check"));
        let next = versions.current(keys).await.expect("current after bump");
        assert_eq!(next[0], next[1]);
        assert_ne!(next, seen);
        let replaced = versions
            .replace(keys, next)
            .await
            .expect("replace")
            .expect("replaced");
        assert_eq!(replaced[0], replaced[1], "one key gets one new version");
        assert!(versions.unchanged(keys, replaced).await.expect("check"));
        assert_eq!(versions.current(keys).await.expect("current"), replaced);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_one_key_given_twice_is_one_version() {
        one_key_given_twice_is_one_version(&redis_versions().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_one_key_given_twice_is_one_version() {
        one_key_given_twice_is_one_version(&MemoryVersions::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_replace_is_a_compare_and_set() {
        replace_is_a_compare_and_set(&redis_versions().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_replace_is_a_compare_and_set() {
        replace_is_a_compare_and_set(&MemoryVersions::new()).await;
    }

    session_cache_suite!(
        postgres_redis,
        super::postgres_with_redis_versions(),
        super::postgres()
    );
    session_cache_suite!(
        sqlite_memory_versions,
        super::sqlite_with_memory_versions(),
        super::sqlite_memory()
    );
}

/// The failure budget cache (`store::budget_cache`) in front of a real SQL store, two caches
/// sharing one set of versions standing for two replicas, as for the session cache: each case
/// first shows that "nothing on record" really is served from the cache, then that a failure
/// recorded through either cache is seen by the other at once.
mod budget_cache_cases {
    use super::session_cache_cases::Flaky;
    use super::*;
    use twofold::store::SqlStore;
    use twofold::store::budget_cache::CachedBudget;
    use twofold::store::codes::{FailureBudgetStore, FailureState};
    use twofold::store::session_cache::Versions;

    const WINDOW: Duration = Duration::from_secs(3600);

    pub struct Replicas {
        pub inner: Arc<dyn SqlStore>,
        pub one: CachedBudget,
        pub two: CachedBudget,
        _database: Option<support::TestDatabase>,
    }

    impl Replicas {
        pub fn new(inner: Arc<dyn SqlStore>, versions: Arc<dyn Versions>) -> Self {
            Self {
                one: CachedBudget::new(inner.clone(), versions.clone()),
                two: CachedBudget::new(inner.clone(), versions),
                inner,
                _database: None,
            }
        }

        /// These replicas with the database their store must not outlive.
        pub fn keeping(self, database: Option<support::TestDatabase>) -> Self {
            Self {
                _database: database,
                ..self
            }
        }

        async fn identity(&self) -> Uuid {
            let identity = new_identity();
            self.inner
                .insert_identity(&identity, None)
                .await
                .expect("insert");
            identity.id
        }
    }

    async fn state(store: &dyn FailureBudgetStore, identity_id: Uuid) -> FailureState {
        store
            .failure_state(identity_id, now())
            .await
            .expect("state")
    }

    /// A budget of one: the failure locks the identity at once.
    async fn fail(store: &dyn FailureBudgetStore, identity_id: Uuid) -> FailureState {
        store
            .record_failure(identity_id, now(), 1, WINDOW)
            .await
            .expect("record")
    }

    pub async fn a_failure_through_one_replica_holds_on_the_other(replicas: &Replicas) {
        let identity_id = replicas.identity().await;
        assert!(!state(&replicas.one, identity_id).await.recorded);
        // Behind the caches' back: "nothing on record" is still served.
        assert!(
            fail(replicas.inner.as_ref(), identity_id)
                .await
                .locked_until
                .is_some()
        );
        assert!(
            !state(&replicas.one, identity_id).await.recorded,
            "served from the cache"
        );
        replicas
            .inner
            .reset_failures(identity_id)
            .await
            .expect("reset");

        // Through the other replica: seen at once.
        assert!(
            fail(&replicas.two, identity_id)
                .await
                .locked_until
                .is_some()
        );
        let seen = state(&replicas.one, identity_id).await;
        assert!(seen.recorded && seen.locked_until.is_some(), "{seen:?}");
        // And through the same replica.
        let other = replicas.identity().await;
        assert!(!state(&replicas.one, other).await.recorded);
        fail(&replicas.one, other).await;
        assert!(state(&replicas.one, other).await.locked_until.is_some());
    }

    pub async fn only_nothing_on_record_is_cached(replicas: &Replicas) {
        let identity_id = replicas.identity().await;
        fail(replicas.inner.as_ref(), identity_id).await;
        assert!(state(&replicas.one, identity_id).await.recorded);
        // Cleared behind the cache's back: a recorded state was not kept, so SQL is read again.
        replicas
            .inner
            .reset_failures(identity_id)
            .await
            .expect("reset");
        assert_eq!(
            state(&replicas.one, identity_id).await,
            FailureState {
                failures: 0,
                locked_until: None,
                recorded: false
            }
        );
        // A success through the cache clears SQL as before.
        fail(&replicas.two, identity_id).await;
        replicas
            .one
            .reset_failures(identity_id)
            .await
            .expect("reset");
        assert!(!state(replicas.inner.as_ref(), identity_id).await.recorded);
    }

    /// Once versions could not be read, cached facts are forgotten: a failure whose announcement
    /// was lost in the outage must still be seen afterwards.
    pub async fn a_versions_outage_forgets_cached_facts(inner: Arc<dyn SqlStore>) {
        use std::sync::atomic::Ordering;
        let flaky = Arc::new(Flaky::new());
        let replicas = Replicas::new(inner, flaky.clone());
        let identity_id = replicas.identity().await;
        assert!(!state(&replicas.one, identity_id).await.recorded);

        flaky.down.store(true, Ordering::SeqCst);
        assert!(
            !state(&replicas.one, identity_id).await.recorded,
            "answered from SQL while versions are away"
        );
        fail(replicas.inner.as_ref(), identity_id).await;
        assert!(state(&replicas.one, identity_id).await.recorded);
        flaky.down.store(false, Ordering::SeqCst);
        assert!(state(&replicas.one, identity_id).await.recorded);
    }
}

macro_rules! budget_cache_suite {
    ($backend:ident, $replicas:expr, $inner:expr) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failure_through_one_replica_holds_on_the_other() {
                let replicas = $replicas.await;
                super::super::budget_cache_cases::a_failure_through_one_replica_holds_on_the_other(
                    &replicas,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn only_nothing_on_record_is_cached() {
                let replicas = $replicas.await;
                super::super::budget_cache_cases::only_nothing_on_record_is_cached(&replicas).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_versions_outage_forgets_cached_facts() {
                let backing = $inner.await;
                super::super::budget_cache_cases::a_versions_outage_forgets_cached_facts(
                    backing.store,
                )
                .await;
            }
        }
    };
}

mod budget_cache {
    use super::cache_backends::{postgres, redis_versions, sqlite_memory};
    use super::*;
    use twofold::store::session_cache::MemoryVersions;

    async fn postgres_with_redis_versions() -> budget_cache_cases::Replicas {
        let backing = postgres().await;
        budget_cache_cases::Replicas::new(backing.store, Arc::new(redis_versions().await))
            .keeping(backing.database)
    }

    async fn sqlite_with_memory_versions() -> budget_cache_cases::Replicas {
        budget_cache_cases::Replicas::new(
            sqlite_memory().await.store,
            Arc::new(MemoryVersions::new()),
        )
    }

    budget_cache_suite!(
        postgres_redis,
        super::postgres_with_redis_versions(),
        super::postgres()
    );
    budget_cache_suite!(
        sqlite_memory_versions,
        super::sqlite_with_memory_versions(),
        super::sqlite_memory()
    );
}
