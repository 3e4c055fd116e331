//! ConfigService over real gRPC: the seed's "get the config into a file, set `mfa_enabled: true`,
//! update the config from the file" steps at run time, on every replica; versions, rollback,
//! conflicts, invalid documents and identity schemas.

#[macro_use]
mod support;

use support::flows::{register, unique_phone};

use support::server::{
    ADMIN_KEY, Backend, TestServer, admin, reason, unique_email, violated_fields,
};
use tonic::Code;
use twofold::proto::v1;

const SECRET: &str = "test-secret-0123456789abcdef";

on_every_backend!(
    seed_steps_turn_on_code_mfa_without_a_restart,
    conflicting_updates_exactly_one_wins,
    invalid_documents_name_the_key_and_change_nothing,
    versions_and_rollback,
    identity_schemas_can_be_listed_and_added,
);

async fn get_config(server: &TestServer) -> v1::GetConfigResponse {
    v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await)
        .get_config(admin(v1::GetConfigRequest {
            format: v1::ConfigFormat::Yaml as i32,
        }))
        .await
        .expect("get config")
        .into_inner()
}

async fn update(
    server: &TestServer,
    document: &str,
    etag: &str,
) -> Result<v1::UpdateConfigResponse, tonic::Status> {
    v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await)
        .update_config(admin(v1::UpdateConfigRequest {
            document: document.into(),
            format: v1::ConfigFormat::Yaml as i32,
            expected_etag: etag.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// Registers with email and phone: an AAL1 session token and the identity id.
async fn aal1_session(server: &TestServer) -> (String, String) {
    let registered = register(server, &unique_email("config"), Some(&unique_phone())).await;
    (registered.token, registered.identity_id)
}

async fn aal2_flow(server: &TestServer, token: &str) -> Result<v1::LoginFlow, tonic::Status> {
    support::flows::aal2_flow(server, token, "phone").await
}

async fn seed_steps_turn_on_code_mfa_without_a_restart(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let replica = match backend {
        Backend::PostgresRedis => Some(server.replica().await),
        Backend::Embedded => None,
    };
    let (token, identity_id) = aal1_session(&server).await;
    let refused = aal2_flow(&server, &token).await.unwrap_err();
    assert_eq!(reason(&refused), "METHOD_DISABLED", "mfa is off at first");

    // A code sent before the change must still verify after it: secrets survive redaction.
    let mut codes = server.codes().await;
    let sent = codes
        .send_code(admin(v1::SendCodeRequest {
            identity_id,
            target: Some(v1::send_code_request::Target::Via("email".into())),
            purpose: "before-update".into(),
            ..Default::default()
        }))
        .await
        .expect("send")
        .into_inner();

    // 1. Get the configuration into a file.
    let current = get_config(&server).await;
    assert!(current.version >= 1);
    assert!(
        current.document.contains("mfa_enabled: false"),
        "{}",
        current.document
    );
    assert!(!current.document.contains(SECRET), "secrets are redacted");
    assert!(
        !current.document.contains(ADMIN_KEY),
        "admin keys are redacted"
    );
    assert!(
        current
            .document
            .contains(twofold::domain::configuration::REDACTED)
    );
    // 2. Set mfa_enabled: true.
    let edited = current
        .document
        .replace("mfa_enabled: false", "mfa_enabled: true");
    // 3. Update the configuration from the file.
    let updated = update(&server, &edited, &current.etag)
        .await
        .expect("update");
    assert_eq!(updated.version, current.version + 1);
    assert_ne!(updated.etag, current.etag);

    let flow = aal2_flow(&server, &token)
        .await
        .expect("the next AAL2 flow offers the code method");
    assert_eq!(flow.state, v1::FlowState::CodeSent as i32);
    if let Some(replica) = &replica {
        // The other replica picks the change up within a second.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
        loop {
            match aal2_flow(replica, &token).await {
                Ok(_) => break,
                Err(status) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(reason(&status), "METHOD_DISABLED");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(status) => panic!("the replica did not pick the change up: {status:?}"),
            }
        }
    }

    let email = server
        .outbox
        .all()
        .into_iter()
        .find(|message| message.template_type == "verification_code")
        .expect("the code sent before the update");
    let answer = codes
        .verify_code(admin(v1::VerifyCodeRequest {
            challenge_id: sent.challenge_id,
            code: support::server::code_in(&email.body),
            purpose: "before-update".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.verified, "the redacted secret kept its stored value");
    if let Some(replica) = replica {
        replica.stop().await;
    }
    server.stop().await;
}

async fn conflicting_updates_exactly_one_wins(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let current = get_config(&server).await;
    let first = current
        .document
        .replace("max_submissions: 5", "max_submissions: 4");
    let second = current
        .document
        .replace("max_submissions: 5", "max_submissions: 3");
    let (a, b) = tokio::join!(
        update(&server, &first, &current.etag),
        update(&server, &second, &current.etag)
    );
    let outcomes = [a, b];
    let winners = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(winners, 1, "exactly one writer wins");
    let loser = outcomes.into_iter().find_map(Result::err).unwrap();
    assert_eq!(loser.code(), Code::Aborted);
    assert_eq!(reason(&loser), "CONFIG_VERSION_CONFLICT");
    // A stale etag is refused too.
    let stale = update(&server, &first, &current.etag).await.unwrap_err();
    assert_eq!(reason(&stale), "CONFIG_VERSION_CONFLICT");
    server.stop().await;
}

async fn invalid_documents_name_the_key_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let current = get_config(&server).await;
    let cases = [
        (
            current
                .document
                .replace("passwordless_enabled: false", "passwordless_enabled: true")
                .replace("mfa_enabled: false", "mfa_enabled: true"),
            "selfservice.methods.code.mfa_enabled",
        ),
        (
            current
                .document
                .replace("lifespan: 15m", "lifespan: 15 minutes"),
            "selfservice.methods.code.config.lifespan",
        ),
        (
            current.document.replace(
                "mfa_enabled: false",
                "mfa_enabled: false\n      mfa_enable: true",
            ),
            "selfservice.methods.code.mfa_enable",
        ),
        (
            current.document.replace("port: 4433", "port: 4999"),
            "serve",
        ),
    ];
    let mut configs =
        v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await);
    for (document, key) in cases {
        assert_ne!(document, current.document, "the test edit applies to {key}");
        let refused = update(&server, &document, &current.etag).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{key}");
        assert_eq!(reason(&refused), "CONFIG_INVALID", "{key}");
        assert!(
            violated_fields(&refused).iter().any(|field| field == key),
            "{key}: {:?}",
            violated_fields(&refused)
        );
        let validated = configs
            .validate_config(admin(v1::ValidateConfigRequest {
                document: document.clone(),
                format: v1::ConfigFormat::Yaml as i32,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(!validated.valid);
        assert!(
            validated.problems.iter().any(|problem| problem.key == key),
            "{key}"
        );
    }
    let refused = configs
        .put_identity_schema(admin(v1::PutIdentitySchemaRequest {
            id: "broken".into(),
            schema_json: r#"{"type": 12}"#.into(),
            make_default: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CONFIG_INVALID");
    let after = get_config(&server).await;
    assert_eq!(after.version, current.version, "nothing changed");
    assert_eq!(after.etag, current.etag);
    let valid = configs
        .validate_config(admin(v1::ValidateConfigRequest {
            document: current.document.clone(),
            format: v1::ConfigFormat::Yaml as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{:?}", valid.problems);
    server.stop().await;
}

async fn versions_and_rollback(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let first = get_config(&server).await;
    let second = update(
        &server,
        &first
            .document
            .replace("mfa_enabled: false", "mfa_enabled: true"),
        &first.etag,
    )
    .await
    .unwrap();
    let mut configs =
        v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await);
    let versions = configs
        .list_config_versions(admin(v1::ListConfigVersionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![second.version, first.version]
    );
    assert!(versions[0].current && !versions[1].current);

    let rolled = configs
        .rollback_config(admin(v1::RollbackConfigRequest {
            version: first.version,
        }))
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!(rolled.version, second.version + 1);
    let now = get_config(&server).await;
    assert!(
        now.document.contains("mfa_enabled: false"),
        "the first version is back"
    );
    let missing = configs
        .rollback_config(admin(v1::RollbackConfigRequest { version: 999 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "CONFIG_VERSION_NOT_FOUND");
    server.stop().await;
}

async fn identity_schemas_can_be_listed_and_added(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let mut configs =
        v1::config_service_client::ConfigServiceClient::new(server.admin_channel().await);
    let listed = configs
        .list_identity_schemas(admin(v1::ListIdentitySchemasRequest {}))
        .await
        .unwrap()
        .into_inner()
        .schemas;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "default");
    assert!(listed[0].is_default);

    let employee = serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"traits": {"type": "object", "properties": {
            "work_email": {"type": "string", "format": "email", "ory.sh/kratos": {
                "credentials": {"password": {"identifier": true}, "code": {"identifier": true, "via": "email"}}}}
        }, "required": ["work_email"], "additionalProperties": false}}
    });
    let put = configs
        .put_identity_schema(admin(v1::PutIdentitySchemaRequest {
            id: "employee".into(),
            schema_json: employee.to_string(),
            make_default: true,
        }))
        .await
        .expect("put schema")
        .into_inner()
        .schema
        .unwrap();
    assert!(put.is_default);
    let listed = configs
        .list_identity_schemas(admin(v1::ListIdentitySchemasRequest {}))
        .await
        .unwrap()
        .into_inner()
        .schemas;
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids.contains(&"default") && ids.contains(&"employee"),
        "{ids:?}"
    );
    let fetched = configs
        .get_identity_schema(admin(v1::GetIdentitySchemaRequest {
            id: "employee".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .schema
        .unwrap();
    assert!(fetched.schema_json.contains("work_email"));

    // New identities follow the new default schema at once.
    let identity = server
        .identities()
        .await
        .create_identity(admin(v1::CreateIdentityRequest {
            traits: Some(twofold::api::convert::json_to_struct(
                &serde_json::json!({"work_email": unique_email("work")}),
            )),
            ..Default::default()
        }))
        .await
        .expect("identity on the new default schema")
        .into_inner()
        .identity
        .unwrap();
    assert_eq!(identity.schema_id, "employee");
    let missing = configs
        .get_identity_schema(admin(v1::GetIdentitySchemaRequest { id: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(reason(&missing), "SCHEMA_NOT_FOUND");
    server.stop().await;
}

/// After a restart the newest stored version stays in force, unless the configuration file was
/// edited since it was last stored: then the file is stored as a new version and wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_api_changes_unless_the_file_changed() {
    use std::sync::Arc;
    use twofold::domain::clock::SystemClock;
    use twofold::domain::configuration::{bootstrap, update_config};
    use twofold::domain::{Context, Settings};

    let directory = tempfile::tempdir().unwrap();
    let dsn = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("twofold.sqlite").display()
    );
    let start = |yaml: String| {
        let dsn = dsn.clone();
        async move {
            let loaded = twofold::config::parse_document(&yaml, None).unwrap();
            let mut config = loaded.config;
            config.dsn = Some(dsn);
            let stores = twofold::store::open(&config).await.unwrap();
            let context = Context::new(
                Settings::new(config, loaded.schemas),
                stores,
                Arc::new(SystemClock),
            );
            bootstrap(&context).await.unwrap();
            context
        }
    };
    let file = format!("secrets:\n  default: [{SECRET}]\n");

    let first = start(file.clone()).await;
    assert_eq!(first.settings().version, 1);
    let document = twofold::domain::configuration::get_config(
        &first,
        twofold::domain::configuration::Format::Yaml,
    )
    .unwrap()
    .document
    .replace("mfa_enabled: false", "mfa_enabled: true");
    let etag = first.settings().etag.clone();
    update_config(&first, &document, &etag)
        .await
        .expect("api change");
    drop(first);

    let restarted = start(file.clone()).await;
    assert_eq!(
        restarted.settings().version,
        2,
        "the api change survives a restart"
    );
    assert!(
        restarted
            .settings()
            .config
            .selfservice
            .methods
            .code
            .mfa_enabled
    );
    drop(restarted);

    let edited = start(format!(
        "{file}selfservice:\n  methods:\n    code:\n      config:\n        lifespan: 10m\n"
    ))
    .await;
    let settings = edited.settings();
    assert_eq!(
        settings.version, 3,
        "the edited file is stored as a new version"
    );
    assert_eq!(
        settings.config.selfservice.methods.code.config.lifespan,
        std::time::Duration::from_secs(600)
    );
    assert!(
        !settings.config.selfservice.methods.code.mfa_enabled,
        "the file wins"
    );
}
