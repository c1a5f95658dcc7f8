//! The verbs that send: one message, stdin line by line, and the live
//! console (`attach`).

use super::*;

/// `chat send TEXT`: one message, and how it went for each peer.
pub(crate) async fn send(
    client: &mut ControlClient<Channel>,
    text: String,
    id: String,
) -> Result<ExitCode, Failure> {
    let r = client
        .send(SendRequest { text, id })
        .await
        .map_err(status_text)?
        .into_inner();
    out!("sent {}", r.id);
    if r.deliveries.is_empty() {
        out!("  (no other peers are connected; the message is in your history)");
    }
    for d in &r.deliveries {
        match d.status() {
            DeliveryStatus::Delivered => out!("  {:<16} delivered", d.peer),
            other => out!(
                "  {:<16} {}: {}",
                d.peer,
                format!("{other:?}").to_lowercase(),
                d.error
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the answers to a `SendStream` said, counted.
#[derive(Debug, Default)]
struct Tally {
    /// Messages sent (stored, and handed to every peer).
    sent: usize,
    /// Messages the peer refused.
    failed: usize,
    /// Answers read: the line the stream stopped after, if it stopped.
    answered: usize,
    /// Per peer: delivered, queued, failed or refused.
    per_peer: std::collections::BTreeMap<String, [usize; 4]>,
    /// The stream ended early when the peer refused a request it could not
    /// read (too large, say); the messages before it were sent.
    stopped: Option<tonic::Status>,
}

/// Each non-empty line of stdin as one `SendRequest` into `tx`; returns how
/// many were read.
async fn read_lines(tx: tokio::sync::mpsc::Sender<SendRequest>) -> usize {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut read = 0usize;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.is_empty() {
            continue;
        }
        read += 1;
        let request = SendRequest {
            text: line,
            id: String::new(),
        };
        if tx.send(request).await.is_err() {
            break;
        }
    }
    read
}

/// Reads the stream's answers to the end (or to the refusal that ends it).
async fn tally(answers: &mut tonic::Streaming<chat_proto::v1::SendStreamResponse>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let answer = match answers.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return tally,
            Err(s) => {
                tally.stopped = Some(s);
                return tally;
            }
        };
        tally.answered += 1;
        match answer.response {
            Some(r) if answer.code == 0 => {
                tally.sent += 1;
                for d in r.deliveries {
                    let slot = match d.status() {
                        DeliveryStatus::Delivered => 0,
                        DeliveryStatus::Queued => 1,
                        DeliveryStatus::Refused => 3,
                        _ => 2,
                    };
                    tally.per_peer.entry(d.peer).or_default()[slot] += 1;
                }
            }
            _ => {
                tally.failed += 1;
                note!("message {} not sent: {}", tally.answered, answer.error);
            }
        }
    }
}

/// `chat send --stdin`: every non-empty line of stdin is one message, sent
/// in order over `Control/SendStream`; prints a summary.
pub(crate) async fn send_lines(client: &mut Client) -> Result<ExitCode, Failure> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let reader = tokio::spawn(read_lines(tx));
    let mut answers = client
        .send_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_text)?
        .into_inner();
    let mut tally = tally(&mut answers).await;
    let (sent, next) = (tally.sent, tally.answered + 1);
    if let Some(s) = &tally.stopped {
        reader.abort();
        note!(
            "message {next} not sent, and none after it: {}",
            status_text(s.clone())
        );
        out!("sent {sent} messages, then stopped at message {next}");
    } else {
        let read = reader.await.unwrap_or(0);
        out!("sent {sent} of {read} messages");
        if sent != read {
            tally.failed += 1;
        }
    }
    for (peer, [delivered, queued, failed, refused]) in &tally.per_peer {
        out!(
            "  {peer:<16} delivered {delivered}, queued {queued}, failed {failed}, refused {refused}"
        );
    }
    Ok(if tally.failed == 0 && tally.stopped.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ends `chat attach` when its peer is gone: says so, and exits at once
/// with status 1. Returning would wait for the line stdin is reading on a
/// thread of its own, and that line would be swallowed unsent.
fn peer_gone(why: &str) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!(
        "chat: detached: {why}; nothing typed from now on is sent (start the peer and attach again)"
    );
    std::process::exit(1)
}

/// `chat attach`: live messages out, typed lines in.
pub(crate) async fn attach(mut client: ControlClient<Channel>) -> Result<ExitCode, Failure> {
    let mut incoming = client
        .subscribe(SubscribeRequest {})
        .await
        .map_err(status_text)?
        .into_inner();
    note!(
        "attached: incoming messages print here; type a line and press Enter to send (Ctrl-D to detach)"
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut names = crate::views::known_names(&mut client).await;
    let mut names_read = std::time::Instant::now();
    loop {
        tokio::select! {
            message = incoming.message() => match message {
                Ok(Some(m)) => if let Some(m) = m.message {
                    // A sender not known yet (a new member) may look like
                    // one known: read the names again, at most once a second.
                    if !names.knows(&m.sender) && names_read.elapsed().as_secs() >= 1 {
                        names = crate::views::known_names(&mut client).await;
                        names_read = std::time::Instant::now();
                    }
                    out!("{}", console::live_line(&m, Some(&names)))
                },
                Ok(None) => peer_gone("its peer stopped"),
                Err(s) => peer_gone(&status_text(s)),
            },
            line = lines.next_line() => match line {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => {
                    let r = match client.send(SendRequest { text, id: String::new() }).await {
                        Ok(r) => r.into_inner(),
                        Err(s) => peer_gone(&format!("the last line was not sent: {}", status_text(s))),
                    };
                    let failed: Vec<_> = r.deliveries.iter().filter(|d| d.status() != DeliveryStatus::Delivered).map(|d| d.peer.as_str()).collect();
                    if !failed.is_empty() {
                        note!("(not delivered to: {})", failed.join(", "));
                    }
                }
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(format!("stdin: {e}").into()),
            },
        }
    }
}
