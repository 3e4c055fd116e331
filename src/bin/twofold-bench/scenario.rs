//! Virtual users and what each one repeats. Every user has seats of its own (an identity with a
//! session and a unique phone number), so users never share a rate limit, a code or a session.
//!
//! A fresh AAL1 session costs a password login (argon2, tens of milliseconds of server CPU), far
//! more than the step-up being measured, so sessions are made once in setup: a seat's first
//! step-up lifts AAL1 to AAL2, later ones are the same code step-up as a refresh
//! (`refresh: true`). The server runs the same path for both (flow, challenge, courier, verify,
//! session upgrade with token rotation); each refresh adds an entry to the session's
//! authentication methods, which many seats keep short.
use crate::cli::Mode;
use crate::connection::{Connection, connect};
use crate::inbox::Inbox;
use crate::stats::Tally;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};
use tonic_types::StatusExt;
use twofold::proto::v1;

/// How long a user waits for its code before counting a delivery timeout.
const CODE_TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "correct horse battery staple bench";

#[derive(Debug, Clone)]
pub struct Seat {
    pub identity_id: String,
    pub phone: String,
    pub token: String,
    pub aal2: bool,
}

#[derive(Clone)]
pub struct Target {
    pub public: String,
    pub admin: String,
    pub admin_key: String,
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The error's `ErrorInfo.reason`, else its gRPC code.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| format!("{:?}", status.code()))
}

/// Registers `count` identities (each with an AAL1 session) through the public API, a few at a
/// time: registration hashes a password, which is the expensive part.
pub async fn register_seats(target: &Target, count: usize, run: &str) -> Result<Vec<Seat>, String> {
    let parallel = 4.min(count.max(1));
    let mut tasks = Vec::new();
    for worker in 0..parallel {
        let url = target.public.clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut flows = v1::flow_service_client::FlowServiceClient::new(connect(&url).await?);
            let mut seats = Vec::new();
            for index in (worker..count).step_by(parallel) {
                seats.push(register(&mut flows, index, &run).await?);
            }
            Ok::<_, String>(seats)
        }));
    }
    let mut seats = Vec::with_capacity(count);
    for task in tasks {
        seats.extend(task.await.map_err(|error| error.to_string())??);
    }
    Ok(seats)
}

async fn register(
    flows: &mut v1::flow_service_client::FlowServiceClient<Connection>,
    index: usize,
    run: &str,
) -> Result<Seat, String> {
    // German mobile numbers (+49 151 and eight digits) are valid for the phone parser; the run
    // tag keeps repeated runs on one database apart.
    let phone = format!("+49151{:03}{:05}", run_number(run) % 1000, index);
    let email = format!("bench-{run}-{index}@example.test");
    let flow = flows
        .create_registration_flow(v1::CreateRegistrationFlowRequest::default())
        .await
        .map_err(|status| format!("CreateRegistrationFlow: {}", reason(&status)))?
        .into_inner()
        .flow
        .ok_or("CreateRegistrationFlow: no flow")?;
    let traits =
        twofold::api::convert::json_to_struct(&serde_json::json!({"email": email, "phone": phone}));
    let registered = flows
        .submit_registration_flow(v1::SubmitRegistrationFlowRequest {
            flow_id: flow.id,
            traits: Some(traits),
            password: PASSWORD.into(),
        })
        .await
        .map_err(|status| format!("SubmitRegistrationFlow: {}", reason(&status)))?
        .into_inner();
    Ok(Seat {
        identity_id: registered
            .identity
            .map(|identity| identity.id)
            .ok_or("SubmitRegistrationFlow: no identity")?,
        phone,
        token: registered.session_token,
        aal2: false,
    })
}

fn run_number(run: &str) -> usize {
    run.bytes().fold(0usize, |sum, byte| {
        sum.wrapping_mul(31).wrapping_add(usize::from(byte))
    })
}

/// One virtual user's connections.
pub struct Clients {
    flows: v1::flow_service_client::FlowServiceClient<Connection>,
    sessions: v1::session_service_client::SessionServiceClient<Connection>,
    /// The admin listener's, opened only for the code scenario.
    codes: Option<v1::code_service_client::CodeServiceClient<Connection>>,
    admin_key: String,
}

impl Clients {
    pub async fn connect(target: &Target, mode: Mode) -> Result<Self, String> {
        let public = connect(&target.public).await?;
        // Only the code scenario talks to the admin listener; the others do not open it.
        let codes = if mode == Mode::Code {
            let admin = connect(&target.admin).await?;
            Some(v1::code_service_client::CodeServiceClient::new(admin))
        } else {
            None
        };
        Ok(Self {
            flows: v1::flow_service_client::FlowServiceClient::new(public.clone()),
            sessions: v1::session_service_client::SessionServiceClient::new(public),
            codes,
            admin_key: target.admin_key.clone(),
        })
    }
}

/// Records into `tally` only what finished inside the measured window.
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.start && at <= self.end
    }
}

struct Recorder<'a> {
    tally: &'a mut Tally,
    window: &'a Window,
}

impl Recorder<'_> {
    /// Times `call`; records its latency, and the server's share of it when the answer tells
    /// it, or its error reason.
    async fn time<T>(
        &mut self,
        rpc: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Option<Response<T>> {
        let started = Instant::now();
        let outcome = call.await;
        let finished = Instant::now();
        let counted = self.window.contains(finished);
        match outcome {
            Ok(response) => {
                if counted {
                    self.tally.record(rpc, finished - started, finished);
                    if let Some(handled) = handled_time(&response) {
                        self.tally.record_handled(rpc, handled);
                    }
                }
                Some(response)
            }
            Err(status) => {
                if counted {
                    self.tally.error_at(rpc, &reason(&status), finished);
                }
                None
            }
        }
    }

    fn latency(&mut self, name: &'static str, started: Instant, finished: Instant) {
        if self.window.contains(finished) {
            self.tally.record(name, finished - started, finished);
        }
    }

    fn error(&mut self, rpc: &str, why: &str) {
        if self.window.contains(Instant::now()) {
            self.tally.error(rpc, why);
        }
    }

    fn completed(&mut self) {
        if self.window.contains(Instant::now()) {
            self.tally.completed += 1;
        }
    }
}

/// How long the server took to produce `response`, as a bench build's server tells it.
fn handled_time<T>(response: &Response<T>) -> Option<Duration> {
    let micros = response
        .metadata()
        .get(twofold::server::HANDLED_TIME_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_micros(micros))
}

/// When a paced user starts and how often it starts again.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    pub first: Instant,
}

/// Repeats `mode` over the user's seats until the window ends.
pub async fn run_user(
    mode: Mode,
    mut clients: Clients,
    mut seats: Vec<Seat>,
    inbox: Inbox,
    window: Window,
    pacing: Option<Pacing>,
) -> (Tally, Vec<Seat>) {
    let mut tally = Tally::default();
    let mut recorder = Recorder {
        tally: &mut tally,
        window: &window,
    };
    let mut next = 0;
    let mut due = pacing.map_or_else(Instant::now, |pacing| pacing.first);
    while Instant::now() < window.end && !seats.is_empty() {
        if let Some(Pacing { interval, .. }) = pacing {
            // A late user starts at once but does not burst to catch up.
            tokio::time::sleep_until(due.into()).await;
            due = due.max(Instant::now() - interval) + interval;
        }
        let count = seats.len();
        let seat = &mut seats[next % count];
        next += 1;
        let done = match mode {
            Mode::Stepup => step_up(&mut clients, seat, &inbox, &mut recorder).await,
            Mode::Whoami => whoami(&mut clients, seat, &mut recorder).await,
            Mode::Code => send_and_verify(&mut clients, seat, &inbox, &mut recorder).await,
        };
        if done {
            recorder.completed();
        }
    }
    (tally, seats)
}

/// The seed scenario on one seat. Returns whether every step succeeded.
async fn step_up(
    clients: &mut Clients,
    seat: &mut Seat,
    inbox: &Inbox,
    recorder: &mut Recorder<'_>,
) -> bool {
    let started = Instant::now();
    inbox.forget(&seat.phone);
    let request = v1::CreateLoginFlowRequest {
        requested_aal: v1::AuthenticatorAssuranceLevel::Aal2.into(),
        refresh: seat.aal2,
        via: "phone".into(),
    };
    let Some(flow) = recorder
        .time(
            "CreateLoginFlow",
            clients
                .flows
                .create_login_flow(bearer(request, &seat.token)),
        )
        .await
        .and_then(|response| response.into_inner().flow)
    else {
        return false;
    };
    let Some((code, arrived)) = inbox.wait(&seat.phone, CODE_TIMEOUT).await else {
        recorder.error("code delivery", "TIMEOUT");
        return false;
    };
    recorder.latency("code delivery", started, arrived);
    let submit = v1::SubmitLoginCodeRequest {
        flow_id: flow.id,
        code,
    };
    let Some(submitted) = recorder
        .time(
            "SubmitLoginCode",
            clients.flows.submit_login_code(bearer(submit, &seat.token)),
        )
        .await
    else {
        return false;
    };
    seat.token = submitted.into_inner().session_token;
    seat.aal2 = true;
    let whoami = v1::WhoAmIRequest::default();
    let ok = recorder
        .time(
            "WhoAmI",
            clients.sessions.who_am_i(bearer(whoami, &seat.token)),
        )
        .await
        .is_some();
    if ok {
        recorder.latency("step-up (all)", started, Instant::now());
    }
    ok
}

async fn whoami(clients: &mut Clients, seat: &Seat, recorder: &mut Recorder<'_>) -> bool {
    let request = bearer(v1::WhoAmIRequest::default(), &seat.token);
    recorder
        .time("WhoAmI", clients.sessions.who_am_i(request))
        .await
        .is_some()
}

async fn send_and_verify(
    clients: &mut Clients,
    seat: &Seat,
    inbox: &Inbox,
    recorder: &mut Recorder<'_>,
) -> bool {
    const PURPOSE: &str = "bench-confirm";
    let Some(codes) = clients.codes.as_mut() else {
        recorder.error("SendCode", "NO_ADMIN_CONNECTION");
        return false;
    };
    let started = Instant::now();
    inbox.forget(&seat.phone);
    let send = v1::SendCodeRequest {
        identity_id: seat.identity_id.clone(),
        target: Some(v1::send_code_request::Target::Via("phone".into())),
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    let Some(sent) = recorder
        .time(
            "SendCode",
            codes.send_code(bearer(send, &clients.admin_key)),
        )
        .await
    else {
        return false;
    };
    let Some((code, arrived)) = inbox.wait(&seat.phone, CODE_TIMEOUT).await else {
        recorder.error("code delivery", "TIMEOUT");
        return false;
    };
    recorder.latency("code delivery", started, arrived);
    let verify = v1::VerifyCodeRequest {
        challenge_id: sent.into_inner().challenge_id,
        code,
        purpose: PURPOSE.into(),
    };
    let Some(verified) = recorder
        .time(
            "VerifyCode",
            codes.verify_code(bearer(verify, &clients.admin_key)),
        )
        .await
        .map(|response| response.into_inner())
    else {
        return false;
    };
    if !verified.verified {
        let why = v1::ErrorReason::try_from(verified.failure_reason)
            .map(|reason| reason.reason())
            .unwrap_or("UNKNOWN");
        recorder.error("VerifyCode", &format!("not verified: {why}"));
        return false;
    }
    true
}

/// Lifts every seat still at AAL1 to AAL2 (unmeasured), so `WhoAmI` answers under the default
/// `highest_available` policy.
pub async fn lift_to_aal2(
    target: &Target,
    seats: Vec<Seat>,
    inbox: &Inbox,
    parallel: usize,
) -> Result<Vec<Seat>, String> {
    let parallel = parallel.clamp(1, seats.len().max(1));
    let mut groups: Vec<Vec<Seat>> = vec![Vec::new(); parallel];
    for (index, seat) in seats.into_iter().enumerate() {
        groups[index % parallel].push(seat);
    }
    let mut tasks = Vec::new();
    for group in groups {
        let target = target.clone();
        let inbox = inbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut clients = Clients::connect(&target, Mode::Stepup).await?;
            let now = Instant::now();
            let forever = Window {
                start: now,
                end: now + Duration::from_secs(3600),
            };
            let mut tally = Tally::default();
            let mut recorder = Recorder {
                tally: &mut tally,
                window: &forever,
            };
            let mut group = group;
            let mut failed = false;
            for seat in group.iter_mut().filter(|seat| !seat.aal2) {
                if !step_up(&mut clients, seat, &inbox, &mut recorder).await {
                    failed = true;
                    break;
                }
            }
            if failed {
                return Err(format!("lifting a seat to aal2 failed: {:?}", tally.errors));
            }
            Ok(group)
        }));
    }
    let mut lifted = Vec::new();
    for task in tasks {
        lifted.extend(task.await.map_err(|error| error.to_string())??);
    }
    Ok(lifted)
}
