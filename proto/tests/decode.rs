//! Every request message of every service decodes arbitrary bytes without
//! panicking (either a value or a clean error): the `cargo test` twin of a
//! decoding fuzzer.

use chat_proto::v1::*;
use proptest::prelude::*;
use prost::Message;

macro_rules! decodes_safely {
    ($bytes:expr, $($t:ty),+ $(,)?) => {
        $( let _ = <$t>::decode($bytes); )+
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let b = bytes.as_slice();
        decodes_safely!(b,
            RegisterRequest, KeepAliveRequest, ListRequest, LeaveRequest, WatchRequest,
            PeerHandshakeRequest, DeliverRequest, PeerHistoryRequest, HandshakePayload,
            SealedMessage, HistoryCursor, Envelope,
            SendRequest, HistoryRequest, ConnectionsRequest, RefreshConnectionsRequest,
            HandshakeRequest, ControlLeaveRequest, TrustRequest, SubscribeRequest,
        );
    }

    #[test]
    fn envelopes_round_trip(session_id in proptest::collection::vec(any::<u8>(), 0..32), counter in any::<u64>(), ct in proptest::collection::vec(any::<u8>(), 0..100)) {
        let e = Envelope { session_id, counter, ciphertext: ct };
        prop_assert_eq!(Envelope::decode(e.encode_to_vec().as_slice()).unwrap(), e);
    }
}
