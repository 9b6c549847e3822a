//! The gateway binary: config, telemetry, then [`gateway::App`].

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// mimalloc: with it the gateway used a fifth less CPU per webhook and took
/// 7% more webhooks/s (BENCHMARKS.md, allocator session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `gateway --check-config [config.toml]`: every problem of the settings,
/// or which chat platforms they turn on; fails when there is a problem.
fn check_config(cfg: &gateway::GatewayConfig) -> anyhow::Result<()> {
    let problems = cfg.problems();
    for problem in &problems {
        eprintln!("gateway: {problem}");
    }
    if !problems.is_empty() {
        anyhow::bail!("{} problem(s) in the configuration", problems.len());
    }
    println!("configuration ok: {}", cfg.channels());
    Ok(())
}

#[tokio::main]
async fn main() {
    shared::telemetry::install_crypto_provider();
    if let Err(e) = try_main().await {
        tracing::error!(error = format!("{e:#}"), "Gateway failed");
        eprintln!("gateway: {e:#}");
        std::process::exit(1);
    }
}

async fn try_main() -> anyhow::Result<()> {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let check_only = args.first().is_some_and(|a| a == "--check-config");
    if check_only {
        args.remove(0);
    }
    let file = args.first().map(PathBuf::from);
    let cfg: gateway::GatewayConfig =
        shared::config::load(&gateway::GatewayConfig::default(), file.as_deref())?;
    if check_only {
        return check_config(&cfg);
    }
    let telemetry = shared::telemetry::init(&cfg.log, "gateway")?;
    let app = gateway::App::build(cfg, None).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::telemetry::cancel_on_signal(shutdown.clone()));
    let stopped = app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    stopped
}
