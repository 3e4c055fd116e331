//! The `twofold` binary as an operator runs it: `twofold serve` with no configuration runs a
//! working server on the embedded default (a SQLite file in the working directory), generates an
//! admin key into a private file, and stops gracefully on SIGTERM; `twofold migrate` applies
//! migrations; an invalid configuration is refused with the key named.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use twofold::proto::v1;

const BINARY: &str = env!("CARGO_BIN_EXE_twofold");

/// Environment without anything that could point the server at other storage.
fn clean_command(directory: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(directory)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(line[start..].split_whitespace().next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_runs_the_embedded_default() {
    let directory = tempfile::tempdir().unwrap();
    let mut child = clean_command(directory.path())
        .arg("serve")
        .env("SERVE_PUBLIC_HOST", "127.0.0.1")
        .env("SERVE_PUBLIC_PORT", "0")
        .env("SERVE_ADMIN_PORT", "0")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twofold serve");

    // Read the log until the server says where it listens.
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut log = Vec::new();
    let serving = loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start; log so far: {log:#?}"));
        log.push(line.clone());
        if line.contains("twofold is serving") {
            break line;
        }
    };
    let public = field(&serving, "public").expect("public address logged");
    let admin = field(&serving, "admin").expect("admin address logged");
    assert!(
        admin.starts_with("127.0.0.1:"),
        "the admin listener binds loopback by default: {admin}"
    );

    let key_file = directory.path().join("twofold-admin.key");
    let admin_key = std::fs::read_to_string(&key_file)
        .expect("generated admin key file")
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner may read the admin key");
    }
    assert!(
        directory.path().join("twofold.sqlite").exists(),
        "the embedded SQLite file is created"
    );

    // The whole foundation path works against the real binary.
    let mut flows = v1::flow_service_client::FlowServiceClient::connect(format!("http://{public}"))
        .await
        .unwrap();
    let flow = flows
        .create_registration_flow(v1::CreateRegistrationFlowRequest::default())
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let registered = flows
        .submit_registration_flow(v1::SubmitRegistrationFlowRequest {
            flow_id: flow.id,
            traits: Some(twofold::api::convert::json_to_struct(
                &serde_json::json!({"email": "newcomer@example.test", "phone": "+4915112345678"}),
            )),
            password: "correct horse battery staple".into(),
        })
        .await
        .expect("registration on the embedded default")
        .into_inner();
    let mut identities =
        v1::identity_service_client::IdentityServiceClient::connect(format!("http://{admin}"))
            .await
            .unwrap();
    let mut request = tonic::Request::new(v1::ListIdentitiesRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin_key}").parse().unwrap(),
    );
    let listed = identities
        .list_identities(request)
        .await
        .expect("admin call with the generated key")
        .into_inner();
    assert_eq!(listed.identities.len(), 1);

    // Graceful shutdown on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "twofold exits cleanly after SIGTERM: {exit:?}"
    );
    while let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
        log.push(line);
    }
    let whole_log = log.join("\n");
    assert!(whole_log.contains("server stopped"), "{whole_log}");
    assert!(
        !whole_log.contains(&admin_key),
        "the admin key is never logged"
    );
    assert!(
        !whole_log.contains(&registered.session_token),
        "session tokens are never logged"
    );
    assert!(
        !whole_log.contains("15112345678"),
        "phone numbers are never logged"
    );
}

#[test]
fn migrate_applies_migrations_and_bad_configuration_names_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let output = clean_command(directory.path())
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(directory.path().join("twofold.sqlite").exists());

    let config = directory.path().join("twofold.yaml");
    std::fs::write(
        &config,
        "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n      passwordless_enabled: true\n",
    )
    .unwrap();
    let output = clean_command(directory.path())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("selfservice.methods.code"), "{stderr}");
    assert!(stderr.contains("passwordless"), "{stderr}");
}
