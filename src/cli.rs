//! What the subcommands do, kept out of `main` so `main` stays a thin dispatcher.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultFields, Format};
use twofold::config::{self, Loaded};
use twofold::courier::worker::Worker;
use twofold::domain::clock::SystemClock;
use twofold::domain::{Context, Settings, configuration};
use twofold::log_writer::{self, BatchedLog};
use twofold::server::{self, Listeners};
use twofold::store;

/// Where `serve` writes the admin key it generates when none is configured.
const GENERATED_ADMIN_KEY_FILE: &str = "twofold-admin.key";

/// The log's buffer, kept so that it can be flushed before the process exits.
static LOG: std::sync::OnceLock<BatchedLog> = std::sync::OnceLock::new();

fn load_config(path: Option<&Path>) -> Result<Loaded, String> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    config::load(path, &env).map_err(|problems| {
        let lines: Vec<String> = problems
            .0
            .iter()
            .map(|p| format!("  {}: {}", p.key, p.message))
            .collect();
        format!("invalid configuration:\n{}", lines.join("\n"))
    })
}

/// Loads the configuration, starts logging as it says, and reports what it ignored.
fn start(path: Option<&Path>) -> Result<Loaded, String> {
    let loaded = load_config(path)?;
    init_logging(&loaded.config);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(loaded)
}

fn init_logging(config: &config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let json = config.log.format == "json";
    let started = BatchedLog::start(
        std::io::stdout(),
        log_writer::GATHER,
        log_writer::MAX_PENDING,
        drop_notice(json),
    );
    let log = match started {
        Ok(log) => log,
        Err(error) => {
            // Without its thread the log is written line by line, as it was before.
            install(builder.with_writer(std::io::stdout), json);
            tracing::warn!(%error, "log writer thread not started; writing line by line");
            return;
        }
    };
    install(builder.with_writer(log.clone()), json);
    if LOG.set(log).is_ok() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A panic on the main thread ends the process, and the lines just before it explain
            // it. Elsewhere the runtime catches it and serving goes on; a worker must not wait
            // there on a reader that stopped reading.
            if std::thread::current().name() == Some("main") {
                flush_logs();
            }
            previous(info);
        }));
    }
}

/// Makes `builder` the global subscriber, in JSON or as text.
fn install<W>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<DefaultFields, Format, EnvFilter, W>,
    json: bool,
) where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The line that says how many log lines were dropped, in the log's format; it bypasses the level
/// filter, as a gap in the log must always be visible.
fn drop_notice(json: bool) -> log_writer::DropNotice {
    const MESSAGE: &str = "log lines dropped: the log's reader fell behind";
    Box::new(move |dropped| {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if json {
            let line = serde_json::json!({
                "timestamp": now,
                "level": "WARN",
                "fields": {"message": MESSAGE, "dropped": dropped},
            });
            format!("{line}\n")
        } else {
            format!("{now}  WARN {MESSAGE} dropped={dropped}\n")
        }
    })
}

/// Writes out the log lines still gathering; `main` calls this before the process exits.
pub fn flush_logs() {
    if let Some(log) = LOG.get() {
        log.flush(log_writer::FLUSH_PATIENCE);
    }
}

/// With no admin key configured the admin API would be either open or unusable; instead a key is
/// generated for this run and written to a file only the owner can read. It is never logged.
fn ensure_admin_key(config: &mut config::Config) -> Result<(), String> {
    if !config.serve.admin.api_keys.is_empty() {
        return Ok(());
    }
    let key = twofold::domain::token::SessionToken::generate()
        .expose()
        .replacen("tfs_", "tfa_", 1);
    let path = PathBuf::from(GENERATED_ADMIN_KEY_FILE);
    write_private(&path, &key)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    tracing::warn!(
        file = %path.display(),
        "no admin api key configured (serve.admin.api_keys); generated one for this run"
    );
    config.serve.admin.api_keys.push(key);
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining in-flight calls");
}

pub async fn serve(path: Option<&Path>) -> Result<(), String> {
    let Loaded {
        mut config,
        schemas,
        ..
    } = start(path)?;
    ensure_admin_key(&mut config)?;
    let stores = store::open(&config)
        .await
        .map_err(|error| error.to_string())?;

    let public_address = format!("{}:{}", config.serve.public.host, config.serve.public.port);
    let admin_address = format!("{}:{}", config.serve.admin.host, config.serve.admin.port);
    let public = TcpListener::bind(&public_address)
        .await
        .map_err(|error| format!("cannot listen on {public_address} (serve.public): {error}"))?;
    let admin = TcpListener::bind(&admin_address)
        .await
        .map_err(|error| format!("cannot listen on {admin_address} (serve.admin): {error}"))?;
    // Logged from the sockets, so port 0 (any free port) shows the port actually taken.
    let bound = |listener: &TcpListener, fallback: &str| {
        listener
            .local_addr()
            .map(|address| address.to_string())
            .unwrap_or_else(|_| fallback.to_owned())
    };
    tracing::info!(
        public = %bound(&public, &public_address),
        admin = %bound(&admin, &admin_address),
        dsn = store::describe_dsn(config.dsn.as_deref()),
        redis = config.redis.url.is_some(),
        "twofold is serving"
    );

    let context = Context::new(
        Settings::new(config, schemas),
        stores,
        Arc::new(SystemClock),
    );
    configuration::bootstrap(&context)
        .await
        .map_err(|error| error.to_string())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let courier = tokio::spawn(Worker::configured(context.clone()).run(wait_for(stopped.clone())));
    let follower = tokio::spawn(configuration::follow(context.clone(), wait_for(stopped)));
    let served = server::run(Listeners { public, admin }, context, async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await;
    let _ = courier.await;
    let _ = follower.await;
    served.map_err(|error| error.to_string())
}

/// Runs only the courier worker, for deployments that scale delivery apart from the API.
pub async fn courier_watch(path: Option<&Path>) -> Result<(), String> {
    let Loaded {
        config, schemas, ..
    } = start(path)?;
    let stores = store::open(&config)
        .await
        .map_err(|error| error.to_string())?;
    let context = Context::new(
        Settings::new(config, schemas),
        stores,
        Arc::new(SystemClock),
    );
    configuration::bootstrap(&context)
        .await
        .map_err(|error| error.to_string())?;
    tracing::info!("courier is watching the outbox");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(configuration::follow(context.clone(), wait_for(stopped)));
    Worker::configured(context).run(shutdown_signal()).await;
    let _ = stop.send(true);
    let _ = follower.await;
    Ok(())
}

async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

pub async fn migrate(path: Option<&Path>) -> Result<(), String> {
    let Loaded { config, .. } = start(path)?;
    store::migrate(&config)
        .await
        .map_err(|error| error.to_string())?;
    tracing::info!(
        dsn = store::describe_dsn(config.dsn.as_deref()),
        "migrations applied"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::drop_notice;

    #[test]
    fn the_drop_notice_is_one_line_in_the_logs_format() {
        let json = drop_notice(true)(3);
        assert!(
            json.ends_with('\n') && json.matches('\n').count() == 1,
            "{json:?}"
        );
        let line: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields"]["dropped"], 3);
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));

        let text = drop_notice(false)(3);
        assert!(
            text.ends_with(" dropped=3\n") && text.contains(" WARN "),
            "{text:?}"
        );
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    }
}
