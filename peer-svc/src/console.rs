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

/// A received message as printed live.
pub fn live_line(message: &ChatMessage) -> String {
    format!(
        "{} - From: {} Message: {}",
        stamp(message),
        message.sender,
        message.text
    )
}

/// A message as `chat history` prints it.
pub fn history_line(message: &ChatMessage) -> String {
    format!(
        "{} From {} Message {}",
        stamp(message),
        message.sender,
        message.text
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
}
