//! The rules a message must keep, with no I/O: what a sender may send, what
//! a receiver accepts inside a sealed envelope, and how far ahead of ours a
//! clock may run. Sending, delivery and history sync apply the same rules.

use crate::{
    config::{MAX_CLOCK_AHEAD, MAX_ID_BYTES},
    hlc::Hlc,
};

/// A message that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Nothing to send.
    #[error("text must not be empty")]
    EmptyText,
    /// The text is over the limit.
    #[error("text is {len} bytes; the limit is {limit} bytes{flag}")]
    TextTooLong {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
        /// The flag that sets it, when the owner can change it.
        flag: &'static str,
    },
    /// A client-chosen id that is too long or has control characters.
    #[error("id must be at most {MAX_ID_BYTES} bytes without control characters")]
    BadOwnId,
    /// A delivered message's id is empty or too long.
    #[error("message id must be 1 to {MAX_ID_BYTES} bytes")]
    BadId,
    /// The sealed bytes are not a message.
    #[error("sealed content is not a message")]
    NotAMessage,
    /// The signed message is malformed.
    #[error("{0}")]
    BadSigned(String),
    /// A peer delivered someone else's message.
    #[error("a peer may deliver only its own messages")]
    NotItsOwn,
    /// The message's clock is too far ahead of ours.
    #[error(
        "message clock is {ahead_s} s ahead of this peer's (limit {} s); check the sender's clock",
        MAX_CLOCK_AHEAD.as_secs()
    )]
    ClockAhead {
        /// How far ahead, in seconds.
        ahead_s: u64,
    },
}

/// A text this peer may send: not empty, at most `max` bytes.
pub fn text_to_send(text: &str, max: usize) -> Result<(), CheckError> {
    if text.is_empty() {
        return Err(CheckError::EmptyText);
    }
    if text.len() > max {
        return Err(CheckError::TextTooLong {
            len: text.len(),
            limit: max,
            flag: " (--max-message-bytes)",
        });
    }
    Ok(())
}

/// An id a client chose for its own message (empty: this peer picks one).
pub fn own_id(id: &str) -> Result<(), CheckError> {
    if id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(CheckError::BadOwnId);
    }
    Ok(())
}

/// Refuses a clock stamp too far ahead of `now_ms`: accepting it would drag
/// this peer's clock (and its next message ids) into the future.
pub fn clock(hlc: u64, now_ms: u64) -> Result<(), CheckError> {
    let ahead_ms = Hlc::millis(hlc).saturating_sub(now_ms);
    if ahead_ms > MAX_CLOCK_AHEAD.as_millis() as u64 {
        return Err(CheckError::ClockAhead {
            ahead_s: ahead_ms / 1000,
        });
    }
    Ok(())
}

/// Wall-clock milliseconds now, as the clock checks and stamps use them.
pub fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_to_send_are_not_empty_and_within_the_limit() {
        assert_eq!(text_to_send("", 5), Err(CheckError::EmptyText));
        assert!(text_to_send("hello", 5).is_ok());
        let e = text_to_send("hello!", 5).unwrap_err();
        assert!(e.to_string().contains("--max-message-bytes"), "{e}");
        assert!(own_id("").is_ok() && own_id("client-1").is_ok());
        assert_eq!(own_id("a\nb"), Err(CheckError::BadOwnId));
        assert_eq!(
            own_id(&"x".repeat(MAX_ID_BYTES + 1)),
            Err(CheckError::BadOwnId)
        );
    }

    #[test]
    fn clocks_may_run_ahead_by_at_most_the_limit() {
        let now = 1_000_000_000u64;
        let stamp = |ms: u64| ms << 16;
        assert!(clock(stamp(now), now).is_ok());
        assert!(clock(stamp(now + MAX_CLOCK_AHEAD.as_millis() as u64), now).is_ok());
        let e = clock(stamp(now + MAX_CLOCK_AHEAD.as_millis() as u64 + 1000), now).unwrap_err();
        assert_eq!(e, CheckError::ClockAhead { ahead_s: 61 });
        assert!(clock(stamp(now - 10_000), now).is_ok(), "the past is fine");
    }
}
