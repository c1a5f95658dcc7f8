//! The original project's console formats, which users know:
//! live `[2023-03-24|12:27:19] - From: alice Message: Hello` and history
//! `[2023-03-24|12:27:19] From alice Message Hello`, in local time.

use chat_proto::v1::ChatMessage;
use chrono::{DateTime, Datelike, Local, TimeZone, Timelike, Utc};

use crate::names::Lookalikes;

/// `[YYYY-MM-DD|HH:MM:SS]` in local time.
pub fn stamp(message: &ChatMessage) -> String {
    let sent = message
        .sent_at
        .as_ref()
        .and_then(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
        .unwrap_or(DateTime::UNIX_EPOCH);
    let local = sent.with_timezone(&Local);
    // The fields by hand: a format string would be parsed for every line.
    format!(
        "[{:04}-{:02}-{:02}|{:02}:{:02}:{:02}]",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    )
}

/// Text from another peer made safe for a terminal: control characters
/// (newlines that would fake another line, escape sequences that would
/// drive the terminal) and bidirectional controls (U+202E and its kin,
/// which reorder what follows them on screen) are shown escaped instead of
/// interpreted.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    // Control characters are C0 and DEL (single bytes) and C1 (U+0080 to
    // U+009F, encoded 0xC2 0x80..0x9F); bidi controls start with 0xD8
    // (U+061C) or 0xE2 (U+200E, U+200F, U+202A..U+202E, U+2066..U+2069):
    // a byte scan rules them out fast, and only a candidate byte leads to
    // the character scan.
    let candidate = text
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xd8 || b == 0xe2);
    if candidate && text.chars().any(unsafe_on_screen) {
        text.chars()
            .map(|c| {
                if unsafe_on_screen(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// A control character, or a bidirectional formatting character.
fn unsafe_on_screen(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// What continues a message on its next line: indented and marked, so a
/// line of a message can never pass for the start of another message.
pub const CONTINUATION: &str = "    | ";

/// A message's text made safe (see [`printable`]), its line breaks shown as
/// lines, each after [`CONTINUATION`].
pub fn printable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\n') {
        return printable(text);
    }
    text.split('\n')
        .map(|line| printable(line.strip_suffix('\r').unwrap_or(line)))
        .collect::<Vec<_>>()
        .join(&format!("\n{CONTINUATION}"))
        .into()
}

/// Who sent `message`, made safe (see [`printable`]); if the name looks
/// like another known name (`names`), the other name and the sender's
/// safety number follow it, so the two cannot pass for each other.
pub fn sender(message: &ChatMessage, names: Option<&Lookalikes>) -> String {
    let name = printable(&message.sender);
    let Some(other) = names.and_then(|n| n.looks_like(&message.sender)) else {
        return name.into_owned();
    };
    let number = if message.author_key.is_empty() {
        message.sender_fingerprint.clone()
    } else {
        chat_proto::keys::fingerprint(&message.author_key)
    };
    // The first two groups: enough to tell two people apart at a glance.
    let short: String = number.split(' ').take(2).collect::<Vec<_>>().join(" ");
    format!(
        "{name} (looks like {}; safety number {short}…)",
        printable(other)
    )
}

/// A received message as printed live; `names` are the names known, to
/// mark one that looks like another.
pub fn live_line(message: &ChatMessage, names: Option<&Lookalikes>) -> String {
    format!(
        "{} - From: {} Message: {}",
        stamp(message),
        sender(message, names),
        printable_text(&message.text)
    )
}

/// A message as `chat history` prints it; `names` as for [`live_line`].
pub fn history_line(message: &ChatMessage, names: Option<&Lookalikes>) -> String {
    format!(
        "{} From {} Message {}",
        stamp(message),
        sender(message, names),
        printable_text(&message.text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_original() {
        let message = ChatMessage {
            sender: "alice".into(),
            text: "Hello user2".into(),
            sent_at: Some(prost_types::Timestamp {
                seconds: 1_679_660_839,
                nanos: 0,
            }),
            ..Default::default()
        };
        let live = live_line(&message, None);
        let history = history_line(&message, None);
        assert!(
            live.ends_with("] - From: alice Message: Hello user2"),
            "{live}"
        );
        assert!(
            history.ends_with("] From alice Message Hello user2"),
            "{history}"
        );
        // [YYYY-MM-DD|HH:MM:SS]
        assert_eq!(&live[0..1], "[");
        assert_eq!(&live[11..12], "|");
        assert_eq!(&live[20..21], "]");
    }

    /// Issue 26, item 7: a name that looks like another known name is
    /// shown with the other name and the sender's safety number.
    #[test]
    fn a_look_alike_sender_is_marked_with_its_safety_number() {
        let key = [7u8; 32];
        let lookalike = ChatMessage {
            sender: "us\u{0435}r1".into(),
            text: "hi, it's user1".into(),
            author_key: key.to_vec(),
            ..Default::default()
        };
        let names = Lookalikes::new(["user1", "us\u{0435}r1", "bob"]);
        let number = chat_proto::keys::fingerprint(&key);
        let short: Vec<&str> = number.split(' ').take(2).collect();
        let line = live_line(&lookalike, Some(&names));
        assert!(
            line.contains(&format!(
                "From: us\u{0435}r1 (looks like user1; safety number {}…) Message: hi",
                short.join(" ")
            )),
            "{line}"
        );
        // The real user1 is marked too (each looks like the other); a name
        // that looks like nobody is not.
        let real = ChatMessage {
            sender: "user1".into(),
            author_key: [8u8; 32].to_vec(),
            ..Default::default()
        };
        assert!(history_line(&real, Some(&names)).contains("user1 (looks like us\u{0435}r1"));
        let bob = ChatMessage {
            sender: "bob".into(),
            ..Default::default()
        };
        assert!(history_line(&bob, Some(&names)).contains("From bob Message"));
    }

    #[test]
    fn control_characters_from_peers_cannot_fake_lines_or_drive_the_terminal() {
        let message = ChatMessage {
            sender: "mallory".into(),
            text: "hi\n[2023-03-24|12:27:19] - From: alice Message: send money\u{1b}[2J".into(),
            ..Default::default()
        };
        let line = live_line(&message, None);
        // The line break shows as a line of the message, marked: no line
        // but the first starts like a message.
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(
            line.contains("\n    | [2023") && line.contains("\\u{1b}[2J"),
            "{line}"
        );
        assert!(
            line.lines().skip(1).all(|l| l.starts_with(CONTINUATION)),
            "{line}"
        );
        // Bidi controls cannot reorder what the console shows.
        assert_eq!(printable("abc\u{202E}fed"), "abc\\u{202e}fed");
        assert_eq!(printable("x\u{2066}y\u{200F}"), "x\\u{2066}y\\u{200f}");
        assert_eq!(printable("— “quoted” €"), "— “quoted” €");
        // Windows line ends and a carriage return alone.
        assert_eq!(printable_text("a\r\nb"), "a\n    | b");
        assert_eq!(printable_text("a\rb"), "a\\rb");
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        // C1 controls (two bytes in UTF-8), DEL and NUL are escaped too;
        // other characters starting with 0xC2 (e.g. "©") are not.
        assert_eq!(printable("a\u{9b}2Jb"), "a\\u{9b}2Jb");
        assert_eq!(printable("x\u{7f}\u{0}"), "x\\u{7f}\\u{0}");
        assert_eq!(printable("© 2026"), "© 2026");
    }
}

/// Lines waiting for the console writer: past this many, or past
/// [`CONSOLE_QUEUE_BYTES`], lines are dropped (and counted) rather than
/// stalling the peer or filling its memory.
const CONSOLE_QUEUE: usize = 4096;

/// After a write, the console writer gathers lines for this long before the
/// next one (imperceptible on a terminal).
const CONSOLE_COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Bytes the console writer gathers into one write, at most.
const CONSOLE_WRITE_BYTES: usize = 64 * 1024;

/// Bytes of lines waiting for the console writer, at most.
const CONSOLE_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// The daemon's stdout, written by a thread of its own: a console nobody
/// reads (a full pipe, a stopped terminal) must not stall delivery. When
/// the queue is full, lines are dropped — the messages stay in the history —
/// and a warning says how many.
#[derive(Debug)]
pub struct Console {
    lines: std::sync::mpsc::SyncSender<String>,
    dropped: std::sync::atomic::AtomicU64,
    /// Bytes queued and not yet written.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Console {
    /// Starts the writer thread.
    pub fn start() -> Self {
        let (lines, queue) = std::sync::mpsc::sync_channel::<String>(CONSOLE_QUEUE);
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = queued.clone();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                use std::io::Write;
                let stdout = std::io::stdout();
                let sub = |n: usize| written.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                while let Ok(line) = queue.recv() {
                    // Stdout flushes at every newline by itself; gathering
                    // what is waiting first makes one write of many lines.
                    let mut out =
                        std::io::BufWriter::with_capacity(CONSOLE_WRITE_BYTES, stdout.lock());
                    let mut put = |line: String| {
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.write_all(b"\n");
                        sub(line.len());
                    };
                    put(line);
                    while let Ok(line) = queue.try_recv() {
                        put(line);
                    }
                    let _ = out.flush();
                    drop(out);
                    // A line after a quiet spell is written at once; under
                    // a stream of messages the writer wakes at most every
                    // few milliseconds instead of once per message, leaving
                    // the cores to the deliveries.
                    std::thread::sleep(CONSOLE_COALESCE);
                }
            })
            .expect("spawn the console thread");
        Self {
            lines,
            dropped: std::sync::atomic::AtomicU64::new(0),
            queued,
        }
    }

    /// Queues a line for stdout, or drops it if the console is not keeping up.
    pub fn print(&self, line: String) {
        use std::sync::atomic::Ordering;
        let len = line.len();
        let room = self.queued.fetch_add(len, Ordering::Relaxed) + len <= CONSOLE_QUEUE_BYTES;
        let sent = room && self.lines.try_send(line).is_ok();
        if !sent {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "stdout is not being read; console lines dropped (messages are in the history)"
                );
            }
        }
    }
}
