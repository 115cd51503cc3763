//! A message already encoded, sent as its bytes: load generators and
//! benchmarks encode their traffic before the clock starts, so that what
//! they measure is the collector, not their own protobuf encoding.

/// Encoded protobuf bytes standing in for a message of any type (for
/// `tonic_prost::ProstCodec<Preencoded, _>`). Decoding one skips every
/// field: it is for sending only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preencoded(pub prost::bytes::Bytes);

impl Preencoded {
    pub fn of(message: &impl prost::Message) -> Self {
        Self(message.encode_to_vec().into())
    }
}

impl prost::Message for Preencoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{AgentHello, IngestRequest, ingest_request};
    use prost::Message as _;

    #[test]
    fn sends_exactly_the_bytes_of_the_message_it_stands_for() {
        let request = IngestRequest {
            item: Some(ingest_request::Item::Hello(AgentHello {
                node: "node-1".into(),
                ..AgentHello::default()
            })),
        };
        let sent = Preencoded::of(&request).encode_to_vec();
        assert_eq!(IngestRequest::decode(sent.as_slice()).expect("decodes"), request);
    }
}
