//! Which gateway serves each channel, from `courier.*`, checked when the configuration loads so a
//! broken gateway setting is a start-up error that names its key.
//!
//! Email: `courier.email_sender` (`smtp` | `log`); unset means SMTP when `courier.smtp` is set.
//! SMS: `courier.sms_sender` (an http channel id, `twilio`, `sns` or `log`); unset means the first
//! configured of: the http channel `sms` (Kratos's convention), any other http channel, Twilio,
//! SNS. With nothing configured the development log sender serves the channel, but only on the
//! embedded default: a deployment on Postgres must name its gateways (or `log`) explicitly, so
//! codes never silently go to a terminal in production.
//!
//! Either channel may name `bench` (the load harness's datagram sender) only in a binary built
//! with the `bench` cargo feature; any other build refuses `bench` and `courier.bench`.
use super::http::{HttpChannelSettings, HttpSender};
use super::log_sender::LogSender;
use super::smtp::{SmtpSender, SmtpSettings};
use super::sns::{SnsSender, SnsSettings};
use super::twilio::{TwilioSender, TwilioSettings};
use super::{Sender, Senders};
use crate::config::{Config, ConfigProblem};
use serde_json::Value;
use std::sync::Arc;

/// Settings read from the configuration, before any connection is made.
struct Parsed {
    smtp: Option<SmtpSettings>,
    channels: Vec<HttpChannelSettings>,
    twilio: Option<TwilioSettings>,
    sns: Option<SnsSettings>,
    #[cfg(feature = "bench")]
    bench: Option<super::bench_sender::BenchSettings>,
}

enum EmailChoice {
    Smtp,
    Log,
    Bench,
}

enum SmsChoice {
    Channel(usize),
    Twilio,
    Sns,
    Log,
    Bench,
}

#[cfg(not(feature = "bench"))]
const BENCH_REFUSED: &str = "the bench sender exists only in builds with the `bench` cargo feature \
     (the load harness, twofold-bench); this build refuses it";

/// `bench` for a channel: needs the feature and `courier.bench`. Without the feature the choice
/// is refused, never silently replaced.
fn choose_bench(config: &Config, key: &str, problems: &mut Vec<ConfigProblem>) -> bool {
    #[cfg(feature = "bench")]
    {
        if present(&config.courier.bench).is_none() {
            problems.push(problem(key, "is bench but courier.bench.socket is not set"));
            return false;
        }
        true
    }
    #[cfg(not(feature = "bench"))]
    {
        let _ = config;
        problems.push(problem(key, format!("bench: {BENCH_REFUSED}")));
        false
    }
}

fn present(value: &Option<Value>) -> Option<&Value> {
    value.as_ref().filter(|value| !value.is_null())
}

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn collect<T>(
    result: Result<T, Vec<(String, String)>>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(found) => {
            problems.extend(
                found
                    .into_iter()
                    .map(|(key, message)| ConfigProblem { key, message }),
            );
            None
        }
    }
}

fn is_embedded(config: &Config) -> bool {
    !config
        .dsn
        .as_deref()
        .is_some_and(|dsn| dsn.starts_with("postgres://") || dsn.starts_with("postgresql://"))
}

fn parse(config: &Config, problems: &mut Vec<ConfigProblem>) -> Parsed {
    let courier = &config.courier;
    let smtp =
        present(&courier.smtp).and_then(|value| collect(SmtpSettings::from_value(value), problems));
    let mut channels: Vec<HttpChannelSettings> = Vec::new();
    for (index, value) in courier.channels.iter().enumerate() {
        if let Some(channel) = collect(HttpChannelSettings::from_value(index, value), problems) {
            if channels.iter().any(|other| other.id == channel.id) {
                problems.push(problem(
                    &format!("courier.channels[{index}].id"),
                    "is used by another channel",
                ));
            }
            channels.push(channel);
        }
    }
    let twilio = present(&courier.twilio)
        .and_then(|value| collect(TwilioSettings::from_value(value), problems));
    let sns =
        present(&courier.sns).and_then(|value| collect(SnsSettings::from_value(value), problems));
    #[cfg(feature = "bench")]
    let bench = present(&courier.bench).and_then(|value| {
        collect(
            super::bench_sender::BenchSettings::from_value(value),
            problems,
        )
    });
    #[cfg(not(feature = "bench"))]
    if present(&courier.bench).is_some() {
        problems.push(problem("courier.bench", BENCH_REFUSED));
    }
    Parsed {
        smtp,
        channels,
        twilio,
        sns,
        #[cfg(feature = "bench")]
        bench,
    }
}

fn choose_email(
    config: &Config,
    parsed: &Parsed,
    problems: &mut Vec<ConfigProblem>,
) -> EmailChoice {
    const KEY: &str = "courier.email_sender";
    match config.courier.email_sender.as_deref() {
        Some("log") => EmailChoice::Log,
        Some("bench") if choose_bench(config, KEY, problems) => EmailChoice::Bench,
        Some("bench") => EmailChoice::Log,
        Some("smtp") if parsed.smtp.is_some() || present(&config.courier.smtp).is_some() => {
            EmailChoice::Smtp
        }
        Some("smtp") => {
            problems.push(problem(KEY, "is smtp but courier.smtp is not configured"));
            EmailChoice::Log
        }
        Some(_) => {
            problems.push(problem(KEY, "must be smtp or log"));
            EmailChoice::Log
        }
        None if present(&config.courier.smtp).is_some() => EmailChoice::Smtp,
        None => {
            if !is_embedded(config) {
                problems.push(problem(
                    KEY,
                    "no email gateway is configured: set courier.smtp, or email_sender: log to print messages",
                ));
            }
            EmailChoice::Log
        }
    }
}

fn choose_sms(config: &Config, parsed: &Parsed, problems: &mut Vec<ConfigProblem>) -> SmsChoice {
    const KEY: &str = "courier.sms_sender";
    let channel = |id: &str| parsed.channels.iter().position(|channel| channel.id == id);
    match config.courier.sms_sender.as_deref() {
        Some("log") => SmsChoice::Log,
        Some("bench") if choose_bench(config, KEY, problems) => SmsChoice::Bench,
        Some("bench") => SmsChoice::Log,
        Some("twilio") if present(&config.courier.twilio).is_some() => SmsChoice::Twilio,
        Some("sns") if present(&config.courier.sns).is_some() => SmsChoice::Sns,
        Some(name @ ("twilio" | "sns")) => {
            problems.push(problem(
                KEY,
                format!("is {name} but courier.{name} is not configured"),
            ));
            SmsChoice::Log
        }
        Some(id) => match channel(id) {
            Some(index) => SmsChoice::Channel(index),
            None if config.courier.channels.is_empty() || !parsed.channels.is_empty() => {
                problems.push(problem(
                    KEY,
                    "must be log, twilio, sns or the id of a courier.channels entry",
                ));
                SmsChoice::Log
            }
            // The channel exists but did not parse; its own problem is already reported.
            None => SmsChoice::Log,
        },
        None => {
            if let Some(index) = channel("sms").or((!parsed.channels.is_empty()).then_some(0)) {
                SmsChoice::Channel(index)
            } else if present(&config.courier.twilio).is_some() {
                SmsChoice::Twilio
            } else if present(&config.courier.sns).is_some() {
                SmsChoice::Sns
            } else {
                if !is_embedded(config) {
                    problems.push(problem(
                        KEY,
                        "no sms gateway is configured: set courier.channels, twilio or sns, or sms_sender: log",
                    ));
                }
                SmsChoice::Log
            }
        }
    }
}

/// Every problem with the gateway settings.
pub fn check(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let parsed = parse(config, &mut problems);
    choose_email(config, &parsed, &mut problems);
    choose_sms(config, &parsed, &mut problems);
    problems
}

fn describe(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}: {}", problem.key, problem.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds the senders the configuration names. Connections are opened lazily by each gateway.
pub async fn senders(config: &Config) -> Result<Senders, String> {
    let mut problems = Vec::new();
    let mut parsed = parse(config, &mut problems);
    let email = choose_email(config, &parsed, &mut problems);
    let sms = choose_sms(config, &parsed, &mut problems);
    if !problems.is_empty() {
        return Err(describe(&problems));
    }
    let email: Arc<dyn Sender> = match (email, parsed.smtp.take()) {
        (EmailChoice::Smtp, Some(settings)) => Arc::new(SmtpSender::new(settings)?),
        (EmailChoice::Bench, _) => bench_sender(&parsed)?,
        _ => Arc::new(LogSender),
    };
    let sms: Arc<dyn Sender> = match sms {
        SmsChoice::Channel(index) => Arc::new(HttpSender::new(parsed.channels.swap_remove(index))?),
        SmsChoice::Twilio => Arc::new(TwilioSender::new(
            parsed.twilio.take().ok_or("twilio settings vanished")?,
        )?),
        SmsChoice::Sns => {
            Arc::new(SnsSender::new(parsed.sns.take().ok_or("sns settings vanished")?).await?)
        }
        SmsChoice::Log => Arc::new(LogSender),
        SmsChoice::Bench => bench_sender(&parsed)?,
    };
    Ok(Senders { email, sms })
}

#[cfg(feature = "bench")]
fn bench_sender(parsed: &Parsed) -> Result<Arc<dyn Sender>, String> {
    let settings = parsed.bench.clone().ok_or("bench settings vanished")?;
    Ok(Arc::new(super::bench_sender::BenchSender::new(settings)?))
}

#[cfg(not(feature = "bench"))]
fn bench_sender(_parsed: &Parsed) -> Result<Arc<dyn Sender>, String> {
    // `choose_bench` refuses the choice in this build, so `senders` returned before this.
    Err(BENCH_REFUSED.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bench_sender(socket: Option<&str>) -> Config {
        let mut config = Config::default();
        config.courier.sms_sender = Some("bench".into());
        config.courier.email_sender = Some("log".into());
        config.courier.bench = socket.map(|path| serde_json::json!({ "socket": path }));
        config
    }

    fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
        problems
            .iter()
            .map(|problem| problem.key.as_str())
            .collect()
    }

    #[cfg(not(feature = "bench"))]
    #[test]
    fn a_build_without_the_bench_feature_refuses_the_bench_sender() {
        let problems = check(&with_bench_sender(Some("/tmp/bench.sock")));
        assert_eq!(keys(&problems), ["courier.bench", "courier.sms_sender"]);
        assert!(
            problems
                .iter()
                .all(|problem| problem.message.contains("`bench` cargo feature")),
            "{problems:?}"
        );
        let mut email = Config::default();
        email.courier.email_sender = Some("bench".into());
        assert_eq!(keys(&check(&email)), ["courier.email_sender"]);
    }

    #[cfg(feature = "bench")]
    #[test]
    fn the_bench_sender_needs_its_socket() {
        let problems = check(&with_bench_sender(None));
        assert_eq!(keys(&problems), ["courier.sms_sender"]);
        let problems = check(&with_bench_sender(Some("")));
        assert_eq!(keys(&problems), ["courier.bench.socket"]);
        assert!(check(&with_bench_sender(Some("/tmp/bench.sock"))).is_empty());
    }
}
