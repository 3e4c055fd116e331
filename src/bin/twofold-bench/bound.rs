//! The machine's bound: what Postgres and Redis on this machine allow for the work one scenario
//! iteration does. The work is counted by diffing the servers' own counters over the measured
//! window (Postgres `pg_stat_database`, Redis `INFO`), then replayed at the same concurrency:
//!
//! - Postgres: `pgbench` runs a generated script that does, per transaction of the script, one
//!   iteration's commits, inserted, updated and deleted rows; its tps is the Postgres bound in
//!   iterations/s. Commits beyond those needed for the writes are single-row SELECTs (reads run
//!   in autocommit and count as commits).
//! - Redis: `redis-benchmark` measures two kinds of round trip at the same concurrency: a Lua
//!   script call (an EVALSHA cost approximation: HMGET, HINCRBY, HSET, PEXPIRE, HGETALL on one
//!   hash, the shape of the code-verification script) and a plain HSET of a 1 KiB value (the
//!   shape of a flow write). An iteration costs `scripts/r_script + (reads − scripts)/r_plain`
//!   seconds of Redis, where `reads` is Redis's count of processed client reads (round trips).
//!
//! bound = min(Postgres bound, Redis bound); ratio = measured / bound.
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    commits: i64,
    rollbacks: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
    fetched: i64,
    scanned: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    reads: f64,
    commands: f64,
    cpu_seconds: f64,
    calls: BTreeMap<String, f64>,
}

/// Work per iteration, from the counter diffs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgWork {
    pub commits: f64,
    pub rollbacks: f64,
    pub inserted: f64,
    pub updated: f64,
    pub deleted: f64,
    pub fetched: f64,
    /// Rows read by sequential scans of the server's tables: a step-up's statements find their
    /// rows by key, so anything here is a plan that scans (as the courier's once did).
    pub scanned: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisWork {
    /// Client reads Redis processed (one per round trip without pipelining).
    pub round_trips: f64,
    /// Commands executed, including those run inside scripts and MULTI blocks.
    pub commands: f64,
    pub script_calls: f64,
    pub cpu_ms: f64,
    pub by_command: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Bound {
    pub pgbench_tps: Option<f64>,
    pub pgbench_script: Option<String>,
    pub redis_script_rps: Option<f64>,
    pub redis_plain_rps: Option<f64>,
    /// Iterations/s Redis allows by the redis-benchmark model.
    pub redis_bound: Option<f64>,
    /// Iterations/s if Redis's one thread were busy all the time with this exact mix (from its
    /// own CPU counters), for comparison.
    pub redis_cpu_bound: Option<f64>,
    pub bound_per_s: Option<f64>,
    pub ratio: Option<f64>,
    pub notes: Vec<String>,
}

pub struct Probes {
    pg: Option<(sqlx::PgPool, String)>,
    redis: Option<(redis::aio::MultiplexedConnection, RedisEndpoint)>,
}

/// Where `redis-benchmark` reaches the Redis the server uses: by the same transport, so the bound
/// pays what the server pays per round trip.
pub enum RedisEndpoint {
    Tcp { host: String, port: u16 },
    Socket(String),
}

impl RedisEndpoint {
    pub fn from_url(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|error| format!("--redis: {error}"))?;
        match parsed.scheme() {
            "unix" | "redis+unix" => Ok(Self::Socket(parsed.path().to_owned())),
            _ => Ok(Self::Tcp {
                host: parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
                port: parsed.port().unwrap_or(6379),
            }),
        }
    }

    fn benchmark_args(&self) -> Vec<String> {
        match self {
            Self::Tcp { host, port } => {
                vec!["-h".into(), host.clone(), "-p".into(), port.to_string()]
            }
            Self::Socket(path) => vec!["-s".into(), path.clone()],
        }
    }
}

impl Probes {
    pub async fn connect(dsn: Option<&str>, redis_url: Option<&str>) -> Result<Self, String> {
        let pg = match dsn.filter(|dsn| dsn.starts_with("postgres")) {
            Some(dsn) => {
                // One connection, so the forced statistics flush below covers all of its work.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(dsn)
                    .await
                    .map_err(|error| format!("bound: postgres: {error}"))?;
                Some((pool, dsn.to_owned()))
            }
            None => None,
        };
        let redis = match redis_url {
            Some(url) => {
                let endpoint = RedisEndpoint::from_url(url)?;
                let client = redis::Client::open(url).map_err(|error| error.to_string())?;
                let connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|error| format!("bound: redis: {error}"))?;
                Some((connection, endpoint))
            }
            None => None,
        };
        Ok(Self { pg, redis })
    }

    pub fn available(&self) -> bool {
        self.pg.is_some() || self.redis.is_some()
    }

    pub async fn snapshot(&self) -> (Option<PgCounters>, Option<RedisCounters>) {
        let pg = match &self.pg {
            Some((pool, _)) => pg_counters(pool).await.ok(),
            None => None,
        };
        let redis = match &self.redis {
            Some((connection, _)) => redis_counters(&mut connection.clone()).await.ok(),
            None => None,
        };
        (pg, redis)
    }

    /// Creates the scratch table pgbench writes to.
    pub async fn prepare(&self) -> Result<(), String> {
        if let Some((pool, _)) = &self.pg {
            for statement in [
                "DROP TABLE IF EXISTS twofold_bench_bound",
                "CREATE TABLE twofold_bench_bound (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0, payload text NOT NULL)",
                "INSERT INTO twofold_bench_bound (id, payload) SELECT g, repeat('x', 200) FROM generate_series(1, 10000) AS g",
            ] {
                sqlx::query(statement)
                    .execute(pool)
                    .await
                    .map_err(|error| format!("bound: preparing pgbench's table: {error}"))?;
            }
            // Postgres publishes a backend's counters at most once a second; without this the
            // 10,000 rows above would land in the first level's per-iteration figures.
            for statement in ["SELECT pg_stat_force_next_flush()", "SELECT 1"] {
                sqlx::query(statement)
                    .execute(pool)
                    .await
                    .map_err(|error| format!("bound: flushing statistics: {error}"))?;
            }
        }
        Ok(())
    }

    pub async fn cleanup(&self) {
        if let Some((pool, _)) = &self.pg {
            let _ = sqlx::query("DROP TABLE IF EXISTS twofold_bench_bound")
                .execute(pool)
                .await;
        }
    }

    /// Replays `work` with pgbench and redis-benchmark at `concurrency`.
    pub async fn measure(
        &self,
        pg: Option<&PgWork>,
        redis: Option<&RedisWork>,
        concurrency: usize,
        duration: Duration,
        scratch: &Path,
        measured: f64,
    ) -> Bound {
        let mut bound = Bound::default();
        if let (Some((pool, dsn)), Some(work)) = (&self.pg, pg) {
            let script = pgbench_script(work);
            let path = scratch.join("pgbench-script.sql");
            let free = free_connections(pool).await;
            let clients = pgbench_clients(concurrency, free);
            if clients < concurrency {
                bound.notes.push(format!(
                    "pgbench ran {clients} clients, not {concurrency}: Postgres takes no more"
                ));
            }
            match std::fs::write(&path, &script) {
                Ok(()) => match pgbench(dsn, &path, clients, duration).await {
                    Ok(tps) => bound.pgbench_tps = Some(tps),
                    Err(error) => bound.notes.push(error),
                },
                Err(error) => bound.notes.push(format!("pgbench script: {error}")),
            }
            bound.pgbench_script = Some(script);
        }
        // An iteration that barely touches Redis (WhoAmI) has no Redis bound worth printing.
        let redis = redis.filter(|work| work.round_trips >= 0.05);
        if let (Some((_, endpoint)), Some(work)) = (&self.redis, redis) {
            let script = redis_benchmark(endpoint, concurrency, SCRIPT_COMMAND).await;
            let plain = redis_benchmark(endpoint, concurrency, PLAIN_COMMAND).await;
            match (script, plain) {
                (Ok(script), Ok(plain)) => {
                    bound.redis_script_rps = Some(script);
                    bound.redis_plain_rps = Some(plain);
                    let scripts = work.script_calls;
                    let others = (work.round_trips - scripts).max(0.0);
                    let seconds = scripts / script + others / plain;
                    bound.redis_bound = (seconds > 0.0).then(|| 1.0 / seconds);
                }
                (Err(error), _) | (_, Err(error)) => bound.notes.push(error),
            }
            bound.redis_cpu_bound = (work.cpu_ms > 0.0).then(|| 1000.0 / work.cpu_ms);
        }
        bound.bound_per_s = [bound.pgbench_tps, bound.redis_bound]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        bound.ratio = bound
            .bound_per_s
            .filter(|bound| *bound > 0.0)
            .map(|bound| measured / bound);
        bound
    }
}

async fn pg_counters(pool: &sqlx::PgPool) -> Result<PgCounters, sqlx::Error> {
    let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched, \
         (SELECT COALESCE(sum(seq_tup_read), 0)::bigint FROM pg_stat_user_tables) \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok(PgCounters {
        commits: row.0,
        rollbacks: row.1,
        inserted: row.2,
        updated: row.3,
        deleted: row.4,
        fetched: row.5,
        scanned: row.6,
    })
}

async fn redis_counters(
    connection: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<RedisCounters> {
    let info: String = redis::cmd("INFO")
        .arg("all")
        .query_async(connection)
        .await?;
    Ok(parse_info(&info))
}

fn parse_info(info: &str) -> RedisCounters {
    let mut counters = RedisCounters::default();
    for line in info.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        match key {
            "total_reads_processed" => counters.reads = value.parse().unwrap_or(0.0),
            "total_commands_processed" => counters.commands = value.parse().unwrap_or(0.0),
            "used_cpu_sys" | "used_cpu_user" => {
                counters.cpu_seconds += value.parse::<f64>().unwrap_or(0.0)
            }
            _ => {
                if let Some(command) = key.strip_prefix("cmdstat_") {
                    let calls = value
                        .split(',')
                        .find_map(|field| field.strip_prefix("calls="))
                        .and_then(|calls| calls.parse().ok())
                        .unwrap_or(0.0);
                    counters.calls.insert(command.to_owned(), calls);
                }
            }
        }
    }
    counters
}

pub fn pg_work(start: &PgCounters, end: &PgCounters, iterations: u64) -> PgWork {
    let per = |a: i64, b: i64| (b - a) as f64 / iterations.max(1) as f64;
    PgWork {
        commits: per(start.commits, end.commits),
        rollbacks: per(start.rollbacks, end.rollbacks),
        inserted: per(start.inserted, end.inserted),
        updated: per(start.updated, end.updated),
        deleted: per(start.deleted, end.deleted),
        fetched: per(start.fetched, end.fetched),
        scanned: per(start.scanned, end.scanned),
    }
}

pub fn redis_work(start: &RedisCounters, end: &RedisCounters, iterations: u64) -> RedisWork {
    let n = iterations.max(1) as f64;
    let mut by_command = BTreeMap::new();
    for (command, calls) in &end.calls {
        let before = start.calls.get(command).copied().unwrap_or(0.0);
        let per = (calls - before) / n;
        // The probe's own INFO calls are not the server's work.
        if per > 0.0 && command != "info" {
            by_command.insert(command.clone(), per);
        }
    }
    // + 0.0: an empty float sum is -0.0, which would print as "-0".
    let script_calls = ["evalsha", "eval", "fcall"]
        .iter()
        .filter_map(|command| by_command.get(*command))
        .sum::<f64>()
        + 0.0;
    RedisWork {
        round_trips: (end.reads - start.reads) / n,
        commands: (end.commands - start.commands) / n,
        script_calls,
        cpu_ms: (end.cpu_seconds - start.cpu_seconds) * 1000.0 / n,
        by_command,
    }
}

/// One iteration's Postgres writes as a pgbench transaction script (see the module doc).
pub fn pgbench_script(work: &PgWork) -> String {
    let commits = work.commits.round().max(1.0) as usize;
    let inserts = work.inserted.round() as usize;
    let updates = work.updated.round() as usize;
    let deletes = work.deleted.round() as usize;
    let mut writes: Vec<String> = Vec::new();
    for index in 0..inserts {
        writes.push(format!(
            "INSERT INTO twofold_bench_bound (id, payload) VALUES (:base + {index}, repeat('y', 200));"
        ));
    }
    for _ in 0..updates {
        writes.push("UPDATE twofold_bench_bound SET n = n + 1 WHERE id = :row;".to_owned());
    }
    for index in 0..deletes {
        // Deletes take back this script's own inserts first, so the table keeps its size.
        writes.push(if index < inserts {
            format!("DELETE FROM twofold_bench_bound WHERE id = :base + {index};")
        } else {
            "DELETE FROM twofold_bench_bound WHERE id = -1;".to_owned()
        });
    }
    let total = writes.len();
    let writing = total.min(commits);
    let mut transactions: Vec<Vec<String>> = vec![Vec::new(); writing];
    for (index, write) in writes.into_iter().enumerate() {
        // Contiguous chunks keep each delete after the insert it takes back.
        transactions[index * writing / total].push(write);
    }
    let mut script =
        String::from("\\set base random(100000, 9000000000000)\n\\set row random(1, 10000)\n");
    for statements in transactions
        .iter()
        .filter(|statements| !statements.is_empty())
    {
        if statements.len() == 1 {
            script.push_str(&statements[0]);
            script.push('\n');
        } else {
            script.push_str("BEGIN;\n");
            for statement in statements {
                script.push_str(statement);
                script.push('\n');
            }
            script.push_str("COMMIT;\n");
        }
    }
    let used = transactions.iter().filter(|s| !s.is_empty()).count();
    for _ in used..commits {
        script.push_str("SELECT payload FROM twofold_bench_bound WHERE id = :row;\n");
    }
    script
}

/// Connections Postgres would still accept from pgbench, or `None` when it cannot tell.
async fn free_connections(pool: &sqlx::PgPool) -> Option<usize> {
    let free: i64 = sqlx::query_scalar(
        "SELECT current_setting('max_connections')::int \
              - current_setting('superuser_reserved_connections')::int \
              - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
    )
    .fetch_one(pool)
    .await
    .ok()?;
    usize::try_from(free).ok()
}

/// pgbench replays the work with one client per virtual user, as far as Postgres takes them: a
/// client it refuses fails the whole run, and past its pool the measured server queued too.
fn pgbench_clients(concurrency: usize, free_connections: Option<usize>) -> usize {
    match free_connections {
        Some(free) => concurrency.min(free).max(1),
        None => concurrency,
    }
}

async fn pgbench(
    dsn: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
) -> Result<f64, String> {
    let output = Command::new("pgbench")
        .arg("--no-vacuum")
        .arg("--client")
        .arg(clients.to_string())
        .arg("--jobs")
        .arg(clients.min(2).to_string())
        .arg("--time")
        .arg(duration.as_secs().max(1).to_string())
        .arg("--file")
        .arg(script)
        .arg(dsn)
        .output()
        .await
        .map_err(|error| format!("pgbench could not run: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_pgbench_tps(&stdout).ok_or_else(|| {
        format!(
            "pgbench failed: {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

fn parse_pgbench_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// The EVALSHA approximation: the calls of the code-verification script on one hash.
const SCRIPT_COMMAND: &[&str] = &[
    "EVAL",
    "local f = redis.call('HMGET', KEYS[1], 'consumed', 'expires_us', 'attempts', 'mac') \
     redis.call('HINCRBY', KEYS[1], 'attempts', 1) \
     redis.call('HSET', KEYS[1], 'consumed', '1', 'mac', ARGV[1]) \
     redis.call('PEXPIRE', KEYS[1], 900000) \
     return redis.call('HGETALL', KEYS[1])",
    "1",
    "twofold-bench:challenge:__rand_int__",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

const PLAIN_COMMAND: &[&str] = &["HSET", "twofold-bench:flow:__rand_int__", "doc", PAYLOAD_1K];

const PAYLOAD_1K: &str = concat!(
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
);

async fn redis_benchmark(
    endpoint: &RedisEndpoint,
    clients: usize,
    command: &[&str],
) -> Result<f64, String> {
    let output = Command::new("redis-benchmark")
        .args(endpoint.benchmark_args())
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            "50000",
            "-r",
            "100000",
            "--csv",
        ])
        .args(command)
        .output()
        .await
        .map_err(|error| format!("redis-benchmark could not run: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_redis_benchmark_csv(&stdout).ok_or_else(|| {
        format!(
            "redis-benchmark failed: {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// `"test","rps",…` then one row per test; the rps of the first row.
fn parse_redis_benchmark_csv(output: &str) -> Option<f64> {
    output
        .lines()
        .filter(|line| !line.starts_with("\"test\""))
        .find_map(|line| {
            let mut fields = line.split("\",\"");
            fields.next()?;
            fields.next()?.trim_matches('"').parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed_and_diffed_per_iteration() {
        let before = parse_info(
            "# Stats\r\ntotal_commands_processed:100\r\ntotal_reads_processed:50\r\n# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=1\r\n",
        );
        let after = parse_info(
            "total_commands_processed:400\r\ntotal_reads_processed:150\r\nused_cpu_sys:1.6\r\nused_cpu_user:2.6\r\ncmdstat_evalsha:calls=30,usec=150\r\ncmdstat_hmget:calls=40,usec=9\r\ncmdstat_info:calls=9,usec=3\r\n",
        );
        let work = redis_work(&before, &after, 10);
        assert_eq!(work.round_trips, 10.0);
        assert_eq!(work.commands, 30.0);
        assert_eq!(work.script_calls, 2.0);
        assert!((work.cpu_ms - 20.0).abs() < 1e-6);
        assert_eq!(work.by_command.get("hmget"), Some(&4.0));
        assert!(!work.by_command.contains_key("info"));
    }

    #[test]
    fn the_pgbench_script_has_the_measured_writes_and_commits() {
        let work = PgWork {
            commits: 6.2,
            inserted: 3.0,
            updated: 2.1,
            deleted: 1.0,
            ..PgWork::default()
        };
        let script = pgbench_script(&work);
        let count = |needle: &str| script.matches(needle).count();
        assert_eq!(count("INSERT INTO"), 3);
        assert_eq!(count("UPDATE "), 2);
        assert_eq!(count("DELETE FROM"), 1);
        // Six commits: the writing transactions plus single-row reads.
        let reads = count("SELECT payload");
        let writing_transactions = {
            let mut inside = false;
            let mut transactions = 0;
            for line in script.lines().filter(|line| !line.starts_with('\\')) {
                match line {
                    "BEGIN;" => inside = true,
                    "COMMIT;" => {
                        inside = false;
                        transactions += 1;
                    }
                    _ if !inside && !line.starts_with("SELECT") => transactions += 1,
                    _ => {}
                }
            }
            transactions
        };
        assert_eq!(writing_transactions + reads, 6, "{script}");
        // A delete never comes before the insert it takes back.
        assert!(script.find("INSERT INTO").unwrap() < script.find("DELETE FROM").unwrap());
    }

    #[test]
    fn tool_outputs_are_read() {
        let pgbench = "transaction type: script.sql\nnumber of clients: 4\nlatency average = 1.2 ms\ninitial connection time = 3.1 ms\ntps = 3301.512345 (without initial connection time)\n";
        assert_eq!(parse_pgbench_tps(pgbench), Some(3301.512345));
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\"EVAL local f = ...\",\"41152.26\",\"0.650\",\"0.160\"\n";
        assert_eq!(parse_redis_benchmark_csv(csv), Some(41152.26));
        assert_eq!(parse_pgbench_tps("connection refused"), None);
    }

    #[test]
    fn redis_benchmark_reaches_redis_as_the_server_does() {
        let tcp = RedisEndpoint::from_url("redis://127.0.0.1:40903/0").unwrap();
        assert_eq!(tcp.benchmark_args(), ["-h", "127.0.0.1", "-p", "40903"]);
        let default_port = RedisEndpoint::from_url("redis://cache/0").unwrap();
        assert_eq!(default_port.benchmark_args(), ["-h", "cache", "-p", "6379"]);
        let socket = RedisEndpoint::from_url("unix:///tmp/twofold/redis.sock").unwrap();
        assert_eq!(socket.benchmark_args(), ["-s", "/tmp/twofold/redis.sock"]);
        assert!(RedisEndpoint::from_url("not a url").is_err());
    }

    #[test]
    fn pgbench_runs_as_many_clients_as_postgres_takes() {
        assert_eq!(pgbench_clients(64, Some(80)), 64);
        assert_eq!(pgbench_clients(128, Some(80)), 80);
        assert_eq!(pgbench_clients(4, Some(0)), 1);
        assert_eq!(pgbench_clients(128, None), 128);
    }
}
