//! Login by one-time code: the AAL2 step-up of an existing session (the seed's scenario) and,
//! when `passwordless_enabled`, the AAL1 login by a code to a typed identifier.
use super::aal::{Aal, Channel};
use super::challenges::{self, CodeTemplate, SendRequest};
use super::error::{DomainError, DomainResult, FieldViolation};
use super::flows::{
    CodeChoice, FlowDocument, FlowState, Loaded, LoggedIn, LoginFlow, LoginFlowRequest,
    MESSAGE_COMPLETE_SECOND_FACTOR, UiMessage, check_open, encode, finish_login, lifespan_from,
    load_login, save,
};
use super::identities::{code_address_via, normalise_identifier};
use super::identity::{CredentialKind, Identifier, Identity, IdentityState};
use super::mask::{address_hash, mask_address};
use super::session::{AuthenticationMethod, MethodKind, Session};
use super::token::SessionToken;
use super::{Context, Settings, sessions};
use crate::store::codes::Owner;
use crate::store::{AfterUpgrade, SessionUpgrade};
use uuid::Uuid;

/// Kratos 1010023 "Send code to {address}".
const MESSAGE_SEND_CODE_TO: u32 = 1_010_023;
/// Kratos 1010025 "A code was sent to your address…".
const MESSAGE_CODE_SENT: u32 = 1_010_025;

/// Addresses that may serve as this session's second factor: code addresses whose channel the
/// policy accepts, minus any address whose code was this session's first factor (both factors
/// must differ; Kratos bug #4317). An earlier second factor may be used again to refresh.
fn second_factor_choices(
    settings: &Settings,
    identity: &Identity,
    session: &Session,
) -> Vec<CodeChoice> {
    let used: Vec<&str> = session
        .methods
        .iter()
        .filter(|method| method.method == MethodKind::Code && method.aal == Aal::Aal1)
        .filter_map(|method| method.address_hash.as_deref())
        .collect();
    identity
        .code_addresses()
        .filter_map(|address| {
            let channel = address.channel?;
            let allowed = sessions::code_channel_counts_as_aal2(settings, channel)
                && !used.contains(&address_hash(&address.value).as_str());
            allowed.then(|| CodeChoice {
                address_id: Uuid::new_v4(),
                trait_name: address.trait_name.clone(),
                value: address.value.clone(),
                channel,
            })
        })
        .collect()
}

fn purpose(flow_id: Uuid) -> String {
    format!("login:{flow_id}")
}

fn as_identifier(choice: &CodeChoice) -> Identifier {
    Identifier {
        kind: CredentialKind::Code,
        value: choice.value.clone(),
        trait_name: choice.trait_name.clone(),
        channel: Some(choice.channel),
    }
}

fn code_sent_message(choice: &CodeChoice) -> UiMessage {
    let mut message = UiMessage::info(
        MESSAGE_CODE_SENT,
        "A code was sent to your address. Please enter it below.",
    );
    message
        .context
        .push(("address".into(), mask_address(&choice.value)));
    message
}

/// Sends the flow's code to `choice` and records it in the flow (not yet saved).
async fn send_to(
    context: &Context,
    flow: &mut LoginFlow,
    identity_id: Uuid,
    choice: CodeChoice,
) -> DomainResult<()> {
    send_and_store(context, flow, identity_id, choice, |_| {
        std::future::ready(Ok(()))
    })
    .await
}

/// [`send_to`], and `store` the flow as it then stands, in the same round trip as its challenge
/// (see [`challenges::send_with`]).
async fn send_and_store<F, Stored>(
    context: &Context,
    flow: &mut LoginFlow,
    identity_id: Uuid,
    choice: CodeChoice,
    store: F,
) -> DomainResult<()>
where
    F: FnOnce(DomainResult<Vec<u8>>) -> Stored,
    Stored: Future<Output = DomainResult<()>>,
{
    let request = SendRequest {
        challenge_id: Uuid::new_v4(),
        identity_id,
        address: &as_identifier(&choice),
        purpose: purpose(flow.id),
        template: CodeTemplate::LoginCode,
        locale: String::new(),
        flow_id: Some(flow.id),
    };
    challenges::send_with(context, request, |challenge| {
        flow.state = FlowState::CodeSent;
        flow.challenge_id = Some(challenge.id);
        flow.resend_available_at = Some(challenge.resend_available_at);
        // Keep the standing instruction (1010004); the choices' "send code to" texts are done.
        flow.messages
            .retain(|message| message.id == MESSAGE_COMPLETE_SECOND_FACTOR);
        flow.messages.push(code_sent_message(&choice));
        flow.sent_to = Some(choice);
        store(encode(&FlowDocument::Login(flow.clone())))
    })
    .await?;
    Ok(())
}

pub(super) async fn create_aal2_flow(
    context: &Context,
    request: LoginFlowRequest<'_>,
) -> DomainResult<LoginFlow> {
    let settings = context.settings();
    let (session, identity) =
        match sessions::authenticate_with_identity(context, request.session_token).await {
            Ok(found) => found,
            Err(DomainError::SessionInactive) => return Err(DomainError::SessionAal1Required),
            Err(other) => return Err(other),
        };
    if session.aal >= Aal::Aal2 && !request.refresh {
        return Err(DomainError::SessionAlreadyAvailable);
    }
    let code = &settings.config.selfservice.methods.code;
    if !(code.enabled && code.mfa_enabled) {
        return Err(DomainError::MethodDisabled("code"));
    }

    let mut choices = second_factor_choices(&settings, &identity, &session);
    if !request.via.is_empty() {
        let address = code_address_via(&settings, &identity, request.via)?;
        choices.retain(|choice| choice.trait_name == address.trait_name);
        if choices.is_empty() {
            // The trait has a value, but the policy does not accept it as a second factor.
            return Err(DomainError::AddressNotAllowed);
        }
    }
    if choices.is_empty() {
        return Err(DomainError::MethodDisabled("code"));
    }

    let now = context.clock.now();
    let lifespan = settings.config.selfservice.flows.login.lifespan;
    let mut flow = LoginFlow {
        id: Uuid::new_v4(),
        requested_aal: Aal::Aal2,
        refresh: request.refresh,
        state: FlowState::ChooseMethod,
        issued_at: now,
        expires_at: lifespan_from(now, lifespan),
        methods: vec!["code".to_owned()],
        session_id: Some(session.id),
        identity_id: Some(identity.id),
        choices: choices.clone(),
        sent_to: None,
        challenge_id: None,
        resend_available_at: None,
        messages: vec![UiMessage::info(
            MESSAGE_COMPLETE_SECOND_FACTOR,
            "Please complete the second authentication challenge.",
        )],
    };
    for choice in &choices {
        let mut message = UiMessage::info(
            MESSAGE_SEND_CODE_TO,
            &format!("Send code to {}", mask_address(&choice.value)),
        );
        message
            .context
            .push(("address".into(), mask_address(&choice.value)));
        flow.messages.push(message);
    }
    let flow_id = flow.id;
    let create = |document: DomainResult<Vec<u8>>| async move {
        let document = document?;
        context
            .stores
            .flows
            .create_flow(flow_id, &document, lifespan)
            .await?;
        Ok(())
    };
    // One address and no other second factor: send at once, as Kratos's "fast login" does.
    if let [only] = choices.as_slice() {
        if let Err(not_sent) =
            send_and_store(context, &mut flow, identity.id, only.clone(), create).await
        {
            discard_flow(context, flow_id).await;
            return Err(not_sent);
        }
    } else {
        create(encode(&FlowDocument::Login(flow.clone()))).await?;
    }
    Ok(flow)
}

/// Removes a flow stored while its code's send was decided, when the send did not go ahead (the
/// send limits refused it, or a write failed). Nobody was told its id, but it would hold memory
/// for its whole lifespan, once per refused send. Failing that, it expires with its TTL.
async fn discard_flow(context: &Context, flow_id: Uuid) {
    if let Err(error) = context.stores.flows.delete_flow(flow_id).await {
        tracing::warn!(
            error = %error,
            flow_id = %flow_id,
            "the flow of a send that did not go ahead was not removed"
        );
    }
}

/// The login flow, and the session the caller presented read at the same time: an AAL2 flow
/// needs both, and neither read depends on the other. No token, no session read.
async fn load_with_presented(
    context: &Context,
    flow_id: Uuid,
    token: Option<&str>,
) -> DomainResult<(Loaded<LoginFlow>, Presented)> {
    let presented = async {
        match token.filter(|token| !token.is_empty()) {
            Some(_) => Presented::Read(sessions::authenticate(context, token).await),
            None => Presented::Nothing,
        }
    };
    let (loaded, presented) = tokio::join!(load_login(context, flow_id), presented);
    Ok((loaded?, presented))
}

/// What [`load_with_presented`] found for the caller's token.
enum Presented {
    Nothing,
    Read(DomainResult<Session>),
}

/// The caller must hold the session the AAL2 flow was created for.
fn owning_session(flow: &LoginFlow, presented: Presented) -> DomainResult<Option<Session>> {
    let Some(owner) = flow.session_id else {
        return Ok(None);
    };
    let session = match presented {
        Presented::Read(session) => session?,
        Presented::Nothing => return Err(DomainError::SessionInactive),
    };
    if session.id != owner {
        return Err(DomainError::FlowSessionMismatch);
    }
    Ok(Some(session))
}

fn ensure_resend_allowed(flow: &LoginFlow, now: chrono::DateTime<chrono::Utc>) -> DomainResult<()> {
    match flow.resend_available_at {
        Some(available_at) if flow.state == FlowState::CodeSent && now < available_at => {
            Err(challenges::cooldown(available_at, now))
        }
        _ => Ok(()),
    }
}

pub async fn send_login_code(
    context: &Context,
    flow_id: Uuid,
    address_id: &str,
    identifier: &str,
    token: Option<&str>,
) -> DomainResult<LoginFlow> {
    let (loaded, presented) = load_with_presented(context, flow_id, token).await?;
    let mut flow = loaded.flow;
    let now = context.clock.now();
    check_open(flow.expires_at, flow.state, now)?;
    let session = owning_session(&flow, presented)?;
    // Picking another address must not bypass the resend cooldown.
    ensure_resend_allowed(&flow, now)?;

    match flow.requested_aal {
        Aal::Aal2 => {
            let identity_id = session
                .map(|s| s.identity_id)
                .ok_or(DomainError::FlowStateInvalid)?;
            let address_id = Uuid::parse_str(address_id.trim()).map_err(|_| {
                DomainError::Validation(vec![FieldViolation::new(
                    "address_id",
                    "must be one of the flow's code_choices",
                )])
            })?;
            let choice = flow
                .choices
                .iter()
                .find(|choice| choice.address_id == address_id)
                .cloned()
                .ok_or(DomainError::AddressNotAllowed)?;
            send_to(context, &mut flow, identity_id, choice).await?;
        }
        Aal::Aal1 => send_passwordless(context, &mut flow, identifier).await?,
    }
    save(
        context,
        flow_id,
        loaded.revision,
        &FlowDocument::Login(flow.clone()),
    )
    .await?;
    Ok(flow)
}

/// Passwordless: the answer is the same whether the identifier exists or not, and a code goes
/// out only to an identity's own code address.
async fn send_passwordless(
    context: &Context,
    flow: &mut LoginFlow,
    identifier: &str,
) -> DomainResult<()> {
    if !flow.methods.iter().any(|method| method == "code") {
        return Err(DomainError::MethodDisabled("code"));
    }
    if identifier.trim().is_empty() {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "identifier",
            "is required",
        )]));
    }
    let value = normalise_identifier(identifier);
    let identity = context
        .stores
        .identities
        .find_by_identifier(CredentialKind::Code, &value)
        .await?
        .filter(|identity| identity.state == IdentityState::Active);
    let address = identity.as_ref().and_then(|identity| {
        identity
            .code_addresses()
            .find(|address| address.value == value)
            .cloned()
    });
    let channel = address
        .as_ref()
        .and_then(|address| address.channel)
        .unwrap_or(if value.contains('@') {
            Channel::Email
        } else {
            Channel::Sms
        });
    // The trait is not revealed: it would tell a stranger which field matched.
    let choice = CodeChoice {
        address_id: Uuid::new_v4(),
        trait_name: String::new(),
        value,
        channel,
    };
    match (identity, address) {
        (Some(identity), Some(_)) => {
            send_to(context, flow, identity.id, choice).await?;
            flow.identity_id = Some(identity.id);
        }
        _ => {
            let settings = context.settings();
            let cooldown = settings
                .config
                .selfservice
                .methods
                .code
                .config
                .resend_cooldown;
            flow.state = FlowState::CodeSent;
            flow.challenge_id = None;
            flow.identity_id = None;
            flow.resend_available_at = Some(
                context.clock.now() + chrono::Duration::from_std(cooldown).unwrap_or_default(),
            );
            flow.messages = vec![code_sent_message(&choice)];
            flow.sent_to = Some(choice);
        }
    }
    Ok(())
}

pub async fn resend_login_code(
    context: &Context,
    flow_id: Uuid,
    token: Option<&str>,
) -> DomainResult<LoginFlow> {
    let (loaded, presented) = load_with_presented(context, flow_id, token).await?;
    let mut flow = loaded.flow;
    let now = context.clock.now();
    check_open(flow.expires_at, flow.state, now)?;
    owning_session(&flow, presented)?;
    if flow.state != FlowState::CodeSent {
        return Err(DomainError::FlowStateInvalid);
    }
    ensure_resend_allowed(&flow, now)?;
    match flow.challenge_id {
        Some(challenge_id) => {
            let challenge = challenges::resend(
                context,
                challenge_id,
                CodeTemplate::LoginCode,
                "",
                Some(flow.id),
            )
            .await?;
            flow.resend_available_at = Some(challenge.resend_available_at);
        }
        None => {
            let cooldown = context
                .settings()
                .config
                .selfservice
                .methods
                .code
                .config
                .resend_cooldown;
            flow.resend_available_at =
                Some(now + chrono::Duration::from_std(cooldown).unwrap_or_default());
        }
    }
    save(
        context,
        flow_id,
        loaded.revision,
        &FlowDocument::Login(flow.clone()),
    )
    .await?;
    Ok(flow)
}

pub async fn submit_login_code(
    context: &Context,
    flow_id: Uuid,
    input: &str,
    token: Option<&str>,
) -> DomainResult<LoggedIn> {
    let code = challenges::parse_code(context, input)?;
    // An AAL2 flow's identity is its session's: when the session cache knows it, its failure
    // budget is read alongside the flow and the session, and checking the code takes one round
    // trip instead of two. The budget is then read as long before the attempt as it was before
    // (one round trip), and the code is still not compared while the identity is locked.
    let ahead = async {
        match sessions::known_identity(context, token) {
            Some(identity_id) => Some(challenges::read_budget_ahead(context, identity_id).await),
            None => None,
        }
    };
    let (loaded, ahead) = tokio::join!(load_with_presented(context, flow_id, token), ahead);
    let (loaded, presented) = loaded?;
    let mut flow = loaded.flow;
    let now = context.clock.now();
    check_open(flow.expires_at, flow.state, now)?;
    let session = owning_session(&flow, presented)?;
    if flow.state != FlowState::CodeSent {
        return Err(DomainError::FlowStateInvalid);
    }
    let (Some(challenge_id), Some(identity_id)) = (flow.challenge_id, flow.identity_id) else {
        // A passwordless flow for an unknown identifier: no code can be right.
        return Err(DomainError::CodeInvalid);
    };
    let purpose = purpose(flow.id);
    let owner = Owner {
        identity_id,
        purpose: &purpose,
    };
    let verified =
        challenges::verify(context, challenge_id, owner, &code, Some(flow.id), ahead).await?;
    let challenge = verified.challenge.clone();

    let completed_at = context.clock.now();
    let method = AuthenticationMethod {
        method: MethodKind::Code,
        aal: flow.requested_aal,
        completed_at,
        channel: Some(challenge.channel),
        address_hash: Some(address_hash(&challenge.address)),
    };
    let revision = loaded.revision;
    // Entering the code proved control of the address.
    let (session, token) = match session {
        // AAL2 flows always have an owning session; passwordless ones never do.
        Some(session) => {
            // The code was consumed exactly once above; a concurrent change to the flow document
            // does not undo that, so a lost compare-and-swap of the finished flow is not an
            // error for this caller.
            let finish = Box::pin(async {
                let _ = finish_login(context, revision, &mut flow).await;
            });
            upgrade(context, session, method, verified, finish).await?
        }
        None => {
            verified.record(context).await?;
            let issued = sessions::issue(context, identity_id, vec![method]).await?;
            context
                .stores
                .identities
                .mark_address_verified(identity_id, &challenge.address, completed_at)
                .await?;
            // A lost compare-and-swap is not this caller's error, as above.
            let _ = finish_login(context, revision, &mut flow).await;
            issued
        }
    };
    Ok(LoggedIn {
        session,
        token,
        flow,
    })
}

/// Second factors a session keeps (the newest ones). Every refresh adds one, and the list travels
/// with every session read and write; a session refreshed all day would carry hundreds.
pub const KEPT_SECOND_FACTORS: usize = 8;

/// The session's methods with `added` appended: every first factor stays (the rule that a second
/// factor must differ from the first reads them), of the second factors only the newest
/// [`KEPT_SECOND_FACTORS`].
fn with_second_factor(
    methods: &[AuthenticationMethod],
    added: AuthenticationMethod,
) -> Vec<AuthenticationMethod> {
    let second_factors = methods
        .iter()
        .filter(|method| method.aal >= Aal::Aal2)
        .count()
        + usize::from(added.aal >= Aal::Aal2);
    let mut to_drop = second_factors.saturating_sub(KEPT_SECOND_FACTORS);
    let mut kept: Vec<AuthenticationMethod> = methods
        .iter()
        .filter(|method| {
            let drop = to_drop > 0 && method.aal >= Aal::Aal2;
            to_drop -= usize::from(drop);
            !drop
        })
        .cloned()
        .collect();
    kept.push(added);
    kept
}

/// Raises the session to AAL2 under a new token; the old token stops working, the code's address
/// counts as verified and both the code and the change are audited, all in the same step. Once
/// that has happened, `finish` runs (the flow is marked passed), before this returns; when the
/// upgrade does not happen, it does not run.
async fn upgrade(
    context: &Context,
    session: Session,
    method: AuthenticationMethod,
    verified: challenges::Verified,
    finish: AfterUpgrade<'_>,
) -> DomainResult<(Session, SessionToken)> {
    let token = SessionToken::generate();
    let methods = with_second_factor(&session.methods, method.clone());
    let aal_changed = challenges::audit(
        "session.aal_changed",
        session.identity_id,
        None,
        Some(&verified.challenge.address),
        method.completed_at,
    );
    let upgrade = SessionUpgrade {
        identity_id: session.identity_id,
        new_token_hash: token.hash(),
        aal: Aal::Aal2,
        methods,
        authenticated_at: method.completed_at,
        verified_address: Some(verified.challenge.address.clone()),
        audit: vec![verified.audit.clone(), aal_changed],
    };
    let outcome = context
        .stores
        .sessions
        .upgrade_session_then(session.id, &session.token_hash, &upgrade, finish)
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            // Whether the upgrade committed is unknown (a connection lost after COMMIT looks the
            // same), but the code was consumed either way, so its use goes on record now. If the
            // upgrade did commit, it wrote this very event (same id) and the copy is refused.
            if let Err(audit_error) = verified.record(context).await {
                tracing::warn!(error = %audit_error, "code.verified not recorded after a failed session upgrade");
            }
            return Err(error.into());
        }
    };
    let Some(upgraded) = outcome else {
        // Revoked or upgraded by someone else in the meantime. The code was consumed all the
        // same, so its use is on record even though it earned nothing.
        verified.record(context).await?;
        return Err(DomainError::SessionInactive);
    };
    tracing::info!(session_id = %session.id, identity_id = %session.identity_id, "session raised to aal2");
    Ok((upgraded.session, token))
}

#[cfg(test)]
mod tests {
    use super::{KEPT_SECOND_FACTORS, with_second_factor};
    use crate::domain::aal::{Aal, Channel};
    use crate::domain::session::{AuthenticationMethod, MethodKind};

    fn method(kind: MethodKind, aal: Aal, minute: i64) -> AuthenticationMethod {
        AuthenticationMethod {
            method: kind,
            aal,
            completed_at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute),
            channel: (kind == MethodKind::Code).then_some(Channel::Sms),
            address_hash: None,
        }
    }

    #[test]
    fn refreshes_keep_every_first_factor_and_the_newest_second_factors() {
        let first_factors = vec![
            method(MethodKind::Password, Aal::Aal1, 0),
            method(MethodKind::Code, Aal::Aal1, 1),
        ];
        let mut methods = first_factors.clone();
        for minute in 2..100 {
            methods = with_second_factor(&methods, method(MethodKind::Code, Aal::Aal2, minute));
        }
        assert_eq!(methods.len(), first_factors.len() + KEPT_SECOND_FACTORS);
        assert_eq!(methods[..2], first_factors[..]);
        let kept_minutes: Vec<i64> = methods[2..]
            .iter()
            .map(|method| method.completed_at.timestamp() / 60)
            .collect();
        let newest: Vec<i64> = (100 - KEPT_SECOND_FACTORS as i64..100).collect();
        assert_eq!(kept_minutes, newest, "the newest, in order");
    }

    #[test]
    fn a_short_list_only_grows() {
        let methods = vec![method(MethodKind::Password, Aal::Aal1, 0)];
        let added = method(MethodKind::Code, Aal::Aal2, 1);
        assert_eq!(
            with_second_factor(&methods, added.clone()),
            vec![methods[0].clone(), added]
        );
    }
}
