//! Starts a real Twofold server in-process on ephemeral ports, on the embedded default or on
//! Postgres + Redis, and gives tests connected clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use twofold::config::Config;
use twofold::domain::clock::SystemClock;
use twofold::domain::{Context, Settings};
use twofold::proto::v1;
use twofold::server::{Listeners, run};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
pub const ALLOWED_ORIGIN: &str = "https://app.example.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-memory SQLite and the in-process flow store: what `twofold serve` runs with no config.
    Embedded,
    /// A fresh Postgres database and a Redis server.
    PostgresRedis,
}

pub struct TestServer {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub context: Context,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server whose configuration is `yaml` (Kratos keys) plus the test's storage,
    /// admin key and CORS allow-list.
    pub async fn start(backend: Backend, yaml: &str) -> Self {
        let loaded =
            twofold::config::parse_document(yaml, None).expect("test configuration is valid");
        let mut config: Config = loaded.config;
        match backend {
            Backend::Embedded => {
                config.dsn = Some("memory".into());
                config.redis.url = None;
            }
            Backend::PostgresRedis => {
                config.dsn = Some(super::fresh_postgres_dsn().await);
                config.redis.url = Some(super::redis_url());
            }
        }
        config.serve.admin.api_keys = vec![ADMIN_KEY.into()];
        config.serve.public.cors.enabled = true;
        config.serve.public.cors.allowed_origins = vec![ALLOWED_ORIGIN.into()];

        let stores = twofold::store::open(&config).await.expect("stores open");
        let context = Context::new(
            Settings::new(config, loaded.schemas),
            stores,
            Arc::new(SystemClock),
        );
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (public_address, admin_address) =
            (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server_context = context.clone();
        let task = tokio::spawn(async move {
            run(Listeners { public, admin }, server_context, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            public: public_address,
            admin: admin_address,
            context,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn public_channel(&self) -> Channel {
        connect(self.public).await
    }

    pub async fn admin_channel(&self) -> Channel {
        connect(self.admin).await
    }

    pub async fn flows(&self) -> v1::flow_service_client::FlowServiceClient<Channel> {
        v1::flow_service_client::FlowServiceClient::new(self.public_channel().await)
    }

    pub async fn sessions(&self) -> v1::session_service_client::SessionServiceClient<Channel> {
        v1::session_service_client::SessionServiceClient::new(self.public_channel().await)
    }

    pub async fn identities(&self) -> v1::identity_service_client::IdentityServiceClient<Channel> {
        v1::identity_service_client::IdentityServiceClient::new(self.admin_channel().await)
    }

    pub async fn session_admin(
        &self,
    ) -> v1::session_admin_service_client::SessionAdminServiceClient<Channel> {
        v1::session_admin_service_client::SessionAdminServiceClient::new(self.admin_channel().await)
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn connect(address: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to test server")
}

/// A request carrying credentials in `authorization: Bearer …`.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// An admin request with the test's admin key.
pub fn admin<T>(message: T) -> tonic::Request<T> {
    with_bearer(message, ADMIN_KEY)
}

/// The `ErrorInfo.reason` of a status, failing the test when it has none.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("status without ErrorInfo: {status:?}"));
    assert_eq!(info.domain, "twofold", "ErrorInfo.domain");
    info.reason.clone()
}

/// The fields named by a status's `BadRequest` detail.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// `{"email": …, "phone": …}` as a protobuf Struct.
pub fn traits(email: &str, phone: Option<&str>) -> prost_types::Struct {
    let mut value = serde_json::json!({ "email": email });
    if let Some(phone) = phone {
        value["phone"] = serde_json::Value::String(phone.to_owned());
    }
    twofold::api::convert::json_to_struct(&value)
}

/// A unique email address, so tests sharing a database never collide.
pub fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.test", uuid::Uuid::new_v4().simple())
}
