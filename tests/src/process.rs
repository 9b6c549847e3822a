//! Real service processes for fault tests: the `gateway` and `worker`
//! binaries (built by `cargo build --bins`, as `scripts/test` does), set up
//! through `AE_*` variables like a deployment, killed with SIGKILL or
//! stopped with SIGTERM.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running service process.
pub struct ServiceProcess {
    name: &'static str,
    child: Child,
    /// Base URL of its HTTP listener.
    pub url: String,
    /// Base URL of its operators' endpoints (`/metrics`, `/readyz`): the
    /// gateway's admin listener, the worker's only one.
    pub admin_url: String,
    /// Where its standard output (the log) goes.
    pub log_path: PathBuf,
}

/// Where cargo put the workspace's binaries: next to the test binary's
/// `deps/` directory, or next to the bench binary. Refuses a binary older
/// than the sources it is built from: a test must not pass on old code.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("the test binary is in a directory");
    // Test binaries live in target/<profile>/deps, the bench binary next to
    // the services in target/<profile>.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = dir.join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --bins` first (scripts/test does)",
                path.display()
            )
        });
    if let Some((source, changed)) = newest_source(name)
        && changed > built
    {
        panic!(
            "{} is older than {}: run `cargo build --bins` first (scripts/test does)",
            path.display(),
            source.display()
        );
    }
    path
}

/// The most recently changed file binary `name` is built from: its own
/// crate, `shared`, the migrations and the workspace's manifest and lock.
fn newest_source(name: &str) -> Option<(PathBuf, std::time::SystemTime)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut newest = None;
    // Not `.sqlx/`: it follows the queries in the sources, and
    // `scripts/sqlx-data prepare` writes it after building.
    for part in ["Cargo.toml", "Cargo.lock", "migrations", "shared", name] {
        visit(&root.join(part), &mut newest);
    }
    newest
}

fn visit(path: &std::path::Path, newest: &mut Option<(PathBuf, std::time::SystemTime)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            visit(&entry.path(), newest);
        }
    } else if let Ok(changed) = meta.modified()
        && newest.as_ref().is_none_or(|(_, t)| changed > *t)
    {
        *newest = Some((path.to_owned(), changed));
    }
}

/// Runs `name` to its end with `args` and exactly `env` (nothing
/// inherited): its exit status, standard output and standard error.
pub async fn run_to_end(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let output = Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status, text(output.stdout), text(output.stderr))
}

/// A free local port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl ServiceProcess {
    /// Starts `gateway` or `worker` with `env` (plus `AE_LISTEN_ADDR` and
    /// `AE_ADMIN_ADDR`) and
    /// waits until its `/healthz` answers.
    pub async fn start(name: &'static str, env: &[(String, String)]) -> Self {
        let port = free_port();
        let admin_port = if name == "gateway" { free_port() } else { port };
        let log_path =
            std::env::temp_dir().join(format!("ae-{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).expect("create the process log file");
        let mut command = Command::new(binary(name));
        command
            .env("AE_LOG__FILTER", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("AE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut process = Self {
            name,
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            log_path,
        };
        process.wait_healthy().await;
        process
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited during start-up: {status}", self.name);
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not become healthy in 15 s", self.name);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("read the process log")
    }

    /// Kills the process with SIGKILL (no chance to clean up).
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the process");
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`.
    pub async fn terminate(self, limit: Duration) -> ExitStatus {
        self.stop(limit)
            .await
            .unwrap_or_else(|problem| panic!("{problem}"))
    }

    /// Like [`Self::terminate`], telling what went wrong instead of
    /// panicking; a process that outlives `limit` is killed.
    pub async fn stop(mut self, limit: Duration) -> Result<ExitStatus, String> {
        let name = self.name;
        let pid = self
            .child
            .id()
            .ok_or_else(|| format!("{name} had exited already"))?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} ({name}) failed"));
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.map_err(|e| format!("cannot wait for {name}: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!("{name} did not exit within {limit:?} of SIGTERM"))
            }
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // The log is only for the test that ran the process.
        let _ = std::fs::remove_file(&self.log_path);
    }
}
