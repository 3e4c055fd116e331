//! `twofold-bench`: drives a Twofold server on loopback with N concurrent virtual users and
//! reports throughput, latency percentiles, errors by reason, the server's CPU and memory, and
//! the bound Postgres and Redis on the same machine allow. See docs/performance.md.
mod bound;
mod cli;
mod connection;
mod inbox;
mod one_write;
mod plot;
mod probe;
mod report;
mod scenario;
mod spawn;
mod stalls;
mod stats;
mod timeline;

use clap::Parser;
use cli::{Args, Mode, Rate};
use inbox::Inbox;
use rand::RngExt;
use report::{Level, Machine, Report};
use scenario::{Clients, Seat, Target, Window};
use stats::Tally;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The harness shares the machine with what it measures, so its own CPU counts against the
/// figures: it allocates per call as much as the server does, and mimalloc is cheaper at that
/// than glibc's allocator, as it is for the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The target for each RPC's p99 at 70 % of the peak; the progress line counts the
/// seconds over it.
const P99_TARGET_MS: f64 = 20.0;

#[tokio::main]
async fn main() -> ExitCode {
    turn_tracing_off();
    let args = Args::parse();
    let scratch = std::env::temp_dir().join(format!("twofold-bench-{}", std::process::id()));
    let outcome = run(args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("twofold-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The harness reports through its own output, not tracing. With no subscriber ever set, tracing
/// offers every span of h2 and hyper (several per call) to the `log` crate instead: 2.6 % of the
/// harness's CPU in `WhoAmI` runs, for output nobody reads. A subscriber whose level is off turns
/// those spans off where they are made, before they are built.
fn turn_tracing_off() {
    use tracing_subscriber::layer::SubscriberExt;
    let off = tracing_subscriber::registry().with(tracing::level_filters::LevelFilter::OFF);
    let _ = tracing::subscriber::set_global_default(off);
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("bench");
    path.with_file_name(format!("{stem}{suffix}"))
}

/// The stores the server ran on, and how it reached them: a Unix socket spares both ends the TCP
/// stack (and Postgres's TLS), so figures taken over TCP and over sockets are not comparable.
fn backend(dsn: Option<&str>, redis: Option<&str>) -> String {
    let postgres = dsn.filter(|dsn| dsn.starts_with("postgres"));
    let stores = match (postgres, redis) {
        (Some(_), Some(_)) => "postgres+redis",
        (Some(_), None) => "postgres",
        (None, Some(_)) => "sqlite+redis",
        (None, None) => return "embedded (sqlite file, in-process code store)".into(),
    };
    let over = |socket: bool| if socket { "socket" } else { "tcp" };
    let postgres_over = postgres.map(|dsn| over(postgres_over_socket(dsn)));
    let redis_over = redis.map(|url| over(redis_over_socket(url)));
    match (postgres_over, redis_over) {
        (Some(postgres), Some(redis)) if postgres != redis => {
            format!("{stores} (postgres over {postgres}, redis over {redis})")
        }
        (Some("socket"), Some(_)) => format!("{stores} (unix sockets)"),
        (Some("socket"), None) | (None, Some("socket")) => format!("{stores} (unix socket)"),
        _ => format!("{stores} (tcp)"),
    }
}

/// libpq and sqlx both take a `host` that is a folder as the Unix socket's.
fn postgres_over_socket(dsn: &str) -> bool {
    url::Url::parse(dsn).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, value)| key == "host" && value.starts_with('/'))
            || url
                .host_str()
                .is_some_and(|host| host.to_ascii_lowercase().starts_with("%2f"))
    })
}

fn redis_over_socket(url: &str) -> bool {
    matches!(
        bound::RedisEndpoint::from_url(url),
        Ok(bound::RedisEndpoint::Socket(_))
    )
}

async fn run(args: Args, scratch: &Path) -> Result<(), String> {
    args.check()?;
    std::fs::create_dir_all(scratch).map_err(|error| format!("{}: {error}", scratch.display()))?;
    if let Some(folder) = args
        .out
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)
            .map_err(|error| format!("{}: {error}", folder.display()))?;
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    let codes = args
        .codes
        .clone()
        .unwrap_or_else(|| scratch.join("codes.sock"));
    // Step-up and code users run on a thread of their own: the harness shares two cores with the
    // server and the stores it measures, and users on one thread wake one another without waking
    // a second thread. At 1,000 step-ups/s that cost a fifth less CPU than a worker per core
    // (0.22–0.23 cores against 0.28–0.29, docs/performance.md, "After the thirteenth pass").
    // `WhoAmI` users stay on the worker per core: the server answers from its cache, the harness
    // does as much as it, and on one thread it capped the calls per second.
    let users_thread = twofold::runtime_thread::RuntimeThread::start("bench-users")?;
    // Codes go to users that wait on that thread; received there, they wake no other.
    let inbox = {
        let _on_users_thread = users_thread.handle().enter();
        Inbox::bind(&codes).map_err(|error| format!("{}: {error}", codes.display()))?
    };

    let dsn = args.dsn.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            scratch.join("twofold.sqlite").display()
        )
    });
    let spawned = if args.spawn {
        let binary = args
            .server_bin
            .clone()
            .unwrap_or_else(spawn::default_binary);
        let spawned = spawn::spawn(
            &binary,
            scratch,
            &dsn,
            args.redis.as_deref(),
            &codes,
            &with_suffix(&args.out, ".server.log"),
        )?;
        eprintln!(
            "twofold-bench: server pid {} on {} (admin {})",
            spawned.pid, spawned.public, spawned.admin
        );
        Some(spawned)
    } else {
        None
    };
    let target = match &spawned {
        Some(spawned) => Target {
            public: spawned.public.clone(),
            admin: spawned.admin.clone(),
            admin_key: spawned.admin_key.clone(),
        },
        None => Target {
            public: args.public.clone().unwrap_or_default(),
            admin: args.admin.clone().unwrap_or_default(),
            admin_key: args.admin_key.clone().unwrap_or_default(),
        },
    };
    let pid = spawned
        .as_ref()
        .map(|spawned| spawned.pid)
        .or(args.server_pid);
    let server_dsn = if args.spawn {
        Some(dsn.as_str())
    } else {
        args.dsn.as_deref()
    };
    let probes = bound::Probes::connect(
        server_dsn.filter(|_| args.bound),
        args.redis.as_deref().filter(|_| args.bound),
    )
    .await?;
    probes.prepare().await?;

    let run_tag: String = {
        let mut rng = rand::rng();
        (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz"[rng.random_range(0..26)]))
            .collect()
    };
    let setup_started = Instant::now();
    let mut seats = scenario::register_seats(&target, args.seat_count(), &run_tag).await?;
    let setup_s = setup_started.elapsed().as_secs_f64();
    // Registration hashes passwords (argon2, 19 MiB each): memory it leaves behind shows here,
    // apart from what the load itself costs.
    let idle = probe::snapshot(pid);
    let rss_after_setup_mib = probe::usage(pid, &idle, &idle).server_rss_mib;
    eprintln!(
        "twofold-bench: {} seats registered in {setup_s:.1}s; server RSS {} MiB",
        seats.len(),
        rss_after_setup_mib.map_or("-".into(), |mib| format!("{mib:.1}"))
    );

    let mut modes = args.mode.clone();
    modes.dedup();
    let mut levels = Vec::new();
    for mode in modes {
        if mode == Mode::Whoami {
            seats = scenario::lift_to_aal2(&target, seats, &inbox, args.max_concurrency()).await?;
        }
        for &concurrency in &args.concurrency {
            // With a share of the peak, the level runs twice: unpaced, then at that share of
            // the rate it just reached.
            let mut offered = match args.rate {
                Rate::PerSecond(rate) => Some(rate),
                Rate::Unpaced | Rate::OfPeak { .. } => None,
            };
            let mut share_of_peak = None;
            loop {
                let (mut level, back) = run_level(
                    &args,
                    &target,
                    &inbox,
                    users_thread.handle(),
                    &probes,
                    pid,
                    mode,
                    concurrency,
                    offered,
                    seats,
                    scratch,
                )
                .await?;
                seats = back;
                level.share_of_peak = share_of_peak;
                let peak = level.per_second;
                levels.push(level);
                match (args.rate, share_of_peak) {
                    (Rate::OfPeak { percent }, None) if peak > 0.0 => {
                        let share = percent / 100.0;
                        share_of_peak = Some(share);
                        offered = Some(peak * share);
                    }
                    (Rate::OfPeak { .. }, None) => {
                        eprintln!(
                            "twofold-bench: {} x{concurrency} completed nothing unpaced: no paced level",
                            mode.as_str()
                        );
                        break;
                    }
                    _ => break,
                }
            }
        }
    }
    probes.cleanup().await;

    let name = args
        .out
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("bench")
        .to_owned();
    let backend = backend(server_dsn, args.redis.as_deref());
    let report = Report {
        name: name.clone(),
        started_at,
        git_commit: report::git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        backend: backend.clone(),
        machine: Machine::describe(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rate: args.rate_text(),
        seats: seats.len(),
        setup_s,
        server_rss_after_setup_mib: rss_after_setup_mib,
        levels,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?;
    std::fs::write(&args.out, json + "\n")
        .map_err(|error| format!("{}: {error}", args.out.display()))?;
    let svg_path = args.out.with_extension("svg");
    std::fs::write(
        &svg_path,
        plot::svg(&format!("{name}: {backend}"), &report.levels),
    )
    .map_err(|error| format!("{}: {error}", svg_path.display()))?;
    println!("{}", report::table(&report.levels));
    println!(
        "results: {}  plot: {}",
        args.out.display(),
        svg_path.display()
    );
    drop(spawned);
    let _ = std::fs::remove_file(inbox.path());
    Ok(())
}

/// A spread's p99 for the progress line, `-` when it was not measured.
fn p99_text(spread: Option<stats::Spread>) -> String {
    spread.map_or_else(
        || "-".to_owned(),
        |spread| format!("{:.1} ms", spread.p99_ms),
    )
}

#[allow(clippy::too_many_arguments)]
async fn run_level(
    args: &Args,
    target: &Target,
    inbox: &Inbox,
    users_thread: &tokio::runtime::Handle,
    probes: &bound::Probes,
    pid: Option<u32>,
    mode: Mode,
    concurrency: usize,
    offered: Option<f64>,
    seats: Vec<Seat>,
    scratch: &Path,
) -> Result<(Level, Vec<Seat>), String> {
    let mut groups: Vec<Vec<Seat>> = vec![Vec::new(); concurrency];
    for (index, seat) in seats.into_iter().enumerate() {
        groups[index % concurrency].push(seat);
    }
    // Before any user starts, so the loop measures the machine and not this level's load (the
    // previous level's last requests may still be finishing).
    let machine_loop_ms = probe::machine_loop_ms();
    // Each user's connection is driven by the runtime its user runs on.
    let runtime = match mode {
        Mode::Whoami => tokio::runtime::Handle::current(),
        Mode::Stepup | Mode::Code => users_thread.clone(),
    };
    let mut users = Vec::with_capacity(concurrency);
    for group in groups {
        let target = target.clone();
        let clients = runtime
            .spawn(async move { Clients::connect(&target, mode).await })
            .await
            .map_err(|error| error.to_string())??;
        users.push((clients, group));
    }
    // Each user offers its share of the level's rate.
    let pace = offered.map(|rate| std::time::Duration::from_secs_f64(concurrency as f64 / rate));
    let begin = Instant::now();
    let window_start = begin + args.warmup;
    let window_end = window_start + args.duration;
    let tasks: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(index, (clients, group))| {
            let window = Window {
                start: window_start,
                end: window_end,
            };
            // Paced users start spread evenly over one interval: started together they would
            // fire in lockstep, offering bursts of `concurrency` calls instead of a steady rate.
            let pacing = pace.map(|interval| scenario::Pacing {
                interval,
                first: begin + interval.mul_f64(index as f64 / concurrency as f64),
            });
            runtime.spawn(scenario::run_user(
                mode,
                clients,
                group,
                inbox.clone(),
                window,
                pacing,
            ))
        })
        .collect();

    tokio::time::sleep_until(window_start.into()).await;
    // The wall clock's time of the window's first second, to find its seconds in other logs.
    let window_started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let usage_start = probe::snapshot(pid);
    let (pg_start, redis_start) = probes.snapshot().await;
    // The scratch folder holds the embedded store's file, on the disk of Postgres's data too on
    // a machine with one disk.
    let stalls = stalls::Stalls::start(scratch);
    tokio::time::sleep_until(window_end.into()).await;
    let usage_end = probe::snapshot(pid);
    // Joining the samplers waits out a flush or a sleep under way: not on a worker of the
    // runtime that `WhoAmI` users run on.
    let stalled = tokio::task::spawn_blocking(move || stalls.finish())
        .await
        .map_err(|error| error.to_string())?;
    let (pg_end, redis_end) = probes.snapshot().await;

    let mut tally = Tally::default();
    let mut seats = Vec::new();
    for task in tasks {
        let (user_tally, group) = task.await.map_err(|error| error.to_string())?;
        tally.merge(&user_tally);
        seats.extend(group);
    }
    let seconds = args.duration.as_secs_f64();
    let mut usage = probe::usage(pid, &usage_start, &usage_end);
    usage.machine_loop_ms = Some(machine_loop_ms);
    usage.disk_flush_ms = stalled.disk_flush();
    usage.wake_up_late_ms = stalled.wake_up_late();
    let mut level = Level::new(mode, concurrency, seconds, &tally, usage);
    level.offered_per_second = offered;
    level.longest_pause_ms = tally.longest_pause(window_start, window_end).as_secs_f64() * 1000.0;
    level.window_started_at = Some(window_started_at);
    level.seconds = timeline::seconds(
        window_start,
        window_end,
        &tally.finished,
        &stalled.disk_flushes,
        &stalled.wake_ups,
    );
    eprintln!(
        "twofold-bench: {:<6} x{:<3} {:>9}  {:>9.1}/s  errors {}  worst p99 {:.2} ms  \
         seconds over {P99_TARGET_MS} ms {}/{}  longest pause {:.0} ms  machine loop {:.1} ms  \
         disk flush p99 {}  late wake-up p99 {}",
        mode.as_str(),
        concurrency,
        offered.map_or_else(|| "unpaced".to_owned(), |rate| format!("@{rate:.0}/s")),
        level.per_second,
        level.error_count,
        level.worst_rpc_p99_ms(),
        timeline::over(&level.seconds, P99_TARGET_MS),
        level.seconds.len(),
        level.longest_pause_ms,
        machine_loop_ms,
        p99_text(level.usage.disk_flush_ms),
        p99_text(level.usage.wake_up_late_ms),
    );
    if tally.completed > 0 {
        level.postgres_per_iteration = pg_start
            .zip(pg_end)
            .map(|(start, end)| bound::pg_work(&start, &end, tally.completed));
        level.redis_per_iteration = redis_start
            .zip(redis_end)
            .map(|(start, end)| bound::redis_work(&start, &end, tally.completed));
        if probes.available() {
            level.bound = Some(
                probes
                    .measure(
                        level.postgres_per_iteration.as_ref(),
                        level.redis_per_iteration.as_ref(),
                        concurrency,
                        args.bound_duration,
                        scratch,
                        level.per_second,
                    )
                    .await,
            );
        }
    }
    Ok((level, seats))
}

#[cfg(test)]
mod tests {
    use super::backend;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn tracing_is_off_at_every_level() {
        super::turn_tracing_off();
        // A dispatcher set is what keeps spans from going to the `log` crate.
        assert!(tracing::dispatcher::has_been_set());
        assert_eq!(LevelFilter::current(), LevelFilter::OFF);
        assert!(!tracing::enabled!(tracing::Level::ERROR));
    }

    #[test]
    fn the_backend_names_its_stores_and_how_they_were_reached() {
        let tcp_pg = Some("postgres://u:p@127.0.0.1:5432/bench");
        let socket_pg = Some("postgres://postgres@localhost:5432/bench?host=/var/run/postgresql");
        let tcp_redis = Some("redis://127.0.0.1:6379/0");
        let socket_redis = Some("unix:///tmp/redis.sock");
        assert_eq!(backend(tcp_pg, tcp_redis), "postgres+redis (tcp)");
        assert_eq!(
            backend(socket_pg, socket_redis),
            "postgres+redis (unix sockets)"
        );
        assert_eq!(
            backend(socket_pg, tcp_redis),
            "postgres+redis (postgres over socket, redis over tcp)"
        );
        assert_eq!(backend(socket_pg, None), "postgres (unix socket)");
        assert_eq!(backend(None, socket_redis), "sqlite+redis (unix socket)");
        let encoded = Some("postgres://postgres@%2fvar%2frun%2fpostgresql/bench");
        assert_eq!(
            backend(encoded, socket_redis),
            "postgres+redis (unix sockets)"
        );
        assert_eq!(
            backend(None, None),
            "embedded (sqlite file, in-process code store)"
        );
    }
}
