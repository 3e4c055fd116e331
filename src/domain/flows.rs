//! Self-service flows. A flow is a short-lived document in the flow store; every state change is
//! a compare-and-swap on its revision, so a flow completes at most once even when a client
//! submits twice at the same moment.
use super::aal::Aal;
use super::error::{DomainError, DomainResult, FieldViolation};
use super::identities::{self, NewIdentity, normalise_identifier};
use super::identity::{CredentialKind, Identity};
use super::session::{AuthenticationMethod, MethodKind, Session};
use super::token::SessionToken;
use super::{Context, password, sessions};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    ChooseMethod,
    CodeSent,
    PassedChallenge,
}

/// A UI message with Kratos's numeric id, so existing text catalogs carry over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiMessage {
    pub id: u32,
    pub text: String,
    pub kind: UiMessageKind,
    #[serde(default)]
    pub context: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UiMessageKind {
    Info,
    Error,
    Success,
}

impl UiMessage {
    pub(super) fn info(id: u32, text: &str) -> Self {
        Self {
            id,
            text: text.to_owned(),
            kind: UiMessageKind::Info,
            context: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationFlow {
    pub id: Uuid,
    pub schema_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: FlowState,
    #[serde(default)]
    pub messages: Vec<UiMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginFlow {
    pub id: Uuid,
    pub requested_aal: Aal,
    pub refresh: bool,
    pub state: FlowState,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub methods: Vec<String>,
    /// The session an AAL2 flow steps up; only that session may drive the flow.
    #[serde(default)]
    pub session_id: Option<Uuid>,
    /// AAL2: the identity being stepped up. Passwordless: the identity the typed identifier
    /// belongs to, if any (never shown, so the flow does not reveal whether it exists).
    #[serde(default)]
    pub identity_id: Option<Uuid>,
    /// AAL2: the addresses a code may go to.
    #[serde(default)]
    pub choices: Vec<CodeChoice>,
    /// The address the current code went to.
    #[serde(default)]
    pub sent_to: Option<CodeChoice>,
    /// The challenge holding the current code; `None` for a passwordless flow whose identifier
    /// matched nobody (it looks sent, but nothing can verify).
    #[serde(default)]
    pub challenge_id: Option<Uuid>,
    #[serde(default)]
    pub resend_available_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub messages: Vec<UiMessage>,
}

/// One address a code can be sent to in a flow. `address_id` is opaque and per flow, so the
/// client picks an address without ever sending one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChoice {
    pub address_id: Uuid,
    pub trait_name: String,
    pub value: String,
    pub channel: super::aal::Channel,
}

/// The stored document; tagged so a registration flow id cannot be used as a login flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum FlowDocument {
    Registration(RegistrationFlow),
    Login(LoginFlow),
}

pub(super) struct Loaded<T> {
    pub flow: T,
    pub revision: u64,
}

pub(super) fn encode(document: &FlowDocument) -> DomainResult<Vec<u8>> {
    serde_json::to_vec(document)
        .map_err(|error| DomainError::Internal(format!("flow encoding failed: {error}")))
}

async fn load(context: &Context, id: Uuid) -> DomainResult<(FlowDocument, u64)> {
    let stored = context
        .stores
        .flows
        .get_flow(id)
        .await?
        .ok_or(DomainError::FlowNotFound)?;
    let document = serde_json::from_slice(&stored.document)
        .map_err(|error| DomainError::Internal(format!("stored flow unreadable: {error}")))?;
    Ok((document, stored.revision))
}

pub(super) async fn save(
    context: &Context,
    id: Uuid,
    revision: u64,
    document: &FlowDocument,
) -> DomainResult<u64> {
    if !context
        .stores
        .flows
        .replace_flow(id, revision, &encode(document)?)
        .await?
    {
        // Someone else changed the flow since we read it: it was submitted concurrently.
        return Err(DomainError::FlowStateInvalid);
    }
    Ok(revision + 1)
}

/// How long a flow is kept once it has passed: long enough for a double submit, a retried
/// request or a reloaded page to get "already used" rather than "not found", short enough that
/// the flows held at once are those of the last few minutes and not of the whole lifespan. A
/// store may drop one sooner to bound its memory (see `FlowStore::finish_flow`).
pub const PASSED_FLOW_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Marks a login flow as passed and stores it for [`PASSED_FLOW_KEPT_FOR`] at most, a
/// compare-and-swap on `revision` like [`save`]. The flow drops what it no longer needs (the
/// addresses a code could go to, the one it went to, its messages) and says when it will be gone.
pub(super) async fn finish_login(
    context: &Context,
    revision: u64,
    flow: &mut LoginFlow,
) -> DomainResult<()> {
    flow.state = FlowState::PassedChallenge;
    flow.choices.clear();
    flow.sent_to = None;
    flow.resend_available_at = None;
    flow.messages.clear();
    let keep_for = shorten_to_kept(context, &mut flow.expires_at);
    store_finished(
        context,
        flow.id,
        revision,
        &FlowDocument::Login(flow.clone()),
        keep_for,
    )
    .await
}

/// [`finish_login`] for a registration flow that has already been claimed as passed.
async fn finish_registration(
    context: &Context,
    revision: u64,
    flow: &mut RegistrationFlow,
) -> DomainResult<()> {
    flow.state = FlowState::PassedChallenge;
    flow.messages.clear();
    let keep_for = shorten_to_kept(context, &mut flow.expires_at);
    store_finished(
        context,
        flow.id,
        revision,
        &FlowDocument::Registration(flow.clone()),
        keep_for,
    )
    .await
}

/// Brings a passing flow's deadline to [`PASSED_FLOW_KEPT_FOR`] from now if it is further, and
/// returns how long the store is to keep it.
fn shorten_to_kept(context: &Context, expires_at: &mut DateTime<Utc>) -> std::time::Duration {
    let now = context.clock.now();
    *expires_at = (*expires_at).min(lifespan_from(now, PASSED_FLOW_KEPT_FOR));
    (*expires_at - now).to_std().unwrap_or_default()
}

async fn store_finished(
    context: &Context,
    id: Uuid,
    revision: u64,
    document: &FlowDocument,
    keep_for: std::time::Duration,
) -> DomainResult<()> {
    if !context
        .stores
        .flows
        .finish_flow(id, revision, &encode(document)?, keep_for)
        .await?
    {
        // Someone else changed the flow since we read it: it was submitted concurrently.
        return Err(DomainError::FlowStateInvalid);
    }
    Ok(())
}

pub(super) fn check_open(
    expires_at: DateTime<Utc>,
    state: FlowState,
    now: DateTime<Utc>,
) -> DomainResult<()> {
    if now >= expires_at {
        return Err(DomainError::FlowExpired);
    }
    if state == FlowState::PassedChallenge {
        return Err(DomainError::FlowStateInvalid);
    }
    Ok(())
}

pub(super) fn lifespan_from(now: DateTime<Utc>, lifespan: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lifespan).unwrap_or(chrono::Duration::hours(1))
}

// ---------------------------------------------------------------- registration

pub async fn create_registration_flow(
    context: &Context,
    schema_id: &str,
) -> DomainResult<RegistrationFlow> {
    let settings = context.settings();
    let registration = &settings.config.selfservice.flows.registration;
    if !registration.enabled {
        return Err(DomainError::MethodDisabled("registration"));
    }
    let schema = settings
        .schemas
        .resolve(schema_id)
        .ok_or_else(|| DomainError::SchemaNotFound(schema_id.to_owned()))?;
    let now = context.clock.now();
    let flow = RegistrationFlow {
        id: Uuid::new_v4(),
        schema_id: schema.id().to_owned(),
        issued_at: now,
        expires_at: lifespan_from(now, registration.lifespan),
        state: FlowState::ChooseMethod,
        messages: Vec::new(),
    };
    let document = encode(&FlowDocument::Registration(flow.clone()))?;
    context
        .stores
        .flows
        .create_flow(flow.id, &document, registration.lifespan)
        .await?;
    Ok(flow)
}

async fn load_registration(context: &Context, id: Uuid) -> DomainResult<Loaded<RegistrationFlow>> {
    match load(context, id).await? {
        (FlowDocument::Registration(flow), revision) => Ok(Loaded { flow, revision }),
        _ => Err(DomainError::FlowNotFound),
    }
}

pub async fn get_registration_flow(context: &Context, id: Uuid) -> DomainResult<RegistrationFlow> {
    let loaded = load_registration(context, id).await?;
    if context.clock.now() >= loaded.flow.expires_at {
        return Err(DomainError::FlowExpired);
    }
    Ok(loaded.flow)
}

pub struct Registered {
    pub identity: Identity,
    pub session: Session,
    pub token: SessionToken,
    pub flow: RegistrationFlow,
}

/// Creates the identity and an AAL1 session. The flow is claimed first (compare-and-swap) so a
/// double submit creates one identity; if creating the identity fails the claim is released
/// and the user can correct the traits in the same flow.
pub async fn submit_registration_flow(
    context: &Context,
    id: Uuid,
    traits: Value,
    password: String,
) -> DomainResult<Registered> {
    let settings = context.settings();
    if !settings.config.selfservice.methods.password.enabled {
        return Err(DomainError::MethodDisabled("password"));
    }
    if password.is_empty() {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "password",
            "is required",
        )]));
    }
    let Loaded { flow, revision } = load_registration(context, id).await?;
    check_open(flow.expires_at, flow.state, context.clock.now())?;

    let mut claimed = flow.clone();
    claimed.state = FlowState::PassedChallenge;
    let claimed_revision = save(
        context,
        id,
        revision,
        &FlowDocument::Registration(claimed.clone()),
    )
    .await?;

    let created = identities::create_identity(
        context,
        NewIdentity {
            schema_id: flow.schema_id.clone(),
            traits,
            password: Some(password),
            verified_addresses: Vec::new(),
        },
    )
    .await;
    let identity = match created {
        Ok(identity) => identity,
        Err(error) => {
            // Release the claim; if that fails too, the flow stays used and the user restarts.
            let _ = save(
                context,
                id,
                claimed_revision,
                &FlowDocument::Registration(flow),
            )
            .await;
            return Err(error);
        }
    };
    // The identity exists whatever happens to the flow now, so a lost compare-and-swap here (a
    // concurrent submit, which the claim refuses anyway) is not this caller's error. Finished
    // before the session is issued, so a failure there still leaves the flow short-lived.
    let mut finished = claimed;
    let _ = finish_registration(context, claimed_revision, &mut finished).await;
    let method = AuthenticationMethod {
        method: MethodKind::Password,
        aal: Aal::Aal1,
        completed_at: context.clock.now(),
        channel: None,
        address_hash: None,
    };
    let (session, token) = sessions::issue(context, identity.id, vec![method]).await?;
    Ok(Registered {
        identity,
        session,
        token,
        flow: finished,
    })
}

// ---------------------------------------------------------------- login

/// Kratos 1010004.
pub(super) const MESSAGE_COMPLETE_SECOND_FACTOR: u32 = 1_010_004;

pub struct LoginFlowRequest<'a> {
    pub requested_aal: Option<Aal>,
    pub refresh: bool,
    pub via: &'a str,
    pub session_token: Option<&'a str>,
}

pub async fn create_login_flow(
    context: &Context,
    request: LoginFlowRequest<'_>,
) -> DomainResult<LoginFlow> {
    let settings = context.settings();
    let requested_aal = request.requested_aal.unwrap_or(Aal::Aal1);
    let now = context.clock.now();
    let login = &settings.config.selfservice.flows.login;
    let code = &settings.config.selfservice.methods.code;

    match requested_aal {
        Aal::Aal1 => {
            if !request.via.is_empty() {
                return Err(DomainError::Validation(vec![FieldViolation::new(
                    "via",
                    "is only used with requested_aal AAL2",
                )]));
            }
            if let Some(token) = request.session_token.filter(|token| !token.is_empty())
                && !request.refresh
                && sessions::authenticate(context, Some(token)).await.is_ok()
            {
                return Err(DomainError::SessionAlreadyAvailable);
            }
            let mut methods = Vec::new();
            if settings.config.selfservice.methods.password.enabled {
                methods.push("password".to_owned());
            }
            if code.enabled && code.passwordless_enabled {
                methods.push("code".to_owned());
            }
            let flow = LoginFlow {
                id: Uuid::new_v4(),
                requested_aal,
                refresh: request.refresh,
                state: FlowState::ChooseMethod,
                issued_at: now,
                expires_at: lifespan_from(now, login.lifespan),
                methods,
                session_id: None,
                identity_id: None,
                choices: Vec::new(),
                sent_to: None,
                challenge_id: None,
                resend_available_at: None,
                messages: Vec::new(),
            };
            let document = encode(&FlowDocument::Login(flow.clone()))?;
            context
                .stores
                .flows
                .create_flow(flow.id, &document, login.lifespan)
                .await?;
            Ok(flow)
        }
        Aal::Aal2 => super::login_code::create_aal2_flow(context, request).await,
    }
}

pub(super) async fn load_login(context: &Context, id: Uuid) -> DomainResult<Loaded<LoginFlow>> {
    match load(context, id).await? {
        (FlowDocument::Login(flow), revision) => Ok(Loaded { flow, revision }),
        _ => Err(DomainError::FlowNotFound),
    }
}

pub async fn get_login_flow(
    context: &Context,
    id: Uuid,
    session_token: Option<&str>,
) -> DomainResult<LoginFlow> {
    let loaded = load_login(context, id).await?;
    if let Some(owner) = loaded.flow.session_id {
        let session = sessions::authenticate(context, session_token).await?;
        if session.id != owner {
            return Err(DomainError::FlowSessionMismatch);
        }
    }
    if context.clock.now() >= loaded.flow.expires_at {
        return Err(DomainError::FlowExpired);
    }
    Ok(loaded.flow)
}

pub struct LoggedIn {
    pub session: Session,
    pub token: SessionToken,
    pub flow: LoginFlow,
}

/// First factor by password. Unknown identifiers, wrong passwords and inactive identities give
/// one answer, and unknown identifiers still pay for a hash, so neither the answer nor its
/// timing tells whether an account exists.
pub async fn submit_login_password(
    context: &Context,
    id: Uuid,
    identifier: &str,
    password: String,
) -> DomainResult<LoggedIn> {
    let settings = context.settings();
    if !settings.config.selfservice.methods.password.enabled {
        return Err(DomainError::MethodDisabled("password"));
    }
    let mut missing = Vec::new();
    if identifier.trim().is_empty() {
        missing.push(FieldViolation::new("identifier", "is required"));
    }
    if password.is_empty() {
        missing.push(FieldViolation::new("password", "is required"));
    }
    if !missing.is_empty() {
        return Err(DomainError::Validation(missing));
    }
    let Loaded { flow, revision } = load_login(context, id).await?;
    check_open(flow.expires_at, flow.state, context.clock.now())?;
    if flow.requested_aal != Aal::Aal1 {
        return Err(DomainError::FlowStateInvalid);
    }

    let identity = context
        .stores
        .identities
        .find_by_identifier(CredentialKind::Password, &normalise_identifier(identifier))
        .await?;
    let stored_hash = match &identity {
        Some(identity) => context.stores.identities.password_hash(identity.id).await?,
        None => None,
    };
    let matches = password::verify(password, stored_hash).await?;
    let identity = match identity {
        Some(identity) if matches && identity.state == super::identity::IdentityState::Active => {
            identity
        }
        _ => return Err(DomainError::InvalidCredentials),
    };

    let mut passed = flow;
    finish_login(context, revision, &mut passed).await?;

    let method = AuthenticationMethod {
        method: MethodKind::Password,
        aal: Aal::Aal1,
        completed_at: context.clock.now(),
        channel: None,
        address_hash: None,
    };
    let (session, token) = sessions::issue(context, identity.id, vec![method]).await?;
    if sessions::highest_available_aal(&settings, &identity) > Aal::Aal1 {
        passed.messages.push(UiMessage::info(
            MESSAGE_COMPLETE_SECOND_FACTOR,
            "Please complete the second authentication challenge.",
        ));
    }
    Ok(LoggedIn {
        session,
        token,
        flow: passed,
    })
}
