//! The gRPC codec of every oomlens service: prost, but each received
//! message is decoded from a plain byte slice.
//!
//! tonic hands a decoder the message in its receive buffer, and prost,
//! decoding through the buffer trait, then advances that `BytesMut` after
//! every varint it reads. A kill's 600 history samples are about 12,000
//! varints: at storm rates that bookkeeping was a large part of the
//! collector's CPU. From a slice, advancing is a pointer bump.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `tonic_prost::ProstCodec` with [`SliceDecoder`].
#[derive(Debug, Clone)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes each message from its bytes as one slice.
#[derive(Debug)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let decoded = if buf.chunk().len() == len {
            // tonic's receive buffer is one piece: the usual case.
            let decoded = U::decode(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            U::decode(buf.copy_to_bytes(len))
        };
        // As prost's own codec: a malformed message is INTERNAL.
        decoded
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
