//! The admin CLI as an operator runs it: the real `twofold` binary against an in-process server's
//! admin listener. Output is checked as text and JSON; exit codes are 1 for a refused call and 2
//! for connection problems; the API key never appears in what the CLI prints.

mod support;

use serde_json::Value;
use support::server::{ADMIN_KEY, Backend, TestServer, unique_email};

const BINARY: &str = env!("CARGO_BIN_EXE_twofold");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.stdout))
    }
}

/// Runs the binary with a clean environment, so a developer's `TWOFOLD_*` variables cannot
/// point it elsewhere.
async fn twofold(url: &str, key: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TWOFOLD_ADMIN_URL", url)
        .env("TWOFOLD_ADMIN_API_KEY", key)
        .args(args)
        .output()
        .await
        .expect("run twofold");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn admin(server: &TestServer, args: &[&str]) -> Run {
    twofold(&format!("http://{}", server.admin), ADMIN_KEY, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_round_trip_through_the_cli() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let email = unique_email("cli");
    let traits = serde_json::json!({ "email": email, "phone": "+49 151 12345678" }).to_string();

    let created = admin(&server, &["identities", "create", "--traits", &traits]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let identity = created.json();
    let id = identity["id"].as_str().expect("id").to_owned();
    assert_eq!(identity["traits"]["email"], email.as_str());
    assert_eq!(
        identity["traits"]["phone"], "+4915112345678",
        "the phone number comes back in E.164"
    );
    assert_eq!(identity["state"], "active");
    assert_eq!(identity["has_password"], false);
    assert!(
        identity["code_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|address| address["channel"] == "sms"),
        "{identity}"
    );

    let got = admin(&server, &["identities", "get", &id]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    // The create response carries nanoseconds, the stored row microseconds (a server-side
    // difference), so timestamps are compared apart from the rest.
    let without_times = |mut value: Value| {
        let object = value.as_object_mut().unwrap();
        assert!(object.remove("created_at").unwrap().is_string());
        assert!(object.remove("updated_at").unwrap().is_string());
        value
    };
    assert_eq!(without_times(got.json()), without_times(identity.clone()));

    let listed = admin(
        &server,
        &["identities", "list", "--identifier", "+4915112345678"],
    )
    .await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed = listed.json();
    let ids: Vec<&str> = listed["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|identity| identity["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert!(listed.get("next_page_token").is_none(), "{listed}");

    let deleted = admin(&server, &["identities", "delete", &id]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(deleted.stdout.contains(&id), "{}", deleted.stdout);

    let gone = admin(&server, &["identities", "get", &id]).await;
    assert_eq!(gone.code, 1, "{}", gone.stderr);
    assert!(
        gone.stderr.contains("(reason IDENTITY_NOT_FOUND)"),
        "{}",
        gone.stderr
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traits_from_a_file_with_a_password_from_stdin() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(Backend::Embedded, "").await;
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("traits.json");
    std::fs::write(
        &file,
        serde_json::json!({ "email": unique_email("file") }).to_string(),
    )
    .unwrap();

    let mut child = tokio::process::Command::new(BINARY)
        .env_clear()
        .args(["identities", "create", "--password-stdin", "--traits-file"])
        .arg(&file)
        .args(["--admin-url", &format!("http://{}", server.admin)])
        .args(["--api-key", ADMIN_KEY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run twofold");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"correct horse battery staple\n")
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let identity: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(identity["has_password"], true, "{identity}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_traits_are_refused_with_the_field_named() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let traits = serde_json::json!({ "email": unique_email("bad"), "phone": "+1 555" }).to_string();

    let refused = admin(&server, &["identities", "create", "--traits", &traits]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.starts_with("twofold: "),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("(reason TRAITS_INVALID)"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .lines()
            .any(|line| line.starts_with("  traits.phone: ")),
        "one indented line per field violation: {}",
        refused.stderr
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_input_errors_exit_2() {
    let server = TestServer::start(Backend::Embedded, "").await;
    for traits in ["not json", "[1, 2]"] {
        let refused = admin(&server, &["identities", "create", "--traits", traits]).await;
        assert_eq!(refused.code, 2, "{traits}: {}", refused.stderr);
        assert!(refused.stderr.contains("--traits"), "{}", refused.stderr);
    }
    let missing = admin(
        &server,
        &[
            "identities",
            "create",
            "--traits-file",
            "/nonexistent/traits.json",
        ],
    )
    .await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("cannot read /nonexistent/traits.json"),
        "{}",
        missing.stderr
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_refused_and_never_printed() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let wrong = "wrong-key-7f3a9c1e5b";
    let url = format!("http://{}", server.admin);

    let refused = twofold(&url, wrong, &["identities", "list"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("(reason ADMIN_KEY_INVALID)"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(wrong) && !refused.stdout.contains(wrong));

    // Nor does `--help` show the key taken from the environment.
    let help = twofold(&url, wrong, &["identities", "--help"]).await;
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(!help.stdout.contains(wrong), "{}", help.stdout);

    let anonymous = twofold(&url, "", &["identities", "list"]).await;
    assert_eq!(anonymous.code, 1, "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("(reason ADMIN_KEY_REQUIRED)"),
        "{}",
        anonymous.stderr
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_admin_url_exits_2_with_a_readable_message() {
    // A port that was just free: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let failed = twofold(&url, ADMIN_KEY, &["identities", "list"]).await;
    assert_eq!(failed.code, 2, "{}", failed.stderr);
    assert!(
        failed.stderr.starts_with(&format!(
            "twofold: cannot connect to the admin api at {url}"
        )),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains(ADMIN_KEY), "{}", failed.stderr);

    let malformed = twofold("not a url", ADMIN_KEY, &["config", "get"]).await;
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);
    assert!(
        malformed.stderr.contains("invalid admin url"),
        "{}",
        malformed.stderr
    );
}

/// The seed's steps with Twofold's own CLI: get the configuration into a file, set
/// `mfa_enabled: true`, update the configuration from the file; the next AAL2 login flow offers
/// the code method, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_steps_with_the_cli() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("identity-config.yaml");

    let got = admin(&server, &["config", "get", "--format", "yaml"]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(got.stderr.contains("# version 1 etag "), "{}", got.stderr);
    assert!(got.stdout.contains("mfa_enabled: false"));
    std::fs::write(
        &file,
        got.stdout
            .replace("mfa_enabled: false", "mfa_enabled: true"),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let validated = admin(&server, &["config", "validate", "--file", path]).await;
    assert_eq!(validated.code, 0, "{}", validated.stderr);
    let updated = admin(&server, &["config", "update", "--file", path]).await;
    assert_eq!(updated.code, 0, "{}", updated.stderr);
    assert!(
        updated.stdout.contains("updated to version 2"),
        "{}",
        updated.stdout
    );
    assert!(
        server
            .context
            .settings()
            .config
            .selfservice
            .methods
            .code
            .mfa_enabled,
        "applied without a restart"
    );

    // A stale etag is refused, naming the reason.
    let etag = got.stderr.split("etag ").nth(1).unwrap().trim().to_owned();
    let stale = admin(
        &server,
        &["config", "update", "--file", path, "--etag", &etag],
    )
    .await;
    assert_eq!(stale.code, 1);
    assert!(
        stale.stderr.contains("CONFIG_VERSION_CONFLICT"),
        "{}",
        stale.stderr
    );

    // An invalid document: every problem with its key, exit 1, nothing changed.
    let bad = directory.path().join("bad.yaml");
    std::fs::write(
        &bad,
        got.stdout
            .replace("mfa_enabled: false", "mfa_enabled: true")
            .replace("passwordless_enabled: false", "passwordless_enabled: true"),
    )
    .unwrap();
    let invalid = admin(
        &server,
        &["config", "validate", "--file", bad.to_str().unwrap()],
    )
    .await;
    assert_eq!(invalid.code, 1);
    assert!(
        invalid
            .stdout
            .contains("selfservice.methods.code.mfa_enabled:")
            || invalid
                .stderr
                .contains("selfservice.methods.code.mfa_enabled"),
        "{} {}",
        invalid.stdout,
        invalid.stderr
    );
    let refused = admin(
        &server,
        &["config", "update", "--file", bad.to_str().unwrap()],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("CONFIG_INVALID")
            && refused
                .stderr
                .contains("selfservice.methods.code.mfa_enabled"),
        "{}",
        refused.stderr
    );

    let versions = admin(&server, &["config", "versions"]).await;
    assert_eq!(versions.code, 0, "{}", versions.stderr);
    assert!(versions.stdout.lines().count() >= 3, "{}", versions.stdout);
    let rolled = admin(&server, &["config", "rollback", "1"]).await;
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert!(
        !server
            .context
            .settings()
            .config
            .selfservice
            .methods
            .code
            .mfa_enabled,
        "rolled back"
    );

    let schemas = admin(&server, &["schema", "list"]).await;
    assert_eq!(schemas.code, 0, "{}", schemas.stderr);
    assert!(schemas.stdout.contains("default"));
    let schema = admin(&server, &["schema", "get", "default"]).await;
    assert!(schema.json()["properties"]["traits"]["properties"]["phone"].is_object());
    let broken = directory.path().join("broken.json");
    std::fs::write(&broken, r#"{"type": 12}"#).unwrap();
    let refused = admin(
        &server,
        &[
            "schema",
            "put",
            "broken",
            "--file",
            broken.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("CONFIG_INVALID"),
        "{}",
        refused.stderr
    );
    server.stop().await;
}
