//! The admin CLI: `twofold config|schema|identities …` talk gRPC to the admin listener with the
//! generated clients. Connection set-up, request credentials, output and error reporting live
//! here; each subcommand group has its own module.
//!
//! Exit codes: 0 success, 1 the server refused the call (or a document is invalid), 2 bad input
//! or no connection (clap uses 2 for usage errors too).

pub mod config;
pub mod identities;
pub mod schema;
mod view;

use clap::Args;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// How long to wait for the admin listener to accept a connection: an operator at a terminal
/// should hear about a wrong address quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one call, so a hung server does not hang scripts forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the admin listener is and the key it wants.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin listener URL.
    #[arg(
        long,
        global = true,
        env = "TWOFOLD_ADMIN_URL",
        default_value = "http://127.0.0.1:4434"
    )]
    pub admin_url: String,
    /// Admin API key, sent as `authorization: Bearer <key>`.
    // hide_env_values keeps the key out of `--help`.
    #[arg(
        long,
        global = true,
        env = "TWOFOLD_ADMIN_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

/// Why a command did not succeed; decides the exit code and what stderr says.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error status.
    Refused(Status),
    /// The problems were already printed (for example `config validate`).
    Invalid,
    /// Bad local input, unreadable files, or no connection to the server.
    Usage(String),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Refused(status)
    }
}

pub type Outcome = Result<(), Failure>;

/// A connected channel plus the credentials every request carries.
pub struct Admin {
    channel: Channel,
    key: Option<AsciiMetadataValue>,
}

impl Admin {
    pub async fn connect(args: &AdminArgs) -> Result<Self, Failure> {
        let key = args
            .api_key
            .as_deref()
            .filter(|key| !key.trim().is_empty())
            .map(bearer)
            .transpose()?;
        let endpoint = Endpoint::from_shared(args.admin_url.clone())
            .map_err(|_| Failure::Usage(format!("invalid admin url {:?}", args.admin_url)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        // Connect up front so an unreachable server is a connection error (exit 2), not a
        // refused call.
        let channel = endpoint.connect().await.map_err(|error| {
            Failure::Usage(format!(
                "cannot connect to the admin api at {}: {}",
                args.admin_url,
                describe_transport_error(&error)
            ))
        })?;
        Ok(Self { channel, key })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request carrying the admin key, if one was given; without one the server answers
    /// `ADMIN_KEY_REQUIRED`, which says more than a local check could.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        request
    }
}

fn bearer(key: &str) -> Result<AsciiMetadataValue, Failure> {
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {}", key.trim()))
        // The key itself is never echoed, not even when it is malformed.
        .map_err(|_| {
            Failure::Usage("the admin api key contains characters not allowed in a header".into())
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The innermost cause reads best ("Connection refused (os error 111)"); tonic's own message is
/// only "transport error".
fn describe_transport_error(error: &tonic::transport::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Runs one admin command and turns its outcome into the process exit code.
pub async fn run<F, Fut>(args: &AdminArgs, command: F) -> ExitCode
where
    F: FnOnce(Admin) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let outcome = match Admin::connect(args).await {
        Ok(admin) => command(admin).await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> ExitCode {
    match failure {
        Failure::Refused(status) if is_transport_failure(status) => {
            eprintln!(
                "twofold: lost the connection to the admin api: {}",
                status.message()
            );
            ExitCode::from(2)
        }
        Failure::Refused(status) => {
            eprint!("{}", describe_status(status));
            ExitCode::from(1)
        }
        Failure::Invalid => ExitCode::from(1),
        Failure::Usage(message) => {
            eprintln!("twofold: {message}");
            ExitCode::from(2)
        }
    }
}

/// Twofold puts `ErrorInfo` on every status it sends; an `UNAVAILABLE` without one comes from
/// the client's transport (server gone mid-call), which is a connection problem, not a refusal.
fn is_transport_failure(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.get_error_details().error_info().is_none()
}

/// `twofold: <message> (reason R)` and one indented line per field violation.
pub fn describe_status(status: &Status) -> String {
    let details = status.get_error_details();
    let cause = match details.error_info() {
        Some(info) => format!("reason {}", info.reason),
        None => format!("code {:?}", status.code()),
    };
    let mut text = format!("twofold: {} ({cause})\n", status.message());
    if let Some(bad) = details.bad_request() {
        for violation in &bad.field_violations {
            text.push_str(&format!(
                "  {}: {}\n",
                violation.field, violation.description
            ));
        }
    }
    text
}

/// Writes to stdout without panicking when the reader went away (`| head`).
pub fn print(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    let written = if text.ends_with('\n') {
        out.write_all(text.as_bytes())
    } else {
        writeln!(out, "{text}")
    };
    written
        .and_then(|()| out.flush())
        .map_err(|error| Failure::Usage(format!("cannot write output: {error}")))
}

pub fn print_json(value: &serde_json::Value) -> Outcome {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::Usage(format!("cannot format output: {error}")))?;
    print(&text)
}

pub fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|error| Failure::Usage(format!("cannot read {}: {error}", path.display())))
}
