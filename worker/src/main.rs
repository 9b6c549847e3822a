//! The worker binary: `worker [CONFIG.toml]` runs jobs; `worker migrate`
//! applies the database migrations (with the owner's `AE_DATABASE__URL`);
//! `worker dead list [--all] | show <id> | replay <id>` lists, inspects and
//! replays dead jobs (with `AE_DATABASE__URL` and `AE_REDIS__URL`);
//! `worker admin …` sets up companies (with an `AE_DATABASE__URL` whose
//! login holds `automate_e_admin`); `worker --check-config [CONFIG.toml]`
//! lists every problem of the settings and fails.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shared::config::{DatabaseConfig, LogConfig, RedisConfig};
use tokio_util::sync::CancellationToken;

/// mimalloc: glibc's malloc and free were about a fifth of the worker's CPU
/// under load (BENCHMARKS.md, allocator session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    shared::telemetry::install_crypto_provider();
    if let Err(e) = try_main().await {
        tracing::error!(error = format!("{e:#}"), "Worker failed");
        eprintln!("worker: {e:#}");
        std::process::exit(1);
    }
}

/// Settings of `worker migrate` and `worker admin`: the database only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct MigrateConfig {
    database: DatabaseConfig,
    log: LogConfig,
}

/// Settings of `worker dead …`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct OpsConfig {
    database: DatabaseConfig,
    redis: RedisConfig,
}

/// A subcommand's arguments, as text.
fn utf8(args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<Vec<String>> {
    args.map(std::ffi::OsString::into_string)
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("arguments must be UTF-8"))
}

async fn try_main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(cmd) if cmd == "migrate" => {
            let file = args.next().map(PathBuf::from);
            let cfg: MigrateConfig =
                shared::config::load(&MigrateConfig::default(), file.as_deref())?;
            let telemetry = shared::telemetry::init(&cfg.log, "worker")?;
            cfg.database.validate()?;
            let store = shared::access::store::Store::connect(&cfg.database)
                .await
                .context("Cannot connect to Postgres")?;
            shared::MIGRATOR
                .run(store.pool())
                .await
                .context("Cannot apply migrations")?;
            tracing::info!("Migrations applied");
            telemetry.shutdown();
            Ok(())
        }
        Some(cmd) if cmd == "admin" => {
            let args = utf8(args)?;
            let cfg: MigrateConfig = shared::config::load(&MigrateConfig::default(), None)?;
            cfg.database.validate()?;
            let store = shared::access::store::Store::connect(&cfg.database)
                .await
                .context("Cannot connect to Postgres")?;
            println!("{}", worker::admin::command(&store, &args).await?);
            Ok(())
        }
        Some(cmd) if cmd == "dead" => {
            let args = utf8(args)?;
            let cfg: OpsConfig = shared::config::load(&OpsConfig::default(), None)?;
            cfg.database.validate()?;
            cfg.redis.validate()?;
            let store = shared::access::store::Store::connect(&cfg.database)
                .await
                .context("Cannot connect to Postgres")?;
            let queue = shared::access::queue::JobQueue::connect(&cfg.redis)
                .await
                .context("Cannot connect to Redis")?;
            println!(
                "{}",
                worker::dead_jobs::command(&store, &queue, &args).await?
            );
            Ok(())
        }
        Some(cmd) if cmd == "--check-config" => {
            let file = args.next().map(PathBuf::from);
            let cfg: worker::WorkerConfig =
                shared::config::load(&worker::WorkerConfig::default(), file.as_deref())?;
            let problems = cfg.problems();
            for problem in &problems {
                eprintln!("worker: {problem}");
            }
            if !problems.is_empty() {
                anyhow::bail!("{} problem(s) in the configuration", problems.len());
            }
            println!("configuration ok");
            Ok(())
        }
        file => {
            let file = file.map(PathBuf::from);
            let cfg: worker::WorkerConfig =
                shared::config::load(&worker::WorkerConfig::default(), file.as_deref())?;
            let telemetry = shared::telemetry::init(&cfg.log, "worker")?;
            let app = worker::App::build(cfg, None).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shared::telemetry::cancel_on_signal(shutdown.clone()));
            let stopped = app.run_until_stopped(shutdown).await;
            telemetry.shutdown();
            stopped
        }
    }
}
