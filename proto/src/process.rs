//! What every service binary does around its library: logs on stderr with
//! a `RUST_LOG` filter, and one shutdown signal for SIGINT and SIGTERM.

use std::io::IsTerminal;

use tokio_util::sync::CancellationToken;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), in colour only
/// on a terminal (log files stay plain text).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed, a full disk)
        // is dropped: by default the subscriber reports it with
        // `eprintln!`, which panics on that same stderr, in whatever task
        // was logging: the signal task among them, so SIGTERM was ignored.
        .log_internal_errors(false)
        .init();
}

/// Parses a duration flag: a whole number followed by one of `units`
/// (suffix, length of one), a bare number meaning seconds; at least one
/// second. `hint` is the examples an error shows (e.g. "10s, 500ms or 2m").
pub fn parse_duration_in(
    text: &str,
    units: &[(&str, std::time::Duration)],
    hint: &str,
) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u32 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. {hint}"))?;
    let one = match unit {
        "" => std::time::Duration::from_secs(1),
        _ => units
            .iter()
            .find(|(suffix, _)| *suffix == unit)
            .map(|(_, one)| *one)
            .ok_or_else(|| {
                let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
                format!("unknown unit {unit:?}; use {}", names.join(", "))
            })?,
    };
    let d = one.saturating_mul(n);
    if d < std::time::Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// Raises the soft limit on open files to the hard limit, so a burst of
/// connections meets the limit the administrator set, not the shell's
/// default soft one (often 1,024). Logs what it did; a failure is logged
/// and the process goes on with the limit it has.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return; // unlimited already
    };
    let target = hard.unwrap_or(u64::MAX);
    if soft >= target {
        return;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    ) {
        Ok(()) => tracing::info!(from = soft, to = ?hard, "raised the open files limit"),
        Err(e) => tracing::warn!(soft, error = %e, "cannot raise the open files limit"),
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
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

/// Prints one line on stdout for scripts (the address a service listens
/// on); a closed stdout is no reason for a service to stop, so errors are
/// ignored where `println!` would panic.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Parses a limit flag: a whole number of at least 1. Zero would refuse
/// everything (or nothing would fit) and a negative number is no limit;
/// both get a message that says so, instead of clap's "unexpected argument
/// '-1'" (with `allow_negative_numbers` on the flag).
pub fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    match text.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a limit: give a whole number of at least 1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::at_least_one;

    #[test]
    fn limits_are_whole_numbers_of_at_least_one() {
        assert_eq!(at_least_one::<u32>("1"), Ok(1));
        assert_eq!(at_least_one::<usize>(" 65536 "), Ok(65536));
        for bad in ["0", "-1", "1.5", "", "many", "99999999999999999999999"] {
            let e = at_least_one::<u32>(bad).unwrap_err();
            assert!(e.contains("at least 1"), "{bad}: {e}");
        }
    }
}
