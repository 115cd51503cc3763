//! The oomlens.v1 contract: generated protobuf types and gRPC services, the
//! JSON form of events, and the stable event id.
//!
//! The `.proto` files under `oomlens/v1/` are the source of truth and
//! document every field; this crate only adds what protobuf cannot say.

pub mod codec;
pub mod history;
pub mod json;
pub mod preencoded;
pub mod schema;
pub mod time;

/// Generated types of package `oomlens.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/oomlens.v1.rs"));

    /// The encoded `FileDescriptorSet` of the contract, for reflection and
    /// for tools that want the schema at run time.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/oomlens_descriptor.bin"));
}

/// The stable id of a kill: the same node, boot and kernel record always
/// give the same id, so a resent event is recognisably the same one.
///
/// FNV-1a (128 bit) over `node \0 boot_id \0 seq`, then each 64-bit half
/// mixed with the other through MurmurHash3's `fmix64` (`lo = fmix64(lo ^
/// hi)`, then `hi = fmix64(hi ^ lo)`), printed as 32 lowercase hex digits
/// (`hi` first). The finaliser spreads every input bit over the whole id:
/// plain FNV-1a leaves kills of one boot sharing their leading digits,
/// and people tell ids apart by their first characters. The algorithm is
/// part of the contract: never change it.
pub fn event_id(node: &str, boot_id: &str, seq: u64) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    let seq = seq.to_string();
    let parts: [&[u8]; 5] = [node.as_bytes(), b"\0", boot_id.as_bytes(), b"\0", seq.as_bytes()];
    for byte in parts.into_iter().flatten() {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    let (hi, lo) = halves(hash);
    let lo = fmix64(lo ^ hi);
    let hi = fmix64(hi ^ lo);
    format!("{hi:016x}{lo:016x}")
}

/// The high and low 64 bits.
// `as` keeps the low 64 bits: that is the point, and the two halves
// together lose nothing.
#[allow(clippy::cast_possible_truncation)]
fn halves(hash: u128) -> (u64, u64) {
    ((hash >> 64) as u64, hash as u64)
}

/// MurmurHash3's 64-bit finaliser.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_stable_and_distinguishes_its_inputs() {
        let id = event_id("node-a", "7b0e1c4e-1b7f-4d1e-9d0a-4e5f7c1a2b3c", 447);
        assert_eq!(id.len(), 32);
        // Pinned (computed independently in Python): ids are stored and compared
        // across versions.
        assert_eq!(
            id,
            event_id("node-a", "7b0e1c4e-1b7f-4d1e-9d0a-4e5f7c1a2b3c", 447)
        );
        assert_eq!(id, "073dc6baddd4ad77a9a1737f22e7449e");
        // Kills of one boot differ from their first digit.
        assert_eq!(
            event_id("node-a", "boot-1", 1),
            "987a82b38bea532f4bc53aad3d531404"
        );
        assert_eq!(
            event_id("node-a", "boot-1", 2),
            "0db05edc3cfdbcddbf3fe1943e1569e5"
        );
        assert_ne!(
            id,
            event_id("node-b", "7b0e1c4e-1b7f-4d1e-9d0a-4e5f7c1a2b3c", 447)
        );
        assert_ne!(
            id,
            event_id("node-a", "7b0e1c4e-1b7f-4d1e-9d0a-4e5f7c1a2b3d", 447)
        );
        assert_ne!(
            id,
            event_id("node-a", "7b0e1c4e-1b7f-4d1e-9d0a-4e5f7c1a2b3c", 448)
        );
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(event_id("ab", "c", 1), event_id("a", "bc", 1));
    }
}
