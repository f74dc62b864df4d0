//! How core messages become datagrams. The LAN transport seals them with an authenticated,
//! versioned frame (`wire`); the simulator may use the plain JSON codec below.

use ridondato_core::Message;

pub trait MessageCodec: Send + Sync {
    fn seal(&self, msg: &Message) -> Vec<u8>;
    /// Decodes (and, for authenticated codecs, verifies) a datagram; the error says why not.
    /// `None`: a frame of the codec's own (a session hello), nothing for the node.
    fn open(&self, datagram: &[u8]) -> Result<Option<Message>, String>;
}

/// Unauthenticated JSON, for the simulator only: node-to-node traffic in production goes
/// through an authenticated codec.
#[derive(Debug, Default)]
pub struct JsonCodec;

impl MessageCodec for JsonCodec {
    fn seal(&self, msg: &Message) -> Vec<u8> {
        serde_json::to_vec(msg).unwrap_or_default()
    }

    fn open(&self, datagram: &[u8]) -> Result<Option<Message>, String> {
        serde_json::from_slice(datagram).map(Some).map_err(|e| format!("undecodable message: {e}"))
    }
}
