//! `discovery-svc`: parse flags, bind, serve until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use discovery_svc::config::Cli;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // An error is one line, whatever RUST_BACKTRACE says: these are start
    // errors a person reads ("cannot listen", "not a member"), not bugs.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("discovery-svc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    chat_proto::process::init_tracing();
    chat_proto::process::raise_open_files_limit();
    let cli = Cli::parse();
    let config = cli.config().context("cannot read the Discovery key file")?;
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    // One line on stdout with the bound address: scripts and tests read the
    // real port from it when they asked for port 0.
    chat_proto::process::announce(&format!(
        "discovery-svc listening on {}",
        listener.local_addr()?
    ));
    let shutdown = CancellationToken::new();
    tokio::spawn(chat_proto::process::cancel_on_signal(shutdown.clone()));
    discovery_svc::run(listener, config, shutdown).await?;
    Ok(())
}
