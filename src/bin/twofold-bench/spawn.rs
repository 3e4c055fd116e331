//! Starts `twofold serve` with a bench configuration and stops it (SIGTERM, then kill) when
//! dropped, so a failed run never leaves a server behind.
use rand::RngExt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Spawned {
    child: Child,
    pub public: String,
    pub admin: String,
    pub admin_key: String,
    pub pid: u32,
}

/// The bench configuration. Limits the scenario would otherwise hit are raised here, never in
/// code: every virtual user repeats sends to its own identities many times an hour.
/// The log stays at `info`, as in production: its "twofold is serving" line tells the ports.
pub fn config_yaml(dsn: &str, redis: Option<&str>, codes: &Path, key: &str) -> String {
    let redis = redis
        .map(|url| format!("redis:\n  url: {url:?}\n"))
        .unwrap_or_default();
    format!(
        r#"dsn: {dsn:?}
{redis}serve:
  public: {{host: 127.0.0.1, port: 0, base_url: "http://localhost"}}
  admin: {{host: 127.0.0.1, port: 0, api_keys: [{key:?}]}}
secrets:
  default: ["twofold-bench-secret-0123456789"]
selfservice:
  methods:
    code:
      mfa_enabled: true
      config:
        # Every virtual user sends many codes an hour to its own identities.
        sends_per_address_per_hour: 1000000000
        sends_per_identity_per_hour: 1000000000
courier:
  sms_sender: bench
  email_sender: bench
  bench: {{socket: {codes:?}}}
log: {{level: info, format: json}}
"#,
        codes = codes.display().to_string(),
    )
}

fn random_key() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    line.get(name)
        .or_else(|| line.get("fields").and_then(|fields| fields.get(name)))
        .and_then(serde_json::Value::as_str)
}

pub fn spawn(
    binary: &Path,
    directory: &Path,
    dsn: &str,
    redis: Option<&str>,
    codes: &Path,
    log_file: &Path,
) -> Result<Spawned, String> {
    // The server runs in `directory`, where a relative path would no longer resolve.
    let binary = std::fs::canonicalize(binary)
        .map_err(|error| format!("server binary {}: {error}", binary.display()))?;
    let admin_key = random_key();
    let config = directory.join("bench-config.yaml");
    std::fs::write(&config, config_yaml(dsn, redis, codes, &admin_key))
        .map_err(|error| format!("writing {}: {error}", config.display()))?;
    let log = std::fs::File::create(log_file)
        .map_err(|error| format!("creating {}: {error}", log_file.display()))?;
    let mut child = Command::new(&binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(directory)
        // Only the file configures the server: no TWOFOLD_* or Kratos-style overrides.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("starting {}: {error}", binary.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    let mut copy = std::fs::OpenOptions::new()
        .append(true)
        .open(log_file)
        .map_err(|error| format!("opening {}: {error}", log_file.display()))?;
    // Reads the log until the listening line, then keeps draining it into the log file so the
    // server never blocks on a full pipe: in large chunks, as the harness shares the machine
    // with the server it measures (line by line it cost two writes per log line).
    std::thread::spawn(move || {
        use std::io::Write;
        let mut reader = BufReader::new(stdout);
        // Bytes, not text: a line that is not UTF-8 must not stop the draining.
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let _ = copy.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            if text.contains("twofold is serving") {
                let _ = sender.send(text.trim_end().to_owned());
                break;
            }
        }
        let _ = std::io::copy(&mut reader, &mut copy);
    });
    let mut spawned = Spawned {
        child,
        public: String::new(),
        admin: String::new(),
        admin_key,
        pid,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        if let Ok(Some(status)) = spawned.child.try_wait() {
            return Err(format!(
                "the server exited ({status}) before serving; see {}",
                log_file.display()
            ));
        }
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => break line,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                return Err(format!(
                    "the server did not start; see {}",
                    log_file.display()
                ));
            }
        }
    };
    let parsed: serde_json::Value =
        serde_json::from_str(&line).map_err(|error| format!("serving line: {error}: {line}"))?;
    let address = |name| {
        field(&parsed, name)
            .map(|address| format!("http://{address}"))
            .ok_or_else(|| format!("the serving line has no {name} address: {line}"))
    };
    spawned.public = address("public")?;
    spawned.admin = address("admin")?;
    Ok(spawned)
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `twofold` next to this binary (both come from the same `cargo build`).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.parent().map(|folder| folder.join("twofold")))
        .unwrap_or_else(|| PathBuf::from("twofold"))
}
