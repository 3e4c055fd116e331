//! The seed's scenario and the code engine held to `reference/security.md` (sections Codes,
//! Guessing, Sessions), over real gRPC on the embedded default and on Postgres + Redis. Codes
//! are read from what the courier delivered through the test sender. Test names carry the
//! requirement they show (c1…, g1…, a1…).

#[macro_use]
mod support;

use support::flows::{PASSWORD, aal2_flow, password_login, register, unique_phone, whoami};

use support::server::{
    Backend, Options, TestServer, admin, reason, retry_delay, unique_email, violated_fields,
    with_bearer,
};
use tonic::Code;
use twofold::domain::challenges::FLOW_CHALLENGE_KEPT_AFTER_USE;
use twofold::domain::flows::PASSED_FLOW_KEPT_FOR;
use twofold::proto::v1;

on_every_backend!(
    seed_scenario_step_up_by_sms_via_phone,
    choose_method_lists_every_code_address,
    via_names_a_code_trait_with_a_value,
    c1_codes_are_six_ascii_digits,
    c2_no_code_is_stored_or_queued_in_plaintext,
    c3_a_code_submitted_one_second_late_fails,
    c4_sixty_four_concurrent_right_codes_upgrade_once,
    c5_a_code_is_bound_to_its_flow_and_identity,
    c6_resend_kills_the_old_code_and_has_a_cooldown,
    c7_malformed_codes_are_refused_without_counting,
    g1_max_submissions_then_even_the_right_code_fails,
    g2_g4_identity_budget_across_flows_and_locked_answers_look_wrong,
    g4_a_locked_identitys_code_is_neither_counted_nor_consumed,
    a1_a2_aal_enforced_and_token_rotated,
    a5_s5_email_policy_and_different_factors,
    passwordless_login_by_code_is_enumeration_safe,
    code_service_send_verify_idempotent,
    send_limits_refuse_and_leave_no_challenge,
    a_login_flow_the_send_limits_refuse_leaves_no_flow,
    courier_abandons_messages_whose_code_expired,
    l1_no_code_token_or_phone_in_logs,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_replicas_share_flows_and_revocation_holds_on_every_replica() {
    support::logs::capture();
    let first = TestServer::start(Backend::PostgresRedis, MFA).await;
    let second = first.replica().await;
    let user = user_with_phone(&first).await;

    // A flow started on one replica continues on the other.
    let flow = aal2_flow(&first, &user.token, "phone").await.unwrap();
    let code = first.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;
    let upgraded = submit(&second, &user.token, &flow.id, &code)
        .await
        .expect("second replica");
    // The first replica sees the upgrade and the rotation.
    assert_token_rotated(&first, &first, &upgraded.session_token, &user.token).await;

    // The first replica has the session's answer cached (`store::session_cache`) ...
    for _ in 0..3 {
        whoami(&first, &upgraded.session_token, v1::RequiredAal::Aal1)
            .await
            .expect("active on the first replica");
    }
    // ... and logging out on the other replica still ends the session there at once.
    second
        .sessions()
        .await
        .logout(with_bearer(v1::LogoutRequest {}, &upgraded.session_token))
        .await
        .expect("logout");
    let refused = whoami(&first, &upgraded.session_token, v1::RequiredAal::Aal1)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_INACTIVE");
    second.stop().await;
    first.stop().await;
}

const MFA: &str = "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n";
const PHONE: &str = "+4915112345678";

struct User {
    identity_id: String,
    email: String,
    phone: Option<String>,
    /// AAL1 session token from a password login.
    token: String,
}

/// Registers (email + optional phone) and logs in with the password: an AAL1 session.
async fn register_user(server: &TestServer, phone: Option<&str>) -> User {
    let registered = register(server, &unique_email("user"), phone).await;
    let logged_in = password_login(server, &registered.email, PASSWORD)
        .await
        .expect("password login");
    User {
        identity_id: registered.identity_id,
        email: registered.email.to_lowercase(),
        phone: phone.map(|_| PHONE.to_owned()),
        token: logged_in.session_token,
    }
}

async fn user_with_phone(server: &TestServer) -> User {
    let phone = unique_phone();
    let mut user = register_user(server, Some(&phone)).await;
    user.phone = Some(phone);
    user
}

async fn submit(
    server: &TestServer,
    token: &str,
    flow_id: &str,
    code: &str,
) -> Result<v1::SubmitLoginCodeResponse, tonic::Status> {
    server
        .flows()
        .await
        .submit_login_code(with_bearer(
            v1::SubmitLoginCodeRequest {
                flow_id: flow_id.into(),
                code: code.into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A2: after the step-up the new token passes `highest_available` and the old one is dead.
async fn assert_token_rotated(
    new_on: &TestServer,
    old_on: &TestServer,
    new_token: &str,
    old_token: &str,
) {
    whoami(new_on, new_token, v1::RequiredAal::HighestAvailable)
        .await
        .expect("the new token is at aal2");
    let refused = whoami(old_on, old_token, v1::RequiredAal::Aal1)
        .await
        .unwrap_err();
    assert_eq!(
        reason(&refused),
        "SESSION_INACTIVE",
        "the old token stopped working"
    );
}

/// A code that is certainly not `code`.
fn wrong(code: &str) -> String {
    let first = if code.starts_with('9') { '0' } else { '9' };
    format!("{first}{}", &code[1..])
}

fn with_config(extra: &str) -> String {
    format!("selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n      config:\n{extra}")
}

async fn seed_scenario_step_up_by_sms_via_phone(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();

    // `?aal=aal2&via=phone`: exactly one address, so the code goes out at once.
    let flow = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("aal2 flow");
    assert_eq!(flow.state, v1::FlowState::CodeSent as i32);
    assert_eq!(
        flow.requested_aal,
        v1::AuthenticatorAssuranceLevel::Aal2 as i32
    );
    let sent_to = flow.code_sent_to.clone().expect("sent to");
    assert_eq!(sent_to.channel, v1::Channel::Sms as i32);
    assert_eq!(
        sent_to.masked_address,
        twofold::domain::mask::mask_address(&phone)
    );
    assert!(!sent_to.masked_address.contains(&phone[4..10]));
    assert!(
        flow.messages.iter().any(|m| m.id == 1_010_004),
        "kratos message ids"
    );
    assert!(flow.messages.iter().any(|m| m.id == 1_010_025));
    assert!(flow.resend_available_at.is_some());

    let sms = server.outbox.nth_to(&phone, 0).await;
    let code = support::server::code_in(&sms.body);
    assert!(sms.body.contains("Your login code is:"));
    assert!(
        sms.body.ends_with(&format!("@localhost #{code}")),
        "webotp line: {:?}",
        sms.body
    );

    let upgraded = submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("right code");
    assert_ne!(
        upgraded.session_token, user.token,
        "a new token replaces the old one"
    );
    let session = upgraded.session.expect("session");
    assert_eq!(session.aal, v1::AuthenticatorAssuranceLevel::Aal2 as i32);
    let methods: Vec<(i32, i32)> = session
        .authentication_methods
        .iter()
        .map(|m| (m.method, m.aal))
        .collect();
    assert_eq!(
        methods,
        vec![
            (
                v1::AuthenticationMethodType::Password as i32,
                v1::AuthenticatorAssuranceLevel::Aal1 as i32
            ),
            (
                v1::AuthenticationMethodType::Code as i32,
                v1::AuthenticatorAssuranceLevel::Aal2 as i32
            ),
        ]
    );
    assert_eq!(
        upgraded.flow.unwrap().state,
        v1::FlowState::PassedChallenge as i32
    );

    let session = whoami(
        &server,
        &upgraded.session_token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .expect("aal2");
    let identity = session.identity.expect("identity");
    let address = identity
        .verifiable_addresses
        .iter()
        .find(|a| a.value == phone)
        .expect("phone address");
    assert!(address.verified, "entering the code verified the phone");
    assert_token_rotated(&server, &server, &upgraded.session_token, &user.token).await;

    // The step-up's audit trail: the code went out, was used, and raised the session, each
    // once (the last two are written by the upgrade's own statement).
    let events = server.audit_events(&user.identity_id).await;
    let trail: Vec<(&str, Option<uuid::Uuid>)> = events
        .iter()
        .map(|event| (event.event.as_str(), event.flow_id))
        .collect();
    let flow_id = uuid::Uuid::parse_str(&flow.id).unwrap();
    assert_eq!(
        trail,
        vec![
            ("code.sent", Some(flow_id)),
            ("code.verified", Some(flow_id)),
            ("session.aal_changed", None),
        ]
    );

    // The passed flow keeps no address and is kept only for a few minutes, which it says; the
    // code cannot be submitted to it again.
    let passed = server
        .flows()
        .await
        .get_login_flow(with_bearer(
            v1::GetLoginFlowRequest {
                flow_id: flow.id.clone(),
            },
            &upgraded.session_token,
        ))
        .await
        .expect("a passed flow can still be read")
        .into_inner()
        .flow
        .expect("flow");
    assert_eq!(passed.state, v1::FlowState::PassedChallenge as i32);
    assert!(passed.code_choices.is_empty(), "{:?}", passed.code_choices);
    assert!(passed.code_sent_to.is_none());
    let kept_until = server.clock_now() + PASSED_FLOW_KEPT_FOR;
    assert_eq!(
        passed.expires_at.expect("expires_at").seconds,
        kept_until.timestamp()
    );
    let resubmitted = submit(&server, &upgraded.session_token, &flow.id, &code)
        .await
        .unwrap_err();
    assert_eq!(reason(&resubmitted), "FLOW_STATE_INVALID");
    if backend == Backend::PostgresRedis {
        // The store forgets the passed flow and its used challenge within a few minutes.
        let stored = server
            .context
            .stores
            .flows
            .get_flow(flow_id)
            .await
            .unwrap()
            .expect("still stored");
        let document: serde_json::Value = serde_json::from_slice(&stored.document).unwrap();
        let challenge_id = document["challenge_id"].as_str().expect("challenge id");
        for key in [
            format!("twofold:flow:{flow_id}"),
            format!("twofold:challenge:{challenge_id}"),
        ] {
            support::assert_expires_within(&key, PASSED_FLOW_KEPT_FOR).await;
        }
    }

    // Already at AAL2: another AAL2 flow needs `refresh`.
    let again = aal2_flow(&server, &upgraded.session_token, "phone")
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SESSION_ALREADY_AVAILABLE");
    server.stop().await;
}

async fn choose_method_lists_every_code_address(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let flow = aal2_flow(&server, &user.token, "").await.expect("flow");
    assert_eq!(
        flow.state,
        v1::FlowState::ChooseMethod as i32,
        "two addresses: the user chooses"
    );
    let channels: Vec<i32> = flow.code_choices.iter().map(|c| c.channel).collect();
    assert_eq!(
        channels,
        vec![v1::Channel::Email as i32, v1::Channel::Sms as i32]
    );
    assert!(
        flow.code_choices
            .iter()
            .all(|c| c.masked_address.contains('*'))
    );
    assert_eq!(
        server.outbox.count_to(&user.email),
        0,
        "nothing sent before a choice"
    );

    let email_choice = flow
        .code_choices
        .iter()
        .find(|c| c.channel == v1::Channel::Email as i32)
        .unwrap();
    let mut flows = server.flows().await;
    let sent = flows
        .send_login_code(with_bearer(
            v1::SendLoginCodeRequest {
                flow_id: flow.id.clone(),
                address_id: email_choice.address_id.clone(),
                ..Default::default()
            },
            &user.token,
        ))
        .await
        .expect("send")
        .into_inner()
        .flow
        .unwrap();
    assert_eq!(sent.state, v1::FlowState::CodeSent as i32);
    let email = server.outbox.nth_to(&user.email, 0).await;
    assert_eq!(email.subject.as_deref(), Some("Your login code"));

    // An address id that is not one of the flow's choices is refused: no made-up addresses.
    let refused = flows
        .send_login_code(with_bearer(
            v1::SendLoginCodeRequest {
                flow_id: flow.id.clone(),
                address_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            &user.token,
        ))
        .await
        .unwrap_err();
    assert!(["ADDRESS_NOT_ALLOWED", "CODE_RESEND_COOLDOWN"].contains(&reason(&refused).as_str()));

    let code = support::server::code_in(&email.body);
    let upgraded = submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("email code");
    assert_eq!(
        upgraded.session.unwrap().aal,
        v1::AuthenticatorAssuranceLevel::Aal2 as i32
    );
    server.stop().await;
}

async fn via_names_a_code_trait_with_a_value(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let without_phone = register_user(&server, None).await;
    let refused = aal2_flow(&server, &without_phone.token, "phone")
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "VIA_TRAIT_EMPTY");
    assert_eq!(violated_fields(&refused), vec!["via".to_owned()]);
    let refused = aal2_flow(&server, &without_phone.token, "nickname")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "VIA_TRAIT_UNKNOWN");
    // Without a session there is nothing to step up.
    let refused = server
        .flows()
        .await
        .create_login_flow(v1::CreateLoginFlowRequest {
            requested_aal: v1::AuthenticatorAssuranceLevel::Aal2 as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_AAL1_REQUIRED");
    server.stop().await;

    // With code MFA off, the AAL2 flow is refused.
    let server = TestServer::start(backend, "").await;
    let user = user_with_phone(&server).await;
    let refused = aal2_flow(&server, &user.token, "phone").await.unwrap_err();
    assert_eq!(reason(&refused), "METHOD_DISABLED");
    server.stop().await;
}

async fn c1_codes_are_six_ascii_digits(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let mut seen_leading_zero_support = Vec::new();
    for nth in 0..3 {
        let flow = aal2_flow(&server, &user.token, "phone")
            .await
            .expect("flow");
        let code = server.outbox.code_to(&phone, nth).await;
        assert_eq!(code.len(), 6, "{code}");
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        seen_leading_zero_support.push(code);
        let _ = flow;
    }
    // Three flows, three independent codes (equal codes would hint at a broken generator).
    seen_leading_zero_support.dedup();
    assert_eq!(seen_leading_zero_support.len(), 3);
    server.stop().await;

    // A configured length above six is honoured.
    let server = TestServer::start(backend, &with_config("        length: 8\n")).await;
    let user = user_with_phone(&server).await;
    aal2_flow(&server, &user.token, "phone")
        .await
        .expect("flow");
    let code = server.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;
    assert_eq!(code.len(), 8);
    server.stop().await;
}

async fn c2_no_code_is_stored_or_queued_in_plaintext(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let flow = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("flow");
    let code = server.outbox.code_to(&phone, 0).await;

    // The outbox holds sealed data only.
    let messages = server
        .context
        .stores
        .outbox
        .list_messages(None, Some(&phone), None, 10)
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert!(
        !messages[0]
            .sealed_data
            .windows(code.len())
            .any(|w| w == code.as_bytes())
    );
    // The challenge holds a MAC, not the code.
    let flow_id = uuid::Uuid::parse_str(&flow.id).unwrap();
    let stored_flow = server
        .context
        .stores
        .flows
        .get_flow(flow_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored_flow.document).contains(&code));

    if backend == Backend::PostgresRedis {
        // Every value of every table, and every Redis value under Twofold's prefix.
        let dsn = server.context.settings().config.dsn.clone().unwrap();
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&dsn)
            .await
            .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        assert!(tables.len() >= 5, "{tables:?}");
        for table in tables {
            let query = format!(
                "SELECT coalesce(string_agg(row_to_json(t)::text, ''), '') FROM \"{table}\" t"
            );
            let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
                .fetch_one(&mut connection)
                .await
                .unwrap();
            assert!(!dump.contains(&code), "table {table} holds the code");
            assert!(
                !dump.contains(&user.token),
                "table {table} holds a session token"
            );
        }
        let mut redis = support::redis_connection().await;
        let keys = support::redis_keys("twofold:*").await;
        assert!(!keys.is_empty());
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap();
            let dump = match kind.as_str() {
                "hash" => {
                    let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut redis)
                        .await
                        .unwrap();
                    fields.concat()
                }
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Vec<u8>>(&mut redis)
                    .await
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            assert!(
                !dump.windows(code.len()).any(|w| w == code.as_bytes()),
                "redis key {key} holds the code"
            );
        }
    }
    server.stop().await;
}

async fn c3_a_code_submitted_one_second_late_fails(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();

    // Just in time: 15 minutes less one second later, the code works.
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 0).await;
    server
        .clock
        .advance(chrono::Duration::minutes(15) - chrono::Duration::seconds(1));
    let upgraded = submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("in time");

    // One second late, the right code fails.
    let flow = aal2_flow_refresh(&server, &upgraded.session_token).await;
    let code = server.outbox.code_to(&phone, 1).await;
    server
        .clock
        .advance(chrono::Duration::minutes(15) + chrono::Duration::seconds(1));
    let late = submit(&server, &upgraded.session_token, &flow.id, &code)
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "CODE_INVALID");
    server.stop().await;
}

async fn aal2_flow_refresh(server: &TestServer, token: &str) -> v1::LoginFlow {
    server
        .flows()
        .await
        .create_login_flow(with_bearer(
            v1::CreateLoginFlowRequest {
                requested_aal: v1::AuthenticatorAssuranceLevel::Aal2 as i32,
                via: "phone".into(),
                refresh: true,
            },
            token,
        ))
        .await
        .expect("refresh flow")
        .into_inner()
        .flow
        .unwrap()
}

async fn c4_sixty_four_concurrent_right_codes_upgrade_once(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;

    let channel = server.public_channel().await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut flows = v1::flow_service_client::FlowServiceClient::new(channel.clone());
        let request = with_bearer(
            v1::SubmitLoginCodeRequest {
                flow_id: flow.id.clone(),
                code: code.clone(),
            },
            &user.token,
        );
        tasks.push(tokio::spawn(async move {
            flows.submit_login_code(request).await
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        if let Ok(response) = task.await.unwrap() {
            tokens.push(response.into_inner().session_token);
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one submission succeeds");
    let sessions = server
        .session_admin()
        .await
        .list_identity_sessions(admin(v1::ListIdentitySessionsRequest {
            identity_id: user.identity_id.clone(),
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let aal2: Vec<_> = sessions
        .iter()
        .filter(|s| s.aal == v1::AuthenticatorAssuranceLevel::Aal2 as i32)
        .collect();
    assert_eq!(aal2.len(), 1, "exactly one session upgrade exists");
    whoami(&server, &tokens[0], v1::RequiredAal::HighestAvailable)
        .await
        .expect("the winner's token works");
    server.stop().await;
}

async fn c5_a_code_is_bound_to_its_flow_and_identity(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let alice = user_with_phone(&server).await;
    let bob = user_with_phone(&server).await;
    let alice_flow = aal2_flow(&server, &alice.token, "phone").await.unwrap();
    let alice_code = server
        .outbox
        .code_to(alice.phone.as_ref().unwrap(), 0)
        .await;
    let alice_second = aal2_flow(&server, &alice.token, "phone").await.unwrap();
    let bob_flow = aal2_flow(&server, &bob.token, "phone").await.unwrap();

    // Flow A's code fails in flow B of the same user, and in another user's flow.
    let refused = submit(&server, &alice.token, &alice_second.id, &alice_code)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CODE_INVALID");
    let refused = submit(&server, &bob.token, &bob_flow.id, &alice_code)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CODE_INVALID");
    // Another user's session cannot drive Alice's flow at all.
    let refused = submit(&server, &bob.token, &alice_flow.id, &alice_code)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "FLOW_SESSION_MISMATCH");
    // In its own flow it still works (the wrong tries elsewhere did not burn it).
    submit(&server, &alice.token, &alice_flow.id, &alice_code)
        .await
        .expect("own flow");
    server.stop().await;
}

async fn c6_resend_kills_the_old_code_and_has_a_cooldown(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let old_code = server.outbox.code_to(&phone, 0).await;

    let mut flows = server.flows().await;
    let resend = v1::ResendLoginCodeRequest {
        flow_id: flow.id.clone(),
    };
    let refused = flows
        .resend_login_code(with_bearer(resend.clone(), &user.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "CODE_RESEND_COOLDOWN");
    let retry = retry_delay(&refused);
    assert!(retry.as_secs() > 0 && retry.as_secs() <= 30, "{retry:?}");

    server.clock.advance(chrono::Duration::seconds(31));
    let resent = flows
        .resend_login_code(with_bearer(resend, &user.token))
        .await
        .expect("resend")
        .into_inner();
    assert_eq!(resent.flow.unwrap().state, v1::FlowState::CodeSent as i32);
    let new_code = server.outbox.code_to(&phone, 1).await;
    if new_code != old_code {
        let refused = submit(&server, &user.token, &flow.id, &old_code)
            .await
            .unwrap_err();
        assert_eq!(
            reason(&refused),
            "CODE_INVALID",
            "the old code died with the resend"
        );
    }
    submit(&server, &user.token, &flow.id, &new_code)
        .await
        .expect("new code works");
    server.stop().await;
}

async fn c7_malformed_codes_are_refused_without_counting(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;
    let full_width: String = code
        .chars()
        .map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap())
        .collect();
    let malformed = [
        full_width,
        format!("{} {}", &code[..3], &code[3..]),
        format!("{code}0"),
        code[..5].to_owned(),
        format!(" {code}"),
        "abcdef".to_owned(),
        String::new(),
    ];
    // More malformed inputs than max_submissions: had they counted, the right code would fail.
    for input in malformed.iter().chain(malformed.iter()) {
        let refused = submit(&server, &user.token, &flow.id, input)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{input:?}");
        assert_eq!(reason(&refused), "VALIDATION_FAILED", "{input:?}");
        assert_eq!(violated_fields(&refused), vec!["code".to_owned()]);
    }
    submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("nothing was counted");
    server.stop().await;
}

async fn g1_max_submissions_then_even_the_right_code_fails(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 0).await;
    for _ in 0..5 {
        let refused = submit(&server, &user.token, &flow.id, &wrong(&code))
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "CODE_INVALID");
    }
    let refused = submit(&server, &user.token, &flow.id, &code)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CODE_SUBMITTED_TOO_OFTEN");
    // A new code gives a fresh set of tries (unlike Kratos, the flow is not dead).
    server.clock.advance(chrono::Duration::seconds(31));
    server
        .flows()
        .await
        .resend_login_code(with_bearer(
            v1::ResendLoginCodeRequest {
                flow_id: flow.id.clone(),
            },
            &user.token,
        ))
        .await
        .expect("resend");
    let new_code = server.outbox.code_to(&phone, 1).await;
    submit(&server, &user.token, &flow.id, &new_code)
        .await
        .expect("new code works");
    server.stop().await;
}

/// The identity's failure budget as the server's store reads it now.
async fn failure_state(
    server: &TestServer,
    identity_id: uuid::Uuid,
) -> twofold::store::codes::FailureState {
    server
        .context
        .stores
        .budget
        .failure_state(identity_id, server.clock_now())
        .await
        .unwrap()
}

async fn g2_g4_identity_budget_across_flows_and_locked_answers_look_wrong(backend: Backend) {
    // Sessions outlive the lockout, so the same session can try again after it.
    let yaml = format!(
        "session:\n  lifespan: 72h\n{}",
        with_config("        identity_failure_budget: 8\n        max_submissions: 3\n")
    );
    let server = TestServer::start(backend, &yaml).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let identity_id = uuid::Uuid::parse_str(&user.identity_id).unwrap();
    // Many flows × a few guesses: 4 flows × 3 = 12 guesses, but the budget is 8.
    let mut answers = Vec::new();
    for nth in 0..4 {
        let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
        let code = server.outbox.code_to(&phone, nth).await;
        for _ in 0..3 {
            answers.push(reason(
                &submit(&server, &user.token, &flow.id, &wrong(&code))
                    .await
                    .unwrap_err(),
            ));
        }
    }
    assert!(answers.iter().all(|r| r == "CODE_INVALID"), "{answers:?}");
    let state = failure_state(&server, identity_id).await;
    assert!(
        state.locked_until.is_some(),
        "the identity is locked after its budget: {state:?}"
    );

    // Locked: the right code gets the same answer as a wrong one (G4).
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 4).await;
    let right = submit(&server, &user.token, &flow.id, &code)
        .await
        .unwrap_err();
    let wrong_answer = submit(&server, &user.token, &flow.id, &wrong(&code))
        .await
        .unwrap_err();
    assert_eq!(reason(&right), "CODE_INVALID");
    assert_eq!(right.code(), wrong_answer.code());
    assert_eq!(right.message(), wrong_answer.message());

    // The budget lives in SQL, not Redis, and audit records show the lockout (L2).
    let events = server.audit_events(&user.identity_id).await;
    assert!(
        events.iter().any(|e| e.event == "code.locked_out"),
        "{:?}",
        events.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
    assert!(events.iter().filter(|e| e.event == "code.failed").count() >= 7);
    assert!(events.iter().all(|e| {
        e.address_hash
            .as_deref()
            .is_none_or(|h| !h.contains(&phone))
    }));

    // Lockout is temporary (G3): after it ends, a new code works and resets the count.
    server.clock.advance(chrono::Duration::hours(25));
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 5).await;
    submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("unlocked");
    let state = failure_state(&server, identity_id).await;
    assert_eq!(state.failures, 0);
    assert!(
        !state.recorded,
        "the success cleared the lockout history, not only the expired window"
    );
    server.stop().await;
}

/// While the identity is locked its right code is refused without being compared: once the
/// lockout is over, the same code still works in the same flow, although one counted try
/// (`max_submissions: 1`) or a consumed code would refuse it.
async fn g4_a_locked_identitys_code_is_neither_counted_nor_consumed(backend: Backend) {
    let server = TestServer::start(
        backend,
        &with_config(concat!(
            "        identity_failure_budget: 2\n",
            "        max_submissions: 1\n",
            "        failure_window: 1m\n"
        )),
    )
    .await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    for nth in 0..2 {
        let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
        let code = server.outbox.code_to(&phone, nth).await;
        let refused = submit(&server, &user.token, &flow.id, &wrong(&code))
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "CODE_INVALID");
    }
    let identity_id = uuid::Uuid::parse_str(&user.identity_id).unwrap();
    let state = failure_state(&server, identity_id).await;
    assert!(state.locked_until.is_some(), "locked: {state:?}");

    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 2).await;
    let locked = submit(&server, &user.token, &flow.id, &code)
        .await
        .unwrap_err();
    assert_eq!(reason(&locked), "CODE_INVALID");

    // The lockout (one window) ends long before the code or the flow does.
    server.clock.advance(chrono::Duration::minutes(2));
    submit(&server, &user.token, &flow.id, &code)
        .await
        .expect("the code refused during the lockout works after it");
    server.stop().await;
}

async fn a1_a2_aal_enforced_and_token_rotated(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let refused = whoami(&server, &user.token, v1::RequiredAal::HighestAvailable)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_AAL2_REQUIRED");
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;
    let upgraded = submit(&server, &user.token, &flow.id, &code).await.unwrap();
    assert!(upgraded.session_token.len() >= 40);
    assert_token_rotated(&server, &server, &upgraded.session_token, &user.token).await;
    server.stop().await;
}

async fn a5_s5_email_policy_and_different_factors(backend: Backend) {
    // S5: email codes do not count as a second factor.
    let server = TestServer::start(
        backend,
        &with_config("        email_counts_as_aal2: false\n"),
    )
    .await;
    let user = user_with_phone(&server).await;
    let flow = aal2_flow(&server, &user.token, "").await.unwrap();
    assert_eq!(
        flow.state,
        v1::FlowState::CodeSent as i32,
        "only the phone is left, so it is sent at once"
    );
    assert_eq!(flow.code_choices.len(), 1);
    assert_eq!(flow.code_choices[0].channel, v1::Channel::Sms as i32);
    let refused = aal2_flow(&server, &user.token, "email").await.unwrap_err();
    assert_eq!(reason(&refused), "ADDRESS_NOT_ALLOWED");
    let email_only = register_user(&server, None).await;
    let refused = aal2_flow(&server, &email_only.token, "").await.unwrap_err();
    assert_eq!(reason(&refused), "METHOD_DISABLED");
    whoami(
        &server,
        &email_only.token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .expect("nothing above aal1 is available");
    server.stop().await;

    // A5: a session whose first factor was a code to the email cannot use that email again.
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let identity_id = uuid::Uuid::parse_str(&user.identity_id).unwrap();
    let (_, token) = twofold::domain::sessions::issue(
        &server.context,
        identity_id,
        vec![twofold::domain::session::AuthenticationMethod {
            method: twofold::domain::session::MethodKind::Code,
            aal: twofold::domain::aal::Aal::Aal1,
            completed_at: server.clock_now(),
            channel: Some(twofold::domain::aal::Channel::Email),
            address_hash: Some(twofold::domain::mask::address_hash(&user.email)),
        }],
    )
    .await
    .unwrap();
    let flow = aal2_flow(&server, token.expose(), "").await.unwrap();
    let channels: Vec<i32> = flow.code_choices.iter().map(|c| c.channel).collect();
    assert_eq!(
        channels,
        vec![v1::Channel::Sms as i32],
        "the email that was the first factor is not offered"
    );
    let refused = aal2_flow(&server, token.expose(), "email")
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADDRESS_NOT_ALLOWED");
    server.stop().await;
}

async fn passwordless_login_by_code_is_enumeration_safe(backend: Backend) {
    let server = TestServer::start(
        backend,
        "selfservice:\n  methods:\n    code:\n      passwordless_enabled: true\n",
    )
    .await;
    let user = user_with_phone(&server).await;
    let mut flows = server.flows().await;
    let send = |identifier: String| {
        let mut flows = flows.clone();
        async move {
            let flow = flows
                .create_login_flow(v1::CreateLoginFlowRequest::default())
                .await
                .unwrap()
                .into_inner()
                .flow
                .unwrap();
            assert!(flow.methods.contains(&"code".to_owned()));
            flows
                .send_login_code(v1::SendLoginCodeRequest {
                    flow_id: flow.id,
                    identifier,
                    ..Default::default()
                })
                .await
                .expect("send")
                .into_inner()
                .flow
                .unwrap()
        }
    };
    let known = send(user.email.to_uppercase()).await;
    let unknown = send(unique_email("nobody")).await;
    // Same shape for both: state, channel, messages (ids and masked text aside).
    assert_eq!(known.state, unknown.state);
    assert_eq!(known.methods, unknown.methods);
    assert_eq!(
        known.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        unknown.messages.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    let (k, u) = (
        known.code_sent_to.clone().unwrap(),
        unknown.code_sent_to.clone().unwrap(),
    );
    assert_eq!(
        (k.channel, k.r#trait.as_str()),
        (u.channel, u.r#trait.as_str())
    );
    assert_eq!(known.code_choices.len(), unknown.code_choices.len());

    let code = server.outbox.code_to(&user.email, 0).await;
    let logged_in = flows
        .submit_login_code(v1::SubmitLoginCodeRequest {
            flow_id: known.id.clone(),
            code: code.clone(),
        })
        .await
        .expect("passwordless login")
        .into_inner();
    let session = logged_in.session.unwrap();
    assert_eq!(session.aal, v1::AuthenticatorAssuranceLevel::Aal1 as i32);
    assert_eq!(
        session.authentication_methods[0].method,
        v1::AuthenticationMethodType::Code as i32
    );
    let refused = flows
        .submit_login_code(v1::SubmitLoginCodeRequest {
            flow_id: unknown.id,
            code,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CODE_INVALID");
    assert_eq!(
        server.outbox.all().len(),
        1,
        "nothing was sent for the unknown identifier"
    );
    server.stop().await;
}

async fn code_service_send_verify_idempotent(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let mut codes = server.codes().await;
    let request = v1::SendCodeRequest {
        identity_id: user.identity_id.clone(),
        target: Some(v1::send_code_request::Target::Via("phone".into())),
        purpose: "confirm-payout".into(),
        locale: String::new(),
        request_id: "payout-42".into(),
    };
    let first = codes
        .send_code(admin(request.clone()))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(first.channel, v1::Channel::Sms as i32);
    assert!(first.masked_address.contains('*'));
    let retry = codes
        .send_code(admin(request))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        retry.challenge_id, first.challenge_id,
        "a retry returns the first challenge"
    );
    let code = server.outbox.code_to(&phone, 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.outbox.count_to(&phone), 1, "and sends nothing");
    assert!(
        server
            .outbox
            .nth_to(&phone, 0)
            .await
            .body
            .contains("verification code")
    );

    let verify = |code: String, purpose: &str| v1::VerifyCodeRequest {
        challenge_id: first.challenge_id.clone(),
        code,
        purpose: purpose.into(),
    };
    let answer = codes
        .verify_code(admin(verify(wrong(&code), "confirm-payout")))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.verified);
    assert_eq!(answer.failure_reason, v1::ErrorReason::CodeInvalid as i32);
    let answer = codes
        .verify_code(admin(verify(code.clone(), "another-purpose")))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.verified, "a code verifies only for its purpose");
    let answer = codes
        .verify_code(admin(verify(code.clone(), "confirm-payout")))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.verified);
    assert_eq!(answer.identity_id, user.identity_id);
    let answer = codes
        .verify_code(admin(verify(code, "confirm-payout")))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.verified, "single use");
    if backend == Backend::PostgresRedis {
        // A used CodeService challenge keeps its whole life: a retried SendCode with the same
        // request_id must still find it.
        let remaining =
            support::redis_pttl(&format!("twofold:challenge:{}", first.challenge_id)).await;
        assert!(
            remaining > FLOW_CHALLENGE_KEPT_AFTER_USE.as_millis() as i64,
            "{remaining} ms"
        );
    }

    // S1: only the identity's own addresses.
    let refused = codes
        .send_code(admin(v1::SendCodeRequest {
            identity_id: user.identity_id.clone(),
            target: Some(v1::send_code_request::Target::Address(
                "+4915199999999".into(),
            )),
            purpose: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADDRESS_NOT_ALLOWED");
    let refused = codes
        .send_code(admin(v1::SendCodeRequest {
            identity_id: user.identity_id.clone(),
            target: None,
            purpose: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), vec!["target".to_owned()]);
    let refused = codes
        .verify_code(admin(v1::VerifyCodeRequest {
            challenge_id: uuid::Uuid::new_v4().to_string(),
            code: "123456".into(),
            purpose: "x".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CHALLENGE_NOT_FOUND");
    server.stop().await;
}

/// The challenges of `identity_id` stored in Redis (keys of other tests' identities skipped).
async fn stored_challenges_of(identity_id: &str) -> usize {
    stored_in_redis("twofold:challenge:*", "identity_id", identity_id).await
}

/// The login flows of `identity_id` stored in Redis: their documents name it.
async fn stored_flows_of(identity_id: &str) -> usize {
    stored_in_redis("twofold:flow:*", "doc", identity_id).await
}

/// Hashes under keys matching `pattern` whose `field` holds `identity_id`.
async fn stored_in_redis(pattern: &str, field: &str, identity_id: &str) -> usize {
    let mut redis = support::redis_connection().await;
    let mut count = 0;
    for key in support::redis_keys(pattern).await {
        let value: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(field)
            .query_async(&mut redis)
            .await
            .unwrap();
        count += usize::from(value.is_some_and(|value| value.contains(identity_id)));
    }
    count
}

async fn send_limits_refuse_and_leave_no_challenge(backend: Backend) {
    let server = TestServer::start(
        backend,
        &with_config("        sends_per_address_per_hour: 2\n"),
    )
    .await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let mut codes = server.codes().await;
    let send = |request_id: &str| {
        admin(v1::SendCodeRequest {
            identity_id: user.identity_id.clone(),
            target: Some(v1::send_code_request::Target::Via("phone".into())),
            purpose: "confirm-payout".into(),
            locale: String::new(),
            request_id: request_id.into(),
        })
    };
    let mut sent = Vec::new();
    for request_id in ["first", "second"] {
        sent.push(codes.send_code(send(request_id)).await.expect("send"));
    }
    let refused = codes.send_code(send("third")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let retry = retry_delay(&refused);
    // The time left in the hour's window: under a second in its last second.
    assert!(
        retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(3600),
        "{retry:?}"
    );
    // A retry of the refused request is refused again, not answered with a challenge.
    let retried = codes.send_code(send("third")).await.unwrap_err();
    assert_eq!(reason(&retried), "RATE_LIMITED");

    server.outbox.code_to(&phone, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        server.outbox.count_to(&phone),
        2,
        "nothing sent when refused"
    );
    if backend == Backend::PostgresRedis {
        // The refused sends' challenges were stored while the limits were counted; they are
        // gone again.
        assert_eq!(stored_challenges_of(&user.identity_id).await, 2);
    }
    // The two codes that went out still verify.
    for (index, answer) in sent.into_iter().enumerate() {
        let code = server.outbox.code_to(&phone, index).await;
        let verified = codes
            .verify_code(admin(v1::VerifyCodeRequest {
                challenge_id: answer.into_inner().challenge_id,
                code,
                purpose: "confirm-payout".into(),
            }))
            .await
            .expect("verify")
            .into_inner();
        assert!(verified.verified);
    }
    server.stop().await;
}

/// The flow is stored in the same round trip as the challenge, while the send limits are
/// counted; a send they refuse takes both away again, so refused step-ups hold no memory.
async fn a_login_flow_the_send_limits_refuse_leaves_no_flow(backend: Backend) {
    let server = TestServer::start(
        backend,
        &with_config("        sends_per_address_per_hour: 1\n"),
    )
    .await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let first = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("the first send is allowed");
    for _ in 0..3 {
        let refused = aal2_flow(&server, &user.token, "phone").await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(reason(&refused), "RATE_LIMITED");
    }
    let code = server.outbox.code_to(&phone, 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        server.outbox.count_to(&phone),
        1,
        "nothing sent when refused"
    );
    if backend == Backend::PostgresRedis {
        assert_eq!(stored_flows_of(&user.identity_id).await, 1);
        assert_eq!(stored_challenges_of(&user.identity_id).await, 1);
    }
    // The flow that was allowed still takes its code.
    submit(&server, &user.token, &first.id, &code)
        .await
        .expect("the allowed flow's code");
    server.stop().await;
}

async fn courier_abandons_messages_whose_code_expired(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        MFA,
        Options {
            courier: support::server::Courier::Off,
            redis_url: None,
        },
    )
    .await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    aal2_flow(&server, &user.token, "phone").await.unwrap();
    server.clock.advance(chrono::Duration::minutes(16));
    assert_eq!(server.deliver_once().await, 1);
    assert_eq!(
        server.outbox.count_to(&phone),
        0,
        "an expired code is never sent"
    );
    let messages = server
        .context
        .stores
        .outbox
        .list_messages(None, Some(&phone), None, 10)
        .await
        .unwrap();
    assert_eq!(
        messages[0].status,
        twofold::store::codes::MessageStatus::Abandoned
    );

    // A fresh one is delivered and its attempt recorded.
    let refreshed = aal2_flow(&server, &user.token, "phone").await.unwrap();
    assert_eq!(server.deliver_once().await, 1);
    assert_eq!(server.outbox.count_to(&phone), 1);
    let messages = server
        .context
        .stores
        .outbox
        .list_messages(None, Some(&phone), None, 10)
        .await
        .unwrap();
    let sent = messages
        .iter()
        .find(|m| m.status == twofold::store::codes::MessageStatus::Sent)
        .expect("sent");
    let attempts = server
        .context
        .stores
        .outbox
        .attempts(sent.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].succeeded);
    let _ = refreshed;

    // CourierService shows both, filtered and masked, with attempts and never a body.
    let mut courier =
        v1::courier_service_client::CourierServiceClient::new(server.admin_channel().await);
    let abandoned = courier
        .list_messages(admin(v1::ListMessagesRequest {
            status: v1::MessageStatus::Abandoned as i32,
            recipient: phone.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(abandoned.len(), 1);
    assert_eq!(
        abandoned[0].masked_recipient,
        twofold::domain::mask::mask_address(&phone)
    );
    let all = courier
        .list_messages(admin(v1::ListMessagesRequest {
            recipient: phone.clone(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.messages.len(), 1);
    assert!(
        !all.next_page_token.is_empty(),
        "two messages, pages of one"
    );
    let detail = courier
        .get_message(admin(v1::GetMessageRequest {
            message_id: sent.id.to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(detail.status, v1::MessageStatus::Sent as i32);
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(detail.attempts[0].gateway, "test");
    assert!(
        !format!("{detail:?}").contains(&phone),
        "no full number in the answer"
    );
    let missing = courier
        .get_message(admin(v1::GetMessageRequest {
            message_id: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&missing), "MESSAGE_NOT_FOUND");
    server.stop().await;
}

async fn l1_no_code_token_or_phone_in_logs(backend: Backend) {
    let server = TestServer::start(backend, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 0).await;
    let _ = submit(&server, &user.token, &flow.id, &wrong(&code)).await;
    let upgraded = submit(&server, &user.token, &flow.id, &code).await.unwrap();
    let logs = support::logs::text();
    assert!(logs.contains("code verified"), "the capture works");
    for secret in [
        code.as_str(),
        user.token.as_str(),
        upgraded.session_token.as_str(),
        phone.as_str(),
        &phone[3..],
    ] {
        assert!(!logs.contains(secret), "a log line holds a secret");
    }
    server.stop().await;
}

/// The session of `token` is still at AAL1: no upgrade happened.
async fn assert_not_upgraded(server: &TestServer, token: &str) {
    let still_aal1 = whoami(server, token, v1::RequiredAal::HighestAvailable)
        .await
        .unwrap_err();
    assert_eq!(
        reason(&still_aal1),
        "SESSION_AAL2_REQUIRED",
        "no upgrade happened"
    );
}

/// T3: a session row that another transaction holds (an operator's open `psql` transaction, a
/// batch job) does not hold the step-up for as long as that transaction stays open. After the
/// store's lock timeout (a second) the caller learns the store is unavailable, with why, and
/// nothing was upgraded; once the other transaction ends, a new code upgrades the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_a_session_locked_elsewhere_fails_closed_and_loses_nothing() {
    use sqlx::Connection;
    let server = TestServer::start(Backend::PostgresRedis, MFA).await;
    let user = user_with_phone(&server).await;
    let phone = user.phone.clone().unwrap();
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 0).await;
    let dsn = server.context.settings().config.dsn.clone().unwrap();
    let mut holder = sqlx::PgConnection::connect(&dsn).await.unwrap();
    let mut other = holder.begin().await.unwrap();
    let held: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE identity_id = $1 FOR UPDATE")
            .bind(uuid::Uuid::parse_str(&user.identity_id).unwrap())
            .fetch_all(&mut *other)
            .await
            .unwrap();
    assert!(!held.is_empty(), "the user's sessions are locked");

    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        submit(&server, &user.token, &flow.id, &code),
    )
    .await
    .expect("the step-up does not wait for the other transaction")
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "STORE_UNAVAILABLE");
    assert!(refused.message().contains("locked"), "{refused:?}");
    other.rollback().await.unwrap();
    assert_not_upgraded(&server, &user.token).await;

    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(&phone, 1).await;
    let upgraded = submit(&server, &user.token, &flow.id, &code).await.unwrap();
    whoami(
        &server,
        &upgraded.session_token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .expect("raised to AAL2 once the row was free");
    let _ = holder.close().await;
    server.stop().await;
}

/// T3: with Redis gone, nothing fails open. The right code is not accepted, no session is
/// upgraded, and the caller learns the store is unavailable (reason STORE_UNAVAILABLE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_redis_down_fails_closed() {
    support::logs::capture();
    // A Redis of this test's own, so stopping it disturbs no other test.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed by scripts/services.sh");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url: &'static str = Box::leak(format!("redis://127.0.0.1:{port}").into_boxed_str());
    let server = TestServer::start_with(
        Backend::PostgresRedis,
        MFA,
        Options {
            courier: support::server::Courier::Capture,
            redis_url: Some(url),
        },
    )
    .await;
    let user = user_with_phone(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone").await.unwrap();
    let code = server.outbox.code_to(user.phone.as_ref().unwrap(), 0).await;

    redis.kill().unwrap();
    redis.wait().unwrap();

    let refused = submit(&server, &user.token, &flow.id, &code)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "STORE_UNAVAILABLE");
    assert!(
        !refused.message().contains("redis://"),
        "no internals in the error"
    );
    assert_not_upgraded(&server, &user.token).await;
    let refused = aal2_flow(&server, &user.token, "phone").await.unwrap_err();
    assert_eq!(reason(&refused), "STORE_UNAVAILABLE");
    server.stop().await;
}
