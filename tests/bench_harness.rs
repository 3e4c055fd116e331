//! The load harness end to end, kept short so it runs in every CI build: `twofold-bench --spawn`
//! starts a real `twofold serve` (built with the `bench` feature) on the embedded default, runs
//! each scenario for about a second at two virtual users, stops the server and writes its JSON
//! and SVG. Any error, any missing figure or a server left running fails the test. The same runs
//! on Postgres + Redis over their Unix sockets, as `scripts/bench.sh postgres` does.
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HARNESS: &str = env!("CARGO_BIN_EXE_twofold-bench");
const SERVER: &str = env!("CARGO_BIN_EXE_twofold");

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// What a finished run left: its JSON report, its output, and the folder holding its files (removed
/// when the run is dropped).
struct Run {
    report: serde_json::Value,
    stdout: String,
    stderr: String,
    out: std::path::PathBuf,
    _directory: tempfile::TempDir,
}

/// Runs the harness with `--spawn` in a fresh folder for about a second per level at two users on
/// four seats, with `modes` and any `extra` arguments; a failed or stuck run fails the test.
fn run_short(modes: &str, extra: &[&str]) -> Run {
    run_short_with(modes, extra, &[])
}

/// [`run_short`] with `environment` added to the harness's.
fn run_short_with(modes: &str, extra: &[&str], environment: &[(&str, &str)]) -> Run {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("smoke.json");
    let mut child = Command::new(HARNESS)
        .args(["--spawn", "--server-bin", SERVER, "--mode", modes])
        .args([
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
            "--seats",
            "4",
        ])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .current_dir(directory.path())
        .env_remove("TWOFOLD_BENCH_ADMIN_KEY")
        .env_remove("BENCH_GIT_COMMIT")
        .envs(environment.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twofold-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("twofold-bench did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "harness failed:\n{stdout}\n{stderr}"
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("valid JSON");
    Run {
        report,
        stdout,
        stderr,
        out,
        _directory: directory,
    }
}

/// A set built once before its runs (`scripts/bench-set.sh`) names that build's commit, not the
/// tree's at each run; without it, a run outside a repository names none.
#[test]
fn the_report_names_the_commit_it_is_given() {
    let given = run_short_with("whoami", &[], &[("BENCH_GIT_COMMIT", "0123456789ab-dirty")]);
    assert_eq!(given.report["git_commit"], "0123456789ab-dirty");
    let outside = run_short("whoami", &[]);
    assert_eq!(outside.report["git_commit"], serde_json::Value::Null);
}

#[test]
fn the_harness_drives_every_scenario_against_a_spawned_server_without_errors() {
    let Run {
        report,
        stdout,
        stderr,
        out,
        _directory,
    } = run_short("stepup,whoami,code", &[]);
    assert_eq!(
        report["backend"],
        "embedded (sqlite file, in-process code store)"
    );
    let levels = report["levels"].as_array().unwrap();
    let modes: Vec<&str> = levels.iter().map(|l| l["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["stepup", "whoami", "code"]);
    for level in levels {
        let mode = level["mode"].as_str().unwrap();
        assert_eq!(level["concurrency"], 2);
        assert!(
            level["completed"].as_u64().unwrap() > 0,
            "{mode}: nothing completed"
        );
        assert_eq!(level["error_count"], 0, "{mode}: {}", level["errors"]);
        // Calls finished in the window, so no pause spans all of it, and one always exists.
        let pause = level["longest_pause_ms"].as_f64().unwrap();
        let window_ms = level["measured_s"].as_f64().unwrap() * 1000.0;
        assert!(pause > 0.0 && pause < window_ms, "{mode}: pause {pause} ms");
        let usage = &level["usage"];
        assert!(
            usage["server_cpu_cores"].as_f64().unwrap() > 0.0,
            "{mode}: {usage}"
        );
        assert!(
            usage["server_rss_mib"].as_f64().unwrap() > 1.0,
            "{mode}: {usage}"
        );
        assert!(
            usage["machine_loop_ms"].as_f64().unwrap() > 0.0,
            "{mode}: {usage}"
        );
        for stall in ["disk_flush_ms", "wake_up_late_ms"] {
            let p50 = usage[stall]["p50_ms"].as_f64().unwrap();
            let p99 = usage[stall]["p99_ms"].as_f64().unwrap();
            let max = usage[stall]["max_ms"].as_f64().unwrap();
            assert!(
                0.0 <= p50 && p50 <= p99 && p99 <= max,
                "{mode} {stall}: {usage}"
            );
        }
        let rpcs = level["rpcs"].as_object().unwrap();
        // The window second by second: every call, derived timing and error that finished in
        // it is in one of its seconds, and a second's figures are within the level's.
        let seconds = level["seconds"].as_array().unwrap();
        let began = level["window_started_at"].as_str().unwrap();
        let began = chrono::DateTime::parse_from_rfc3339(began).expect("an RFC 3339 time");
        let report_began = report["started_at"].as_str().unwrap();
        let report_began = chrono::DateTime::parse_from_rfc3339(report_began).unwrap();
        assert!(
            began > report_began,
            "{mode}: {began} after the run's start"
        );
        assert_eq!(
            seconds.len() as f64,
            level["measured_s"].as_f64().unwrap(),
            "{mode}"
        );
        let finished: u64 = seconds
            .iter()
            .map(|s| s["finished"].as_u64().unwrap())
            .sum();
        let timed: u64 = rpcs.values().map(|f| f["count"].as_u64().unwrap()).sum();
        let errors = level["error_count"].as_u64().unwrap();
        assert_eq!(finished, timed + errors, "{mode}: {seconds:?}");
        let slowest_call = rpcs
            .iter()
            .filter(|(name, _)| name.starts_with(char::is_uppercase))
            .map(|(_, figures)| figures["max_ms"].as_f64().unwrap())
            .fold(0.0, f64::max);
        for second in seconds {
            let worst = second["worst_p99_ms"].as_f64().unwrap();
            assert!(
                worst > 0.0 && worst <= slowest_call + 0.001,
                "{mode}: {second}"
            );
            for (field, stall) in [
                ("disk_flush_max_ms", "disk_flush_ms"),
                ("wake_up_late_max_ms", "wake_up_late_ms"),
            ] {
                let slowest = second[field].as_f64().unwrap();
                // The level's spread is in whole microseconds.
                let level_max = usage[stall]["max_ms"].as_f64().unwrap() + 0.001;
                assert!(slowest >= 0.0 && slowest <= level_max, "{mode}: {second}");
            }
        }
        let expected: &[&str] = match mode {
            "stepup" => &[
                "CreateLoginFlow",
                "SubmitLoginCode",
                "WhoAmI",
                "code delivery",
            ],
            "whoami" => &["WhoAmI"],
            _ => &["SendCode", "VerifyCode", "code delivery"],
        };
        for rpc in expected {
            let figures = &rpcs[*rpc];
            let p50 = figures["p50_ms"].as_f64().unwrap();
            let p99 = figures["p99_ms"].as_f64().unwrap();
            let max = figures["max_ms"].as_f64().unwrap();
            assert!(figures["count"].as_u64().unwrap() > 0, "{mode} {rpc}");
            assert!(
                p50 > 0.0 && p50 <= p99 && p99 <= max,
                "{mode} {rpc}: {figures}"
            );
            // A bench build's server tells its own time in each answer; each call's is within
            // the call's own latency. The harness's derived timings have none.
            let server = &figures["server"];
            if rpc.starts_with(char::is_uppercase) {
                let server_p50 = server["p50_ms"].as_f64().unwrap();
                let server_p99 = server["p99_ms"].as_f64().unwrap();
                let server_max = server["max_ms"].as_f64().unwrap();
                assert!(
                    server_p50 > 0.0 && server_p50 <= server_p99 && server_p99 <= server_max,
                    "{mode} {rpc}: {figures}"
                );
                assert!(server_max <= max, "{mode} {rpc}: {figures}");
            } else {
                assert!(server.is_null(), "{mode} {rpc}: {figures}");
            }
        }
        // The embedded default has no Postgres or Redis to measure a bound against.
        assert!(level["bound"].is_null());
    }
    // Step-ups rotated every seat's token, so WhoAmI on AAL2 sessions answered without errors
    // above; the table and the plot were written too.
    assert!(stdout.contains("ops/s"), "{stdout}");
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("stepup") && svg.contains("polyline"));

    let pid: u32 = stderr
        .lines()
        .find_map(|line| line.split("server pid ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("the harness names the server it started");
    assert!(!running(pid), "the spawned server was stopped");
}

#[test]
fn a_share_of_the_peak_paces_each_level_after_running_it_unpaced() {
    let Run { report, stdout, .. } = run_short("stepup", &["--rate", "50%"]);
    assert_eq!(report["rate"], "50%");
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(
        levels.len(),
        2,
        "the peak, then the paced level: {levels:?}"
    );
    let (peak, paced) = (&levels[0], &levels[1]);
    assert!(peak["offered_per_second"].is_null() && peak["share_of_peak"].is_null());
    assert_eq!(paced["concurrency"], 2);
    assert_eq!(paced["share_of_peak"], 0.5);
    let peak_rate = peak["per_second"].as_f64().unwrap();
    let offered = paced["offered_per_second"].as_f64().unwrap();
    assert!(peak_rate > 0.0);
    assert_eq!(offered, peak_rate * 0.5);
    // A paced user keeps to its schedule: a late start is not made up with a burst, and one that
    // falls a whole interval behind starts a new schedule. An iteration that straddles the
    // window's start, or a user back on schedule after a late one, can add one or two to a
    // second's count, hence the slack; an unpaced level would complete about twice the offer.
    let completed = paced["completed"].as_u64().unwrap();
    assert!(completed > 0, "{paced}");
    assert!(
        completed as f64 <= offered * 1.25 + 6.0,
        "{completed} completed against {offered}/s offered"
    );
    assert_eq!(paced["error_count"], 0, "{}", paced["errors"]);
    assert!(stdout.contains("(50%)"), "{stdout}");
}

/// A Redis of the test's own, on a Unix socket only: the bound's `redis-benchmark` leaves up to
/// 100,000 one-KiB hashes without expiry, which must not pile up in the suite's shared Redis, and
/// its INFO counters should hold this run's work alone (as `scripts/bench.sh` has it).
struct PrivateRedis {
    server: std::process::Child,
    url: String,
    _folder: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Self {
        let folder = tempfile::tempdir().unwrap();
        let socket = folder.path().join("redis.sock");
        let server = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(folder.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "redis-server made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            server,
            url: format!("unix://{}", socket.display()),
            _folder: folder,
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn the_harness_runs_on_postgres_and_redis_over_their_unix_sockets() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(support::TestDatabase::create_reached_by_socket());
    let dsn = database.dsn();
    // The DSN's form reaches Postgres over its socket: a TCP connection would have an address.
    let over_socket: bool = runtime.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(dsn).await.unwrap();
        sqlx::query_scalar("SELECT inet_client_addr() IS NULL")
            .fetch_one(&mut connection)
            .await
            .unwrap()
    });
    assert!(over_socket, "{dsn} connected over TCP");
    // Without a TCP port, a Redis that answers at all answered over its socket.
    let redis = PrivateRedis::start();

    let Run { report, .. } = run_short(
        "stepup",
        &[
            "--dsn",
            dsn,
            "--redis",
            &redis.url,
            "--bound-duration",
            "1s",
        ],
    );
    assert_eq!(report["backend"], "postgres+redis (unix sockets)");
    let level = &report["levels"][0];
    assert!(level["completed"].as_u64().unwrap() > 0, "{level}");
    assert_eq!(level["error_count"], 0, "{}", level["errors"]);
    // pgbench and redis-benchmark reached the same stores by the same sockets.
    let bound = &level["bound"];
    assert!(bound["pgbench_tps"].as_f64().unwrap() > 0.0, "{bound}");
    assert!(bound["redis_script_rps"].as_f64().unwrap() > 0.0, "{bound}");
    assert!(bound["redis_plain_rps"].as_f64().unwrap() > 0.0, "{bound}");
}
