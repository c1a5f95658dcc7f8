//! `peer-svc`: parse flags, bind, serve until SIGINT/SIGTERM or `chat leave`.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use peer_svc::config::{Cli, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // An error is one line, whatever RUST_BACKTRACE says: these are start
    // errors a person reads ("cannot listen", "not a member"), not bugs.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-svc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    chat_proto::process::init_tracing();
    chat_proto::process::raise_open_files_limit();
    let mut cli = Cli::parse();
    // A member's data dir knows its name; a first start must give one.
    let name = match cli.name.take() {
        Some(name) => name,
        None => peer_svc::store::member_name_in(&cli.data_dir)
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "--name is required: {} holds no membership to read the name from (a first start names the peer)",
                    cli.data_dir.display()
                )
            })?,
    };
    // The rules Discovery applies, checked before anything is bound.
    if let Err(reason) = chat_proto::validate::name(&name) {
        anyhow::bail!("--name {reason}");
    }
    cli.name = Some(name);
    if let Some(Err(reason)) = cli.advertise.as_deref().map(chat_proto::validate::address) {
        anyhow::bail!("--advertise {reason}");
    }
    for url in cli
        .discovery
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        peer_svc::discovery_client::discovery_url(url).map_err(anyhow::Error::msg)?;
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(chat_proto::process::cancel_on_signal(shutdown.clone()));
    let running = peer_svc::start_announced(listener, Config::from(cli), shutdown, |address| {
        // One line on stdout with the address, before any received message:
        // scripts and tests read the real port from it.
        chat_proto::process::announce(&format!("peer-svc listening on {address}"));
    })
    .await?;
    // Received messages follow on stdout, the user's console.
    running.wait().await;
    Ok(())
}
