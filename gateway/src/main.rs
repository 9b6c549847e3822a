//! The gateway binary: config, telemetry, then [`gateway::App`].

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// mimalloc: with it the gateway used a fifth less CPU per webhook and took
/// 7% more webhooks/s (BENCHMARKS.md, allocator session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let file = std::env::args_os().nth(1).map(PathBuf::from);
    let cfg: gateway::GatewayConfig =
        shared::config::load(&gateway::GatewayConfig::default(), file.as_deref())?;
    let telemetry = shared::telemetry::init(&cfg.log, "gateway")?;
    let app = gateway::App::build(cfg, None).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::telemetry::cancel_on_signal(shutdown.clone()));
    let stopped = app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    stopped
}
