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
use twofold::courier::worker::Worker;
use twofold::courier::{Delivered, OutgoingMessage, SendError, Sender, Senders};
use twofold::domain::clock::ManualClock;
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
    /// Every message the courier delivered, through the test sender.
    pub outbox: Captured,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The worker, and what tells it to stop.
    courier: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    follower: Option<JoinHandle<()>>,
    /// The Postgres database of a server on Postgres and Redis; its replicas have none of their
    /// own. Last, so that it is dropped after everything else.
    database: Option<super::TestDatabase>,
}

/// Which courier worker a test server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Courier {
    /// A worker whose sender records every message in `TestServer::outbox`.
    Capture,
    /// A worker with the gateways the configuration names (SMTP, webhook, Twilio, SNS).
    Configured,
    /// No worker: the test drives delivery itself.
    Off,
}

/// How a test server is set up beyond its YAML.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub courier: Courier,
    /// A Redis of the test's own instead of the shared one (for tests that stop it).
    pub redis_url: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            courier: Courier::Capture,
            redis_url: None,
        }
    }
}

/// The test stand-in for a gateway: nothing real can receive messages inside a test process
/// for the development channel, so it records what the courier hands over.
#[derive(Clone, Default)]
pub struct Captured {
    messages: Arc<std::sync::Mutex<Vec<OutgoingMessage>>>,
    arrived: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Sender for Captured {
    fn gateway(&self) -> &str {
        "test"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        self.messages.lock().unwrap().push(message.clone());
        self.arrived.notify_waiters();
        Ok(Delivered {
            provider_message_id: Some(format!("test-{}", message.id)),
        })
    }
}

impl Captured {
    pub fn all(&self) -> Vec<OutgoingMessage> {
        self.messages.lock().unwrap().clone()
    }

    pub fn count_to(&self, recipient: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.recipient == recipient)
            .count()
    }

    /// Waits for the `nth` (0-based) message to `recipient` and returns it.
    pub async fn nth_to(&self, recipient: &str, nth: usize) -> OutgoingMessage {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            if let Some(message) = self
                .all()
                .into_iter()
                .filter(|m| m.recipient == recipient)
                .nth(nth)
            {
                return message;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no message #{nth} to {recipient} arrived; got {:?}",
                    self.all()
                );
            }
        }
    }

    /// The code of the `nth` message to `recipient`.
    pub async fn code_to(&self, recipient: &str, nth: usize) -> String {
        code_in(&self.nth_to(recipient, nth).await.body)
    }
}

/// The code in a rendered message: the WebOTP line's `#123456` for SMS, the line of digits for
/// email.
pub fn code_in(body: &str) -> String {
    if let Some((_, code)) = body.rsplit_once('#') {
        return code.trim().to_owned();
    }
    body.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
        .expect("a code in the message")
        .to_owned()
}

impl TestServer {
    /// Starts a server whose configuration is `yaml` (Kratos keys) plus the test's storage,
    /// admin key and CORS allow-list.
    pub async fn start(backend: Backend, yaml: &str) -> Self {
        Self::start_with(backend, yaml, Options::default()).await
    }

    pub async fn start_with(backend: Backend, yaml: &str, options: Options) -> Self {
        let loaded =
            twofold::config::parse_document(yaml, None).expect("test configuration is valid");
        let mut config: Config = loaded.config;
        let mut database = None;
        match backend {
            Backend::Embedded => {
                config.dsn = Some("memory".into());
                config.redis.url = None;
            }
            Backend::PostgresRedis => {
                let created = super::TestDatabase::create().await;
                config.dsn = Some(created.dsn().to_owned());
                database = Some(created);
                config.redis.url = Some(
                    options
                        .redis_url
                        .map_or_else(super::redis_url, str::to_owned),
                );
                // Off the embedded default gateways must be named; tests that do not set any
                // say explicitly that messages go to the development sender.
                let courier = &mut config.courier;
                if courier.email_sender.is_none() && courier.smtp.is_none() {
                    courier.email_sender = Some("log".into());
                }
                if courier.sms_sender.is_none()
                    && courier.channels.is_empty()
                    && courier.twilio.is_none()
                    && courier.sns.is_none()
                {
                    courier.sms_sender = Some("log".into());
                }
            }
        }
        config.serve.admin.api_keys = vec![ADMIN_KEY.into()];
        config.serve.public.cors.enabled = true;
        config.serve.public.cors.allowed_origins = vec![ALLOWED_ORIGIN.into()];

        if config.secrets.default.is_empty() {
            config.secrets.default = vec!["test-secret-0123456789abcdef".into()];
        }
        let stores = twofold::store::open(&config).await.expect("stores open");
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let context = Context::new(Settings::new(config, loaded.schemas), stores, clock.clone());
        twofold::domain::configuration::bootstrap(&context)
            .await
            .expect("configuration stored");
        let mut server = Self::serve(context, clock, options).await;
        server.database = database;
        server
    }

    async fn serve(context: Context, clock: Arc<ManualClock>, options: Options) -> Self {
        let outbox = Captured::default();
        let follower = tokio::spawn(twofold::domain::configuration::follow(
            context.clone(),
            std::future::pending::<()>(),
        ));
        let worker = match options.courier {
            Courier::Capture => Some(Worker::new(
                context.clone(),
                Senders::single(Arc::new(outbox.clone())),
            )),
            Courier::Configured => Some(Worker::configured(context.clone())),
            Courier::Off => None,
        };
        let courier = worker.map(|worker| {
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(worker.run(async {
                let _ = stopped.await;
            }));
            (task, stop)
        });
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
            outbox,
            clock,
            stop: Some(stop),
            task: Some(task),
            courier,
            follower: Some(follower),
            database: None,
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
        // Stopped, not aborted: what was handed to it is delivered, as `twofold serve` does.
        if let Some((courier, stop)) = self.courier.take() {
            let _ = stop.send(());
            tokio::time::timeout(std::time::Duration::from_secs(10), courier)
                .await
                .expect("the courier stops")
                .expect("the courier ends cleanly");
        }
    }

    /// A second replica on the same Postgres and Redis (and the same clock): replicas are
    /// stateless, so any of them can continue what another started. Its courier is off, so
    /// every message is captured by the first server's worker.
    pub async fn replica(&self) -> TestServer {
        let settings = self.context.settings();
        let config = settings.config.clone();
        let stores = twofold::store::open(&config).await.expect("stores open");
        let context = Context::new(
            Settings::new(config, settings.schemas.clone()),
            stores,
            self.clock.clone(),
        );
        twofold::domain::configuration::bootstrap(&context)
            .await
            .expect("configuration loaded");
        Self::serve(
            context,
            self.clock.clone(),
            Options {
                courier: Courier::Off,
                redis_url: None,
            },
        )
        .await
    }

    /// The server's (manual) clock reading.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use twofold::domain::clock::Clock;
        self.clock.now()
    }

    /// The identity's audit trail, oldest first.
    pub async fn audit_events(&self, identity_id: &str) -> Vec<twofold::store::codes::AuditEvent> {
        let identity_id = uuid::Uuid::parse_str(identity_id).expect("identity id");
        self.context
            .stores
            .outbox
            .audit_events(identity_id)
            .await
            .expect("audit events")
    }

    /// Runs one courier round by hand (for servers started without the worker).
    pub async fn deliver_once(&self) -> usize {
        Worker::new(
            self.context.clone(),
            Senders::single(Arc::new(self.outbox.clone())),
        )
        .run_once()
        .await
        .expect("courier round")
    }

    /// Runs one courier round with the configured gateways.
    pub async fn deliver_once_configured(&self) -> usize {
        Worker::configured(self.context.clone())
            .run_once()
            .await
            .expect("courier round")
    }

    pub async fn codes(&self) -> v1::code_service_client::CodeServiceClient<Channel> {
        v1::code_service_client::CodeServiceClient::new(self.admin_channel().await)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some((courier, _)) = self.courier.take() {
            courier.abort();
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
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
/// The status's `RetryInfo.retry_delay`; panics when it has none.
pub fn retry_delay(status: &tonic::Status) -> std::time::Duration {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .unwrap_or_else(|| panic!("status without RetryInfo: {status:?}"))
        .retry_delay
        .expect("RetryInfo without a delay")
}

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
