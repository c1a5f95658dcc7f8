//! Arbitrary bytes into the decoder of every request message of every
//! service: a value or an error, never a panic.
#![no_main]

use chat_proto::v1::*;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = RegisterRequest::decode(data);
    let _ = KeepAliveRequest::decode(data);
    let _ = LeaveRequest::decode(data);
    let _ = PeerHandshakeRequest::decode(data);
    let _ = DeliverRequest::decode(data);
    let _ = PeerHistoryRequest::decode(data);
    let _ = HandshakePayload::decode(data);
    let _ = SealedMessage::decode(data);
    let _ = HistoryCursor::decode(data);
    let _ = SendRequest::decode(data);
    let _ = HistoryRequest::decode(data);
    let _ = RefreshConnectionsRequest::decode(data);
    let _ = HandshakeRequest::decode(data);
    let _ = ControlLeaveRequest::decode(data);
    let _ = TrustRequest::decode(data);
});
