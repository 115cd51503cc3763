//! The spool's file format: `OOMLSPL1`, the body's length and CRC-32
//! (little endian u32s), then the protobuf `OomEvent`. A torn or damaged
//! file fails its length or checksum test.

use oomlens_proto::v1::OomEvent;
use prost::Message as _;

const MAGIC: &[u8; 8] = b"OOMLSPL1";
const HEADER: usize = 16;

/// CRC-32 (IEEE), bitwise: spool files are small and written rarely.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An event as spool file bytes.
pub fn encode_file(event: &OomEvent) -> Vec<u8> {
    let body = event.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    // A body past 4 GiB (far above any spool budget) cannot be described:
    // u32::MAX then fails the length check on read.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Spool file bytes back into an event; the error says what is wrong.
pub fn decode_file(bytes: &[u8]) -> Result<OomEvent, String> {
    if bytes.len() < HEADER {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a spool file (bad magic)".to_owned());
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let len = word(8) as usize;
    let body = &bytes[HEADER..];
    if body.len() != len {
        return Err(format!(
            "body is {} bytes, header says {len} (truncated write?)",
            body.len()
        ));
    }
    if crc32(body) != word(12) {
        return Err("checksum mismatch".to_owned());
    }
    OomEvent::decode(body).map_err(|e| format!("not an event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
