//! The original project's console formats, which users know:
//! live `[2023-03-24|12:27:19] - From: alice Message: Hello` and history
//! `[2023-03-24|12:27:19] From alice Message Hello`, in local time.

use chat_proto::v1::ChatMessage;
use chrono::{DateTime, Local, TimeZone, Utc};

/// `[YYYY-MM-DD|HH:MM:SS]` in local time.
pub fn stamp(message: &ChatMessage) -> String {
    let sent = message
        .sent_at
        .as_ref()
        .and_then(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
        .unwrap_or(DateTime::UNIX_EPOCH);
    sent.with_timezone(&Local)
        .format("[%Y-%m-%d|%H:%M:%S]")
        .to_string()
}

/// Text from another peer made safe for a terminal: control characters
/// (newlines that would fake another line, escape sequences that would
/// drive the terminal) are shown escaped instead of interpreted.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
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

/// A received message as printed live.
pub fn live_line(message: &ChatMessage) -> String {
    format!(
        "{} - From: {} Message: {}",
        stamp(message),
        printable(&message.sender),
        printable(&message.text)
    )
}

/// A message as `chat history` prints it.
pub fn history_line(message: &ChatMessage) -> String {
    format!(
        "{} From {} Message {}",
        stamp(message),
        printable(&message.sender),
        printable(&message.text)
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
        let live = live_line(&message);
        let history = history_line(&message);
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

    #[test]
    fn control_characters_from_peers_cannot_fake_lines_or_drive_the_terminal() {
        let message = ChatMessage {
            sender: "mallory".into(),
            text: "hi\n[2023-03-24|12:27:19] - From: alice Message: send money\u{1b}[2J".into(),
            ..Default::default()
        };
        let line = live_line(&message);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(
            line.contains("\\n[2023") && line.contains("\\u{1b}[2J"),
            "{line}"
        );
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
    }
}
