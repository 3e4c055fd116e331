//! Sessions: issuing, authenticating a presented token, `WhoAmI` with its AAL check, listing and
//! revoking. Every check reads the store, so a revocation holds at once on every replica.
use super::aal::{Aal, Channel, RequiredAal};
use super::error::{DomainError, DomainResult};
use super::identity::Identity;
use super::session::{AuthenticationMethod, Session};
use super::token::SessionToken;
use super::{Context, Settings};
use uuid::Uuid;

/// A session together with the identity it belongs to, as callers see it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: Session,
    pub identity: Identity,
    pub active: bool,
}

/// Issues a new session; the token is returned once and only its hash is stored.
pub async fn issue(
    context: &Context,
    identity_id: Uuid,
    methods: Vec<AuthenticationMethod>,
) -> DomainResult<(Session, SessionToken)> {
    let now = context.clock.now();
    let lifespan = context.settings().config.session.lifespan;
    let token = SessionToken::generate();
    let aal = methods
        .iter()
        .map(|method| method.aal)
        .max()
        .unwrap_or(Aal::Aal1);
    let session = Session {
        id: Uuid::now_v7(),
        identity_id,
        token_hash: token.hash(),
        aal,
        methods,
        issued_at: now,
        expires_at: now + chrono::Duration::from_std(lifespan).unwrap_or(chrono::Duration::days(1)),
        authenticated_at: now,
        revoked_at: None,
    };
    context.stores.sessions.insert_session(&session).await?;
    tracing::info!(session_id = %session.id, identity_id = %identity_id, aal = aal.as_str(), "session issued");
    Ok((session, token))
}

/// The active session for a presented token, or `SessionInactive` for no, unknown, expired or
/// revoked tokens (one answer for all, so a caller learns nothing about other tokens).
pub async fn authenticate(context: &Context, token: Option<&str>) -> DomainResult<Session> {
    // Through the same (cached) read as `WhoAmI`: a flow's next call with the same token
    // costs no SQL read.
    authenticate_with_identity(context, token)
        .await
        .map(|(session, _)| session)
}

/// The identity behind `token`, if the session store knows it without a read: a hint for a read
/// that can start before the session is authenticated, never a proof that the token is good.
pub fn known_identity(context: &Context, token: Option<&str>) -> Option<Uuid> {
    let hash = presented_token_hash(token).ok()?;
    context.stores.sessions.known_identity(&hash)
}

fn presented_token_hash(token: Option<&str>) -> DomainResult<Vec<u8>> {
    match token.filter(|token| !token.is_empty()) {
        Some(token) => Ok(SessionToken::from_presented(token).hash()),
        None => Err(DomainError::SessionInactive),
    }
}

/// Like `authenticate`, and the session's identity with it in the same read. A session whose
/// identity is gone is as good as revoked.
pub async fn authenticate_with_identity(
    context: &Context,
    token: Option<&str>,
) -> DomainResult<(Session, Identity)> {
    let hash = presented_token_hash(token)?;
    let (session, identity) = context
        .stores
        .sessions
        .find_with_identity(&hash)
        .await?
        .ok_or(DomainError::SessionInactive)?;
    if !session.is_active(context.clock.now()) {
        return Err(DomainError::SessionInactive);
    }
    Ok((session, identity))
}

/// Whether a code sent through `channel` can serve as a second factor under the policy.
pub fn code_channel_counts_as_aal2(settings: &Settings, channel: Channel) -> bool {
    match channel {
        Channel::Sms => true,
        Channel::Email => {
            settings
                .config
                .selfservice
                .methods
                .code
                .config
                .email_counts_as_aal2
        }
    }
}

/// The highest AAL the identity can reach with the methods configured now: AAL2 when code MFA is
/// on and the identity has a code address that the policy accepts as a second factor.
pub fn highest_available_aal(settings: &Settings, identity: &Identity) -> Aal {
    let code = &settings.config.selfservice.methods.code;
    let has_second_factor = code.enabled
        && code.mfa_enabled
        && identity
            .code_addresses()
            .filter_map(|address| address.channel)
            .any(|channel| code_channel_counts_as_aal2(settings, channel));
    if has_second_factor {
        Aal::Aal2
    } else {
        Aal::Aal1
    }
}

/// Enforces `required_aal` on the server (Kratos `session.whoami.required_aal`).
pub fn check_required_aal(
    settings: &Settings,
    session: &Session,
    identity: &Identity,
    required: Option<RequiredAal>,
) -> DomainResult<()> {
    let required = required.unwrap_or(settings.config.session.whoami.required_aal);
    match required {
        RequiredAal::Aal1 => Ok(()),
        RequiredAal::HighestAvailable => {
            if session.aal < highest_available_aal(settings, identity) {
                Err(DomainError::SessionAal2Required)
            } else {
                Ok(())
            }
        }
    }
}

pub async fn whoami(
    context: &Context,
    token: Option<&str>,
    required: Option<RequiredAal>,
) -> DomainResult<SessionView> {
    let (session, identity) = authenticate_with_identity(context, token).await?;
    check_required_aal(&context.settings(), &session, &identity, required)?;
    Ok(SessionView {
        session,
        identity,
        active: true,
    })
}

fn views(context: &Context, identity: Identity, sessions: Vec<Session>) -> Vec<SessionView> {
    let now = context.clock.now();
    sessions
        .into_iter()
        .map(|session| SessionView {
            active: session.is_active(now),
            session,
            identity: identity.clone(),
        })
        .collect()
}

pub async fn list_my_sessions(
    context: &Context,
    token: Option<&str>,
) -> DomainResult<Vec<SessionView>> {
    let (current, identity) = authenticate_with_identity(context, token).await?;
    let sessions = context
        .stores
        .sessions
        .list_sessions(current.identity_id, false, context.clock.now())
        .await?;
    Ok(views(context, identity, sessions))
}

pub async fn revoke_my_session(
    context: &Context,
    token: Option<&str>,
    session_id: Uuid,
) -> DomainResult<()> {
    let current = authenticate(context, token).await?;
    let target = context.stores.sessions.get_session(session_id).await?;
    // Another identity's session is "not found": its existence is none of the caller's business.
    match target {
        Some(target) if target.identity_id == current.identity_id => {
            context
                .stores
                .sessions
                .revoke_session(target.id, context.clock.now())
                .await?;
            tracing::info!(session_id = %target.id, identity_id = %target.identity_id, "session revoked by its identity");
            Ok(())
        }
        _ => Err(DomainError::SessionNotFound),
    }
}

pub async fn logout(context: &Context, token: Option<&str>) -> DomainResult<()> {
    let current = authenticate(context, token).await?;
    context
        .stores
        .sessions
        .revoke_session(current.id, context.clock.now())
        .await?;
    tracing::info!(session_id = %current.id, identity_id = %current.identity_id, "session logged out");
    Ok(())
}

pub async fn get_session(context: &Context, session_id: Uuid) -> DomainResult<SessionView> {
    let session = context
        .stores
        .sessions
        .get_session(session_id)
        .await?
        .ok_or(DomainError::SessionNotFound)?;
    let identity = context
        .stores
        .identities
        .get_identity(session.identity_id)
        .await?
        .ok_or(DomainError::SessionNotFound)?;
    Ok(SessionView {
        active: session.is_active(context.clock.now()),
        session,
        identity,
    })
}

pub async fn list_identity_sessions(
    context: &Context,
    identity_id: Uuid,
    include_inactive: bool,
) -> DomainResult<Vec<SessionView>> {
    let identity = super::identities::get_identity(context, identity_id).await?;
    let sessions = context
        .stores
        .sessions
        .list_sessions(identity_id, include_inactive, context.clock.now())
        .await?;
    Ok(views(context, identity, sessions))
}

pub async fn revoke_session(context: &Context, session_id: Uuid) -> DomainResult<()> {
    if context
        .stores
        .sessions
        .get_session(session_id)
        .await?
        .is_none()
    {
        return Err(DomainError::SessionNotFound);
    }
    context
        .stores
        .sessions
        .revoke_session(session_id, context.clock.now())
        .await?;
    tracing::info!(session_id = %session_id, "session revoked by admin");
    Ok(())
}

pub async fn revoke_identity_sessions(context: &Context, identity_id: Uuid) -> DomainResult<u32> {
    super::identities::get_identity(context, identity_id).await?;
    let revoked = context
        .stores
        .sessions
        .revoke_identity_sessions(identity_id, context.clock.now())
        .await?;
    tracing::info!(identity_id = %identity_id, revoked, "identity sessions revoked by admin");
    Ok(revoked)
}
