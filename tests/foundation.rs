//! The foundation over real gRPC, on the embedded default and on Postgres + Redis: registration,
//! password login, WhoAmI with AAL enforcement, identity schema errors, admin key, sessions,
//! limits, health, reflection and grpc-web with CORS.

#[macro_use]
mod support;

use support::flows::{PASSWORD, password_login, register, whoami};

use support::server::{
    ADMIN_KEY, Backend, TestServer, admin, reason, traits, unique_email, violated_fields,
    with_bearer,
};
use tonic::Code;
use twofold::domain::flows::PASSED_FLOW_KEPT_FOR;
use twofold::proto::v1;

on_every_backend!(
    register_login_whoami_logout,
    whoami_requires_aal2_when_code_mfa_is_available,
    identity_schema_rejects_bad_traits_with_field_errors,
    duplicate_identifiers_are_refused_and_named,
    wrong_password_and_unknown_identifier_get_the_same_answer,
    a_login_flow_completes_only_once,
    admin_calls_need_the_admin_key,
    admin_and_public_services_stay_on_their_own_listeners,
    identity_administration_round_trip,
    admin_revocation_takes_effect_at_once,
    aal2_login_flow_needs_a_session,
);

async fn register_login_whoami_logout(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let email = unique_email("Jane");
    let registered = register(&server, &email, Some("+49 151 12345678")).await;

    // The registration session is AAL1 with one password factor.
    let session = whoami(&server, &registered.token, v1::RequiredAal::Aal1)
        .await
        .expect("whoami");
    assert_eq!(session.aal, v1::AuthenticatorAssuranceLevel::Aal1 as i32);
    let identity = session.identity.expect("identity");
    assert_eq!(identity.id, registered.identity_id);
    let traits = twofold::api::convert::struct_to_json(identity.traits);
    assert_eq!(
        traits["email"],
        email.to_lowercase(),
        "emails are stored lower-cased"
    );
    assert_eq!(
        traits["phone"], "+4915112345678",
        "phones are stored in E.164"
    );

    // Password login with the identifier typed in another case.
    let logged_in = password_login(&server, &email.to_uppercase(), PASSWORD)
        .await
        .expect("login");
    assert_ne!(logged_in.session_token, registered.token);
    assert!(
        logged_in.session_token.len() >= 40,
        "tokens carry at least 128 bits"
    );
    let flow = logged_in.flow.expect("flow");
    assert_eq!(flow.state, v1::FlowState::PassedChallenge as i32);

    let session = whoami(&server, &logged_in.session_token, v1::RequiredAal::Aal1)
        .await
        .expect("whoami");
    assert!(session.active);
    assert_eq!(session.aal, v1::AuthenticatorAssuranceLevel::Aal1 as i32);
    let methods: Vec<i32> = session
        .authentication_methods
        .iter()
        .map(|m| m.method)
        .collect();
    assert_eq!(methods, vec![v1::AuthenticationMethodType::Password as i32]);
    assert!(
        session.expires_at.expect("expiry").seconds > session.issued_at.expect("issued").seconds
    );

    // Logout revokes exactly the presented token.
    server
        .sessions()
        .await
        .logout(with_bearer(v1::LogoutRequest {}, &logged_in.session_token))
        .await
        .expect("logout");
    let refused = whoami(&server, &logged_in.session_token, v1::RequiredAal::Aal1)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "SESSION_INACTIVE");
    whoami(&server, &registered.token, v1::RequiredAal::Aal1)
        .await
        .expect("the other session still works");

    // No token at all is the same answer as a revoked one.
    let anonymous = server
        .sessions()
        .await
        .who_am_i(v1::WhoAmIRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&anonymous), "SESSION_INACTIVE");
    server.stop().await;
}

async fn whoami_requires_aal2_when_code_mfa_is_available(backend: Backend) {
    let server = TestServer::start(
        backend,
        "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n",
    )
    .await;
    let registered = register(&server, &unique_email("mfa"), Some("+4915112345601")).await;

    let refused = whoami(
        &server,
        &registered.token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused), "SESSION_AAL2_REQUIRED");
    // Unspecified means the server default, `session.whoami.required_aal: highest_available`.
    let refused = whoami(&server, &registered.token, v1::RequiredAal::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_AAL2_REQUIRED");
    whoami(&server, &registered.token, v1::RequiredAal::Aal1)
        .await
        .expect("aal1 is enough when asked for");
    server.stop().await;

    // When email codes do not count as a second factor, an identity with only an email has
    // nothing higher than AAL1 available, so its AAL1 session passes.
    let server = TestServer::start(
        backend,
        "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n      config:\n        email_counts_as_aal2: false\n",
    )
    .await;
    let email_only = register(&server, &unique_email("email-only"), None).await;
    whoami(
        &server,
        &email_only.token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .expect("aal1 is the highest available");
    let with_phone = register(&server, &unique_email("phone"), Some("+4915112345602")).await;
    let refused = whoami(
        &server,
        &with_phone.token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_AAL2_REQUIRED");
    server.stop().await;
}

async fn identity_schema_rejects_bad_traits_with_field_errors(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let mut identities = server.identities().await;

    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({ "phone": "+4915112345678" }),
            "traits.email",
        ),
        (
            serde_json::json!({ "email": "not-an-email" }),
            "traits.email",
        ),
        (
            serde_json::json!({ "email": unique_email("p"), "phone": "+1 555" }),
            "traits.phone",
        ),
        (
            serde_json::json!({ "email": unique_email("x"), "nickname": "x" }),
            "traits.nickname",
        ),
    ];
    for (bad_traits, field) in cases {
        let refused = identities
            .create_identity(admin(v1::CreateIdentityRequest {
                traits: Some(twofold::api::convert::json_to_struct(&bad_traits)),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad_traits}");
        assert_eq!(reason(&refused), "TRAITS_INVALID", "{bad_traits}");
        assert!(
            violated_fields(&refused).iter().any(|f| f == field),
            "{bad_traits}: expected a violation of {field}, got {:?}",
            violated_fields(&refused)
        );
        assert!(
            !refused.message().contains("+1 555"),
            "values never appear in errors"
        );
    }

    // Registration reports the same way, and nothing was created.
    let mut flows = server.flows().await;
    let flow = flows
        .create_registration_flow(v1::CreateRegistrationFlowRequest::default())
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let refused = flows
        .submit_registration_flow(v1::SubmitRegistrationFlowRequest {
            flow_id: flow.id.clone(),
            traits: Some(traits("bad", None)),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TRAITS_INVALID");
    assert_eq!(violated_fields(&refused), vec!["traits.email".to_owned()]);
    let listed = identities
        .list_identities(admin(v1::ListIdentitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.identities.is_empty(), "no identity was written");

    // The same flow accepts corrected traits afterwards.
    flows
        .submit_registration_flow(v1::SubmitRegistrationFlowRequest {
            flow_id: flow.id.clone(),
            traits: Some(traits(&unique_email("fixed"), None)),
            password: PASSWORD.into(),
        })
        .await
        .expect("corrected traits are accepted in the same flow");
    // The passed flow is kept only a few minutes, and says so.
    let passed = flows
        .get_registration_flow(v1::GetRegistrationFlowRequest { flow_id: flow.id })
        .await
        .expect("a passed flow can still be read")
        .into_inner()
        .flow
        .expect("flow");
    assert_eq!(passed.state, v1::FlowState::PassedChallenge as i32);
    assert_kept_briefly(&server, backend, &passed.id, passed.expires_at).await;

    // A short password is refused with the field named.
    let refused = identities
        .create_identity(admin(v1::CreateIdentityRequest {
            traits: Some(traits(&unique_email("short"), None)),
            password: "short".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "PASSWORD_POLICY_VIOLATION");
    assert_eq!(violated_fields(&refused), vec!["password".to_owned()]);

    // A bad flow id names the field.
    let refused = flows
        .get_registration_flow(v1::GetRegistrationFlowRequest {
            flow_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "VALIDATION_FAILED");
    assert_eq!(violated_fields(&refused), vec!["flow_id".to_owned()]);
    server.stop().await;
}

async fn duplicate_identifiers_are_refused_and_named(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let email = unique_email("dup");
    register(&server, &email, None).await;
    let mut identities = server.identities().await;
    let refused = identities
        .create_identity(admin(v1::CreateIdentityRequest {
            traits: Some(traits(&email.to_uppercase(), None)),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(reason(&refused), "IDENTIFIER_TAKEN");
    assert_eq!(violated_fields(&refused), vec!["traits.email".to_owned()]);

    // The same phone number written differently is the same identifier.
    register(&server, &unique_email("p1"), Some("+49 151 12345603")).await;
    let refused = identities
        .create_identity(admin(v1::CreateIdentityRequest {
            traits: Some(traits(&unique_email("p2"), Some("+4915112345603"))),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "IDENTIFIER_TAKEN");
    assert_eq!(violated_fields(&refused), vec!["traits.phone".to_owned()]);
    server.stop().await;
}

async fn wrong_password_and_unknown_identifier_get_the_same_answer(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let registered = register(&server, &unique_email("pw"), None).await;
    let wrong = password_login(&server, &registered.email, "not the password at all")
        .await
        .unwrap_err();
    let unknown = password_login(&server, &unique_email("nobody"), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    assert_eq!(wrong.code(), unknown.code());
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(reason(&wrong), reason(&unknown));
    server.stop().await;
}

/// A passed flow says it is gone five minutes from now, and on Redis the store forgets it then.
async fn assert_kept_briefly(
    server: &TestServer,
    backend: Backend,
    flow_id: &str,
    expires_at: Option<prost_types::Timestamp>,
) {
    assert_eq!(
        expires_at.expect("expires_at").seconds,
        (server.clock_now() + PASSED_FLOW_KEPT_FOR).timestamp()
    );
    if backend == Backend::PostgresRedis {
        support::assert_expires_within(&format!("twofold:flow:{flow_id}"), PASSED_FLOW_KEPT_FOR)
            .await;
    }
}

async fn a_login_flow_completes_only_once(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let registered = register(&server, &unique_email("once"), None).await;
    let mut flows = server.flows().await;
    let flow = flows
        .create_login_flow(v1::CreateLoginFlowRequest::default())
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let submit = v1::SubmitLoginPasswordRequest {
        flow_id: flow.id.clone(),
        identifier: registered.email.clone(),
        password: PASSWORD.into(),
    };
    let passed = flows
        .submit_login_password(submit.clone())
        .await
        .expect("first submit")
        .into_inner()
        .flow
        .expect("flow");
    assert_kept_briefly(&server, backend, &flow.id, passed.expires_at).await;
    let refused = flows.submit_login_password(submit).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "FLOW_STATE_INVALID");

    let unknown = flows
        .get_login_flow(v1::GetLoginFlowRequest {
            flow_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "FLOW_NOT_FOUND");
    server.stop().await;
}

async fn admin_calls_need_the_admin_key(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let mut identities = server.identities().await;

    let missing = identities
        .list_identities(v1::ListIdentitiesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(reason(&missing), "ADMIN_KEY_REQUIRED");

    let wrong = identities
        .list_identities(with_bearer(
            v1::ListIdentitiesRequest::default(),
            "not-the-admin-key-0123456789",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "ADMIN_KEY_INVALID");

    // A user's session token is not an admin key.
    let registered = register(&server, &unique_email("notadmin"), None).await;
    let user = identities
        .list_identities(with_bearer(
            v1::ListIdentitiesRequest::default(),
            &registered.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&user), "ADMIN_KEY_INVALID");

    let mut keyed = tonic::Request::new(v1::ListIdentitiesRequest::default());
    keyed
        .metadata_mut()
        .insert("x-twofold-api-key", ADMIN_KEY.parse().unwrap());
    identities
        .list_identities(keyed)
        .await
        .expect("x-twofold-api-key works");
    identities
        .list_identities(admin(v1::ListIdentitiesRequest::default()))
        .await
        .expect("bearer admin key works");

    // Every admin service is guarded.
    let mut codes = v1::code_service_client::CodeServiceClient::new(server.admin_channel().await);
    let refused = codes
        .send_code(v1::SendCodeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADMIN_KEY_REQUIRED");
    let mut configs =
        v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await);
    let refused = configs
        .get_config(v1::GetConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADMIN_KEY_REQUIRED");
    let mut courier =
        v1::courier_service_client::CourierServiceClient::new(server.admin_channel().await);
    let refused = courier
        .list_messages(v1::ListMessagesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADMIN_KEY_REQUIRED");
    courier
        .list_messages(admin(v1::ListMessagesRequest::default()))
        .await
        .expect("with the key the courier answers");
    let mut sessions = server.session_admin().await;
    let refused = sessions
        .list_identity_sessions(v1::ListIdentitySessionsRequest {
            identity_id: registered.identity_id,
            include_inactive: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ADMIN_KEY_REQUIRED");
    server.stop().await;
}

async fn admin_and_public_services_stay_on_their_own_listeners(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    // The admin API is not served on the public listener, even with the key.
    let mut on_public =
        v1::identity_service_client::IdentityServiceClient::new(server.public_channel().await);
    let refused = on_public
        .list_identities(admin(v1::ListIdentitiesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    // Flows are not served on the admin listener.
    let mut on_admin =
        v1::flow_service_client::FlowServiceClient::new(server.admin_channel().await);
    let refused = on_admin
        .create_login_flow(admin(v1::CreateLoginFlowRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    server.stop().await;
}

async fn identity_administration_round_trip(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let mut identities = server.identities().await;
    let mut created = Vec::new();
    for index in 0..3 {
        let email = unique_email(&format!("admin{index}"));
        let identity = identities
            .create_identity(admin(v1::CreateIdentityRequest {
                traits: Some(traits(&email, Some(&format!("+491511234561{index}")))),
                password: PASSWORD.into(),
                verified_addresses: vec![email.clone()],
                ..Default::default()
            }))
            .await
            .expect("create")
            .into_inner()
            .identity
            .expect("identity");
        assert!(identity.has_password);
        assert_eq!(identity.schema_id, "default");
        let email_address = identity
            .verifiable_addresses
            .iter()
            .find(|a| a.channel == v1::Channel::Email as i32)
            .expect("email address");
        assert!(
            email_address.verified,
            "verified_addresses are recorded as verified"
        );
        let channels: Vec<i32> = identity.code_addresses.iter().map(|a| a.channel).collect();
        assert_eq!(
            channels,
            vec![v1::Channel::Email as i32, v1::Channel::Sms as i32]
        );
        created.push((identity.id, email));
    }

    // Pages of two, in creation order.
    let first = identities
        .list_identities(admin(v1::ListIdentitiesRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first
            .identities
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>(),
        vec![created[0].0.clone(), created[1].0.clone()]
    );
    assert!(!first.next_page_token.is_empty());
    let second = identities
        .list_identities(admin(v1::ListIdentitiesRequest {
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second
            .identities
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>(),
        vec![created[2].0.clone()]
    );
    assert!(second.next_page_token.is_empty());

    // Lookup by identifier.
    let found = identities
        .list_identities(admin(v1::ListIdentitiesRequest {
            identifier: created[1].1.to_uppercase(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.identities.len(), 1);
    assert_eq!(found.identities[0].id, created[1].0);

    // Update traits: the new phone becomes the code address, the email stays verified.
    let (id, email) = created[0].clone();
    let updated = identities
        .update_identity_traits(admin(v1::UpdateIdentityTraitsRequest {
            identity_id: id.clone(),
            traits: Some(traits(&email, Some("+4915112345699"))),
        }))
        .await
        .expect("update")
        .into_inner()
        .identity
        .unwrap();
    assert!(
        updated
            .code_addresses
            .iter()
            .any(|a| a.value == "+4915112345699")
    );
    assert!(
        updated
            .verifiable_addresses
            .iter()
            .any(|a| a.value == email.to_lowercase() && a.verified)
    );
    let bad_update = identities
        .update_identity_traits(admin(v1::UpdateIdentityTraitsRequest {
            identity_id: id.clone(),
            traits: Some(traits(&email, Some("12"))),
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_update), "TRAITS_INVALID");
    let unchanged = identities
        .get_identity(admin(v1::GetIdentityRequest {
            identity_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .identity
        .unwrap();
    assert_eq!(
        unchanged.code_addresses, updated.code_addresses,
        "a refused update changes nothing"
    );

    // The identity can log in with its password; deleting it ends its sessions.
    let logged_in = password_login(&server, &email, PASSWORD)
        .await
        .expect("login");
    identities
        .delete_identity(admin(v1::DeleteIdentityRequest {
            identity_id: id.clone(),
        }))
        .await
        .expect("delete");
    let gone = identities
        .get_identity(admin(v1::GetIdentityRequest {
            identity_id: id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(reason(&gone), "IDENTITY_NOT_FOUND");
    let refused = whoami(&server, &logged_in.session_token, v1::RequiredAal::Aal1)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_INACTIVE");
    let again = identities
        .delete_identity(admin(v1::DeleteIdentityRequest { identity_id: id }))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "IDENTITY_NOT_FOUND");
    server.stop().await;
}

async fn admin_revocation_takes_effect_at_once(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let registered = register(&server, &unique_email("revoke"), None).await;
    let second = password_login(&server, &registered.email, PASSWORD)
        .await
        .expect("login");
    let mut sessions = server.session_admin().await;
    let listed = sessions
        .list_identity_sessions(admin(v1::ListIdentitySessionsRequest {
            identity_id: registered.identity_id.clone(),
            include_inactive: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 2);
    let newest = &listed.sessions[0];
    assert_eq!(
        newest.id,
        second.session.as_ref().unwrap().id,
        "newest first"
    );

    sessions
        .revoke_session(admin(v1::RevokeSessionRequest {
            session_id: newest.id.clone(),
        }))
        .await
        .expect("revoke");
    let refused = whoami(&server, &second.session_token, v1::RequiredAal::Aal1)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_INACTIVE");
    whoami(&server, &registered.token, v1::RequiredAal::Aal1)
        .await
        .expect("the other session lives");

    // The user can see and revoke its own other sessions, but nobody else's.
    let third = password_login(&server, &registered.email, PASSWORD)
        .await
        .expect("login");
    let mine = server
        .sessions()
        .await
        .list_my_sessions(with_bearer(v1::ListMySessionsRequest {}, &registered.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.sessions.len(), 2, "revoked sessions are not listed");
    let stranger = register(&server, &unique_email("stranger"), None).await;
    let refused = server
        .sessions()
        .await
        .revoke_my_session(with_bearer(
            v1::RevokeMySessionRequest {
                session_id: third.session.as_ref().unwrap().id.clone(),
            },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_NOT_FOUND");
    whoami(&server, &third.session_token, v1::RequiredAal::Aal1)
        .await
        .expect("untouched");

    let revoked = sessions
        .revoke_identity_sessions(admin(v1::RevokeIdentitySessionsRequest {
            identity_id: registered.identity_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked, 2);
    for token in [&registered.token, &third.session_token] {
        let refused = whoami(&server, token, v1::RequiredAal::Aal1)
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "SESSION_INACTIVE");
    }
    let all = sessions
        .list_identity_sessions(admin(v1::ListIdentitySessionsRequest {
            identity_id: registered.identity_id,
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sessions.len(), 3);
    assert!(all.sessions.iter().all(|s| !s.active));
    server.stop().await;
}

async fn aal2_login_flow_needs_a_session(backend: Backend) {
    let server = TestServer::start(
        backend,
        "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n",
    )
    .await;
    let mut flows = server.flows().await;
    let aal2 = v1::CreateLoginFlowRequest {
        requested_aal: v1::AuthenticatorAssuranceLevel::Aal2 as i32,
        via: "phone".into(),
        ..Default::default()
    };
    let refused = flows.create_login_flow(aal2.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "SESSION_AAL1_REQUIRED");
    let refused = flows
        .create_login_flow(with_bearer(aal2, "tfs_not-a-real-token"))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_AAL1_REQUIRED");

    // An AAL1 login flow for a caller that already has a session needs `refresh`.
    let registered = register(&server, &unique_email("refresh"), None).await;
    let refused = flows
        .create_login_flow(with_bearer(
            v1::CreateLoginFlowRequest::default(),
            &registered.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "SESSION_ALREADY_AVAILABLE");
    flows
        .create_login_flow(with_bearer(
            v1::CreateLoginFlowRequest {
                refresh: true,
                ..Default::default()
            },
            &registered.token,
        ))
        .await
        .expect("refresh allows a new flow");
    server.stop().await;
}
