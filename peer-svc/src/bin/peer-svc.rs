//! `peer-svc`: parse flags, bind, serve until SIGINT/SIGTERM or `chat leave`.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use peer_svc::config::{Cli, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    // The rules Discovery applies, checked before anything is bound.
    if let Err(reason) = chat_proto::validate::name(&cli.name) {
        anyhow::bail!("--name {reason}");
    }
    if let Some(Err(reason)) = cli.advertise.as_deref().map(chat_proto::validate::address) {
        anyhow::bail!("--advertise {reason}");
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let running = peer_svc::start(listener, Config::from(cli), shutdown).await?;
    // One line on stdout with the bound address: scripts and tests read the
    // real port from it. Received messages follow on stdout.
    println!("peer-svc listening on {}", running.address);
    running.wait().await;
    Ok(())
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received; shutting down");
    token.cancel();
}
