//! Delivery through every real gateway the seed names: the full AAL2 step-up runs once per
//! gateway with the code read from what the gateway received (Mailpit for SMTP, a local HTTP
//! server for the webhook and for Twilio's Messages API, moto's server for Amazon SNS), and the
//! courier's faults: a gateway that comes back, one that never does, two workers at once; and one
//! worker sending several messages at once to a slow gateway.

#[macro_use]
mod support;

use support::flows::{PASSWORD, aal2_flow, password_login, register, unique_phone, whoami};
use support::http_stub::{HttpStub, ScriptedResponse};
use support::server::{
    Backend, Courier, Options, TestServer, admin, code_in, unique_email, with_bearer,
};
use support::stand_ins;
use twofold::proto::v1;
use twofold::store::codes::MessageStatus;

const MFA: &str = "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n";

struct SteppingUp {
    token: String,
    email: String,
    phone: String,
}

async fn aal1_user(server: &TestServer) -> SteppingUp {
    let email = unique_email("gateway");
    let phone = unique_phone();
    register(server, &email, Some(&phone)).await;
    let logged_in = password_login(server, &email, PASSWORD)
        .await
        .expect("password login");
    SteppingUp {
        token: logged_in.session_token,
        email: email.to_lowercase(),
        phone,
    }
}

/// Submits `code` in the flow and checks the session is AAL2 afterwards.
async fn finish_step_up(server: &TestServer, user: &SteppingUp, flow_id: &str, code: &str) {
    let upgraded = server
        .flows()
        .await
        .submit_login_code(with_bearer(
            v1::SubmitLoginCodeRequest {
                flow_id: flow_id.into(),
                code: code.into(),
            },
            &user.token,
        ))
        .await
        .expect("the code the gateway received works")
        .into_inner();
    let session = whoami(
        server,
        &upgraded.session_token,
        v1::RequiredAal::HighestAvailable,
    )
    .await
    .expect("aal2");
    assert_eq!(session.aal, v1::AuthenticatorAssuranceLevel::Aal2 as i32);
}

const CONFIGURED: Options = Options {
    courier: Courier::Configured,
    redis_url: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_by_email_through_smtp_and_mailpit() {
    let yaml = format!(
        "{MFA}courier:\n  sms_sender: log\n  smtp:\n    connection_uri: smtp://twofold:secret@{}/?disable_starttls=true\n    from_address: no-reply@twofold.test\n    from_name: Twofold\n",
        stand_ins::mailpit_smtp()
    );
    let server = TestServer::start_with(Backend::PostgresRedis, &yaml, CONFIGURED).await;
    let user = aal1_user(&server).await;
    let flow = aal2_flow(&server, &user.token, "email")
        .await
        .expect("flow");
    let text = stand_ins::mailpit_text_for(&user.email).await;
    assert!(text.contains("please enter the following code"), "{text}");
    finish_step_up(&server, &user, &flow.id, &code_in(&text)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_by_sms_through_your_own_http_webhook() {
    let stub = HttpStub::start(Vec::new()).await;
    let yaml = format!(
        "{MFA}courier:\n  email_sender: log\n  channels:\n    - id: sms\n      type: http\n      request_config:\n        url: {}\n        method: POST\n        headers:\n          X-Source: twofold\n        body: '{{\"to\": \"{{{{ template_data.to }}}}\", \"code\": \"{{{{ template_data.code }}}}\", \"text\": {{{{ body | tojson }}}}}}'\n        auth:\n          type: basic_auth\n          config:\n            user: twofold\n            password: s3cret\n",
        stub.url("/sms")
    );
    let server = TestServer::start_with(Backend::PostgresRedis, &yaml, CONFIGURED).await;
    let user = aal1_user(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("flow");
    let request = wait_for_request(&stub).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/sms");
    assert_eq!(request.header("x-source"), Some("twofold"));
    assert!(
        request
            .header("authorization")
            .is_some_and(|value| value.starts_with("Basic "))
    );
    let body = request.json();
    assert_eq!(body["to"], user.phone.as_str());
    let code = body["code"].as_str().expect("code").to_owned();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{code}")),
        "webotp line"
    );
    finish_step_up(&server, &user, &flow.id, &code).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_by_sms_through_twilio() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(
        201,
        serde_json::json!({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}),
    )])
    .await;
    let yaml = format!(
        "{MFA}courier:\n  email_sender: log\n  sms_sender: twilio\n  twilio:\n    account_sid: AC0123456789abcdef0123456789abcdef\n    auth_token: twilio-secret\n    from: \"+15005550006\"\n    base_url: {}\n",
        stub.base_url()
    );
    let server = TestServer::start_with(Backend::PostgresRedis, &yaml, CONFIGURED).await;
    let user = aal1_user(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("flow");
    let request = wait_for_request(&stub).await;
    assert_eq!(
        request.path,
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    );
    assert_eq!(
        request.form_field("To").as_deref(),
        Some(user.phone.as_str())
    );
    assert_eq!(request.form_field("From").as_deref(), Some("+15005550006"));
    let body = request.form_field("Body").expect("Body");
    finish_step_up(&server, &user, &flow.id, &code_in(&body)).await;

    // The attempt records Twilio's message sid. The courier records it after Twilio answered,
    // which may be after the code it carried was used: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let sent = loop {
        let messages = server
            .context
            .stores
            .outbox
            .list_messages(Some(MessageStatus::Sent), Some(&user.phone), None, 5)
            .await
            .unwrap();
        if let Some(message) = messages.first() {
            break message.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let attempts = server.context.stores.outbox.attempts(sent).await.unwrap();
    assert_eq!(attempts[0].gateway, "twilio");
    assert_eq!(
        attempts[0].provider_message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_by_sms_through_amazon_sns() {
    let yaml = format!(
        "{MFA}courier:\n  email_sender: log\n  sms_sender: sns\n  sns:\n    region: us-east-1\n    endpoint_url: {}\n    access_key_id: testing\n    secret_access_key: testing\n    sms_type: Transactional\n",
        stand_ins::moto_url()
    );
    let server = TestServer::start_with(Backend::PostgresRedis, &yaml, CONFIGURED).await;
    let user = aal1_user(&server).await;
    let flow = aal2_flow(&server, &user.token, "phone")
        .await
        .expect("flow");
    let received = stand_ins::moto_sms_for(&user.phone).await;
    assert_eq!(received.len(), 1);
    finish_step_up(&server, &user, &flow.id, &code_in(&received[0])).await;
    server.stop().await;
}

async fn wait_for_request(stub: &HttpStub) -> support::http_stub::RecordedRequest {
    for _ in 0..200 {
        if let Some(request) = stub.requests().into_iter().next() {
            return request;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gateway stand-in received nothing");
}

/// A webhook SMS channel to `stub`, with the courier driven by hand.
async fn webhook_server(stub: &HttpStub, extra: &str) -> TestServer {
    let yaml = format!(
        "courier:\n  email_sender: log\n{extra}  channels:\n    - id: sms\n      type: http\n      request_config:\n        url: {}\n        method: POST\n        body: '{{\"to\": \"{{{{ template_data.to }}}}\", \"text\": {{{{ body | tojson }}}}}}'\n",
        stub.url("/sms")
    );
    TestServer::start_with(
        Backend::PostgresRedis,
        &yaml,
        Options {
            courier: Courier::Off,
            redis_url: None,
        },
    )
    .await
}

/// The webhook stub received exactly one message for each phone, none twice.
fn assert_each_delivered_once(stub: &HttpStub, mut phones: Vec<String>) {
    let mut recipients: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.json()["to"].as_str().unwrap().to_owned())
        .collect();
    recipients.sort();
    phones.sort();
    assert_eq!(recipients, phones, "each delivered once");
}

/// Queues one verification code by SMS through CodeService; returns (challenge id, phone).
async fn queue_code(server: &TestServer) -> (String, String) {
    let phone = unique_phone();
    let registered = register(server, &unique_email("fault"), Some(&phone)).await;
    let sent = server
        .codes()
        .await
        .send_code(admin(v1::SendCodeRequest {
            identity_id: registered.identity_id,
            target: Some(v1::send_code_request::Target::Via("phone".into())),
            purpose: "fault".into(),
            ..Default::default()
        }))
        .await
        .expect("send")
        .into_inner();
    (sent.challenge_id, phone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_comes_back_gets_the_message_on_retry() {
    let stub = HttpStub::start(vec![ScriptedResponse::new(503, "maintenance")]).await;
    let server = webhook_server(&stub, "").await;
    let (challenge_id, phone) = queue_code(&server).await;

    assert_eq!(
        server.deliver_once_configured().await,
        1,
        "first attempt: 503"
    );
    let message = server
        .context
        .stores
        .outbox
        .list_messages(None, Some(&phone), None, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        message.status,
        MessageStatus::Queued,
        "queued again for a retry"
    );
    assert!(message.next_attempt_at > server.clock_now(), "with backoff");
    assert_eq!(
        server.deliver_once_configured().await,
        0,
        "not due before its backoff"
    );

    server.clock.advance(chrono::Duration::seconds(10));
    assert_eq!(server.deliver_once_configured().await, 1);
    let message = server
        .context
        .stores
        .outbox
        .get_message(message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.status, MessageStatus::Sent);
    let attempts = server
        .context
        .stores
        .outbox
        .attempts(message.id)
        .await
        .unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.succeeded).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("503")
    );

    // The code that finally arrived verifies.
    let text = stub.requests().last().unwrap().json()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = server
        .codes()
        .await
        .verify_code(admin(v1::VerifyCodeRequest {
            challenge_id,
            code: code_in(&text),
            purpose: "fault".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.verified);
    assert_eq!(stub.requests().len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_never_answers_well_ends_in_abandoned() {
    let failures = (0..10)
        .map(|_| ScriptedResponse::new(500, "broken"))
        .collect();
    let stub = HttpStub::start(failures).await;
    let server = webhook_server(&stub, "  message_retries: 2\n").await;
    let (_, phone) = queue_code(&server).await;
    for _ in 0..5 {
        server.deliver_once_configured().await;
        server.clock.advance(chrono::Duration::seconds(20));
    }
    let message = server
        .context
        .stores
        .outbox
        .list_messages(None, Some(&phone), None, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(message.status, MessageStatus::Abandoned);
    assert_eq!(
        message.send_count, 3,
        "the first attempt and message_retries = 2 retries"
    );
    assert_eq!(stub.requests().len(), 3, "nothing after it was abandoned");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_keeps_several_deliveries_in_flight_and_sends_each_once() {
    use twofold::courier::worker::DELIVERY_CONCURRENCY;
    // A gateway that takes 300 ms per message: one at a time, the stub would never see two.
    let stub = HttpStub::start_slow(Vec::new(), std::time::Duration::from_millis(300)).await;
    let server = webhook_server(&stub, "").await;
    let mut phones = Vec::new();
    for _ in 0..12 {
        phones.push(queue_code(&server).await.1);
    }
    assert_eq!(server.deliver_once_configured().await, 12);
    let peak = stub.peak_in_flight();
    assert!(
        (2..=DELIVERY_CONCURRENCY).contains(&peak),
        "{peak} deliveries at once; expected between 2 and {DELIVERY_CONCURRENCY}"
    );
    assert_each_delivered_once(&stub, phones);
    assert_eq!(
        server.deliver_once_configured().await,
        0,
        "nothing left due"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deliver_each_message_once() {
    let stub = HttpStub::start(Vec::new()).await;
    let server = webhook_server(&stub, "").await;
    let mut phones = Vec::new();
    for _ in 0..12 {
        phones.push(queue_code(&server).await.1);
    }
    let (a, b) = tokio::join!(
        server.deliver_once_configured(),
        server.deliver_once_configured()
    );
    assert_eq!(a + b, 12, "every message claimed by exactly one worker");
    assert_each_delivered_once(&stub, phones);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_gateway_setting_is_a_start_up_error_naming_the_key() {
    for (yaml, key) in [
        (
            "courier:\n  smtp:\n    connection_uri: smtp://mail:25/\n",
            "courier.smtp.from_address",
        ),
        (
            "courier:\n  channels:\n    - id: sms\n      type: http\n      request_config:\n        url: http://127.0.0.1:9/\n        body: '{% if %}'\n",
            "courier.channels[0].request_config.body",
        ),
        ("courier:\n  sms_sender: twilio\n", "courier.sms_sender"),
        (
            "courier:\n  sns:\n    region: us-east-1\n    sms_type: Bulk\n",
            "courier.sns.sms_type",
        ),
        (
            "courier:\n  templates:\n    login_code:\n      valid:\n        sms:\n          body: '{{ nope }}'\n",
            "courier.templates.login_code.valid.sms.body",
        ),
    ] {
        let problems = twofold::config::parse_document(yaml, None).unwrap_err().0;
        assert!(
            problems.iter().any(|problem| problem.key == key),
            "{key}: {problems:?}"
        );
    }
    // Off the embedded default, gateways must be named.
    let problems = twofold::config::load(None, &[("DSN".into(), "postgres://db/twofold".into())])
        .unwrap_err()
        .0;
    let keys: Vec<&str> = problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    assert!(
        keys.contains(&"courier.email_sender") && keys.contains(&"courier.sms_sender"),
        "{keys:?}"
    );
}

/// An outbox that notes every message a claim takes, and otherwise is the server's own.
struct NotingClaims {
    inner: std::sync::Arc<dyn twofold::store::codes::Outbox>,
    claimed: std::sync::Mutex<Vec<uuid::Uuid>>,
}

#[async_trait::async_trait]
impl twofold::store::codes::Outbox for NotingClaims {
    async fn enqueue(
        &self,
        message: &twofold::store::codes::OutboxMessage,
        audit: &twofold::store::codes::AuditEvent,
    ) -> twofold::store::StoreResult<()> {
        self.inner.enqueue(message, audit).await
    }

    async fn record_audit(
        &self,
        event: &twofold::store::codes::AuditEvent,
    ) -> twofold::store::StoreResult<()> {
        self.inner.record_audit(event).await
    }

    async fn claim_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
        lease: std::time::Duration,
    ) -> twofold::store::StoreResult<Vec<twofold::store::codes::OutboxMessage>> {
        let claimed = self.inner.claim_due(now, limit, lease).await?;
        let mut noted = self.claimed.lock().unwrap();
        noted.extend(claimed.iter().map(|message| message.id));
        Ok(claimed)
    }

    async fn finish_attempts(
        &self,
        finished: &[(
            twofold::store::codes::DeliveryAttempt,
            twofold::store::codes::AttemptResult,
        )],
    ) -> twofold::store::StoreResult<()> {
        self.inner.finish_attempts(finished).await
    }

    async fn abandon(
        &self,
        id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> twofold::store::StoreResult<()> {
        self.inner.abandon(id, now).await
    }

    async fn get_message(
        &self,
        id: uuid::Uuid,
    ) -> twofold::store::StoreResult<Option<twofold::store::codes::OutboxMessage>> {
        self.inner.get_message(id).await
    }

    async fn attempts(
        &self,
        id: uuid::Uuid,
    ) -> twofold::store::StoreResult<Vec<twofold::store::codes::DeliveryAttempt>> {
        self.inner.attempts(id).await
    }

    async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        recipient: Option<&str>,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> twofold::store::StoreResult<Vec<twofold::store::codes::OutboxMessage>> {
        self.inner
            .list_messages(status, recipient, before, limit)
            .await
    }

    async fn audit_events(
        &self,
        identity_id: uuid::Uuid,
    ) -> twofold::store::StoreResult<Vec<twofold::store::codes::AuditEvent>> {
        self.inner.audit_events(identity_id).await
    }
}

/// A configured worker for `server` whose claims are noted, running until told to stop, and
/// open for hand-overs.
async fn noting_worker(
    server: &TestServer,
) -> (
    std::sync::Arc<NotingClaims>,
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let outbox = std::sync::Arc::new(NotingClaims {
        inner: server.context.stores.outbox.clone(),
        claimed: Default::default(),
    });
    let mut worker_context = server.context.clone();
    worker_context.stores.outbox = outbox.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        twofold::courier::worker::Worker::configured(worker_context).run(async {
            let _ = stopped.await;
        }),
    );
    // Open once a room can be had (taken and given back here).
    let open = async {
        while server.context.courier_handoff.reserve().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), open)
        .await
        .expect("the worker opens its hand-over");
    (outbox, worker, stop)
}

/// The one message queued to `phone`.
async fn message_to(server: &TestServer, phone: &str) -> twofold::store::codes::OutboxMessage {
    server
        .context
        .stores
        .outbox
        .list_messages(None, Some(phone), None, 1)
        .await
        .unwrap()
        .remove(0)
}

/// While a worker runs in the process, a queued message is handed straight to it: written
/// already claimed, delivered without a claim taking it, and recorded as sent. A message handed
/// over while the worker is busy is still delivered when the worker is told to stop then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_handed_to_the_running_worker_is_delivered_without_a_claim() {
    // Slow enough that the second message is handed over, and the worker told to stop, while
    // the first is still with the gateway.
    let stub = HttpStub::start_slow(Vec::new(), std::time::Duration::from_secs(2)).await;
    let server = webhook_server(&stub, "").await;
    let (outbox, worker, stop) = noting_worker(&server).await;

    let (_, first_phone) = queue_code(&server).await;
    let first_arrived = wait_for_request(&stub).await;
    assert_eq!(first_arrived.json()["to"], first_phone.as_str());
    let (_, second_phone) = queue_code(&server).await;
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(20), worker)
        .await
        .expect("the worker stops after its last deliveries")
        .expect("the worker ends well");

    assert_each_delivered_once(&stub, vec![first_phone.clone(), second_phone.clone()]);
    let claimed = outbox.claimed.lock().unwrap().clone();
    for phone in [&first_phone, &second_phone] {
        let message = message_to(&server, phone).await;
        assert_eq!(
            (message.status, message.send_count, message.lease_until),
            (MessageStatus::Sent, 1, None),
            "delivered and recorded"
        );
        assert!(!claimed.contains(&message.id), "handed over, never claimed");
        assert_eq!(
            server
                .context
                .stores
                .outbox
                .attempts(message.id)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    server.stop().await;
}

/// A handed-over message that waited in the worker's hand-over until its lease had run out is
/// left to the claim that takes it over, so it is sent once, not once by each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_message_whose_lease_ran_out_is_sent_once_by_its_claim() {
    // The worker is busy with the first message while the second waits to be taken.
    let stub = HttpStub::start_slow(Vec::new(), std::time::Duration::from_secs(2)).await;
    let server = webhook_server(&stub, "").await;
    let (outbox, worker, stop) = noting_worker(&server).await;

    let (_, first_phone) = queue_code(&server).await;
    wait_for_request(&stub).await;
    let (_, second_phone) = queue_code(&server).await;
    // Past the second message's lease while it waits (the first one's is past too, but it is
    // with the gateway and recorded before the next claim).
    server.clock.advance(chrono::Duration::seconds(65));
    let both_arrived = async {
        while stub.requests().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), both_arrived)
        .await
        .expect("the second message is delivered");
    // A stopped worker has dealt with everything handed to it, in a round or its last one.
    let _ = stop.send(());
    worker.await.expect("the worker ends well");

    assert_each_delivered_once(&stub, vec![first_phone, second_phone.clone()]);
    let second = message_to(&server, &second_phone).await;
    assert!(
        outbox.claimed.lock().unwrap().contains(&second.id),
        "taken over by a claim"
    );
    assert_eq!((second.status, second.send_count), (MessageStatus::Sent, 1));
    server.stop().await;
}
