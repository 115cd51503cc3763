//! A memory history's samples and buckets as deltas in varints: the
//! `packed` field of `MemoryHistory`.
//!
//! A kill's histories are most of its bytes (600 samples and up to 840
//! buckets). In protobuf each sample spends about 40 bytes on tags, a
//! nested timestamp and full varints of values that barely change between
//! two reads 100 ms apart, and decoding them is most of what a collector
//! does per kill. As deltas (the time as the change of its step) a sample
//! takes about 12 bytes and decodes from one slice without a tag.
//!
//! Layout of `packed`: the sample count, the samples, the bucket count,
//! the buckets. A sample is a bitmask of its fields present, then each
//! present field: the time as the change of its step in nanoseconds, each
//! integer as the change from its last present value (zigzag varints),
//! each float as the XOR of its bits with the last present one's. A bucket
//! is a bitmask of its optional fields, then its time, its three working
//! sets and its optional fields, likewise.
//!
//! Lossless: a history whose timestamps it cannot carry exactly (a time
//! beyond ±292 years of 1970, or nanoseconds out of range) is left
//! unpacked.

use prost_types::Timestamp;

use crate::v1::{MemoryBucket, MemoryHistory, MemorySample, OomEvent, SubscribeResponse, subscribe_response};

/// The header that says its sender reads packed histories, and its
/// value: on a collector's `Ingest` response (agents may send them) and
/// on a subscriber's `Subscribe` request (and its response, confirming).
pub const HEADER: &str = "oomlens-history";
pub const HEADER_PACKED: &str = "packed";

/// Says, in `metadata`, that its sender reads packed histories.
pub fn say_packed(metadata: &mut tonic::metadata::MetadataMap) {
    metadata.insert(HEADER, tonic::metadata::MetadataValue::from_static(HEADER_PACKED));
}

/// Whether `metadata` says its sender reads packed histories.
pub fn says_packed(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get(HEADER).is_some_and(|value| value == HEADER_PACKED)
}

/// Samples, and buckets, one packed history may hold at most: a hundred
/// times what an agent's minute at 10 Hz and its 15 minutes of buckets
/// need. A sample can take one byte packed and about 140 in memory, so
/// without a bound an 8 MiB message would unpack into a gigabyte.
pub const MAX_UNPACKED: usize = 65_536;

/// Why a packed history does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("packed history ends early, at byte {0}")]
    Truncated(usize),
    #[error("packed history has a malformed varint at byte {0}")]
    Varint(usize),
    #[error("packed history has {0} bytes after its end")]
    Trailing(usize),
    #[error("packed history claims {0} items, more than its bytes can hold or than {MAX_UNPACKED}")]
    Count(u64),
    #[error("history has both packed and plain samples or buckets")]
    Both,
}

/// Moves `history`'s samples and buckets into `packed`, unless it has
/// none, is packed already, has more than [`MAX_UNPACKED`] of either
/// (which [`unpack`] would refuse: such a history travels and is stored
/// plain), or has a timestamp the encoding cannot carry exactly.
pub fn pack(history: &mut MemoryHistory) {
    if !history.packed.is_empty()
        || (history.samples.is_empty() && history.buckets.is_empty())
        || history.samples.len() > MAX_UNPACKED
        || history.buckets.len() > MAX_UNPACKED
    {
        return;
    }
    let exact = history
        .samples
        .iter()
        .all(|s| s.time.as_ref().is_none_or(|t| nanos(t).is_some()))
        && history
            .buckets
            .iter()
            .all(|b| b.time.as_ref().is_none_or(|t| nanos(t).is_some()));
    if !exact {
        return;
    }
    history.packed = packed(&history.samples, &history.buckets);
    history.samples = Vec::new();
    history.buckets = Vec::new();
}

/// [`pack`]s both of an event's histories: the victim's and its limited
/// cgroup's.
pub fn pack_event(event: &mut OomEvent) {
    for history in [event.history.as_mut(), event.oom_memcg_history.as_mut()]
        .into_iter()
        .flatten()
    {
        pack(history);
    }
}

/// [`unpack`]s both of an event's histories; the first that fails is the
/// error.
pub fn unpack_event(event: &mut OomEvent) -> Result<(), HistoryError> {
    for history in [event.history.as_mut(), event.oom_memcg_history.as_mut()]
        .into_iter()
        .flatten()
    {
        unpack(history)?;
    }
    Ok(())
}

/// `samples` and `buckets` as `packed` bytes (each timestamp must pass
/// [`nanos`]; [`pack`] checks).
fn packed(samples: &[MemorySample], buckets: &[MemoryBucket]) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(16 + samples.len() * 14 + buckets.len() * 12));
    out.varint(samples.len() as u64);
    write_samples(&mut out, samples);
    out.varint(buckets.len() as u64);
    write_buckets(&mut out, buckets);
    out.0
}

/// [`unpack_event`], returning each history's packed bytes as received
/// (empty when sent plain): a store can keep them rather than pack the
/// same samples again.
pub fn unpack_event_keeping(event: &mut OomEvent) -> Result<[Vec<u8>; 2], HistoryError> {
    let unpack_one = |history: Option<&mut MemoryHistory>| {
        history.map_or(Ok(Vec::new()), |history| {
            let bytes = history.packed.clone();
            unpack(history).map(|()| bytes)
        })
    };
    Ok([
        unpack_one(event.history.as_mut())?,
        unpack_one(event.oom_memcg_history.as_mut())?,
    ])
}

/// The inverse of [`unpack_event_keeping`]: packs both of an event's
/// histories, each into the bytes it was `received` packed in when given
/// (they unpacked to its samples and buckets), otherwise anew ([`pack`]).
pub fn pack_event_keeping(event: &mut OomEvent, received: [Vec<u8>; 2]) {
    let [history, memcg] = received;
    for (history, bytes) in [
        (event.history.as_mut(), history),
        (event.oom_memcg_history.as_mut(), memcg),
    ] {
        let Some(history) = history else { continue };
        if bytes.is_empty() {
            pack(history);
        } else {
            history.packed = bytes;
            history.samples = Vec::new();
            history.buckets = Vec::new();
        }
    }
}

/// Whether either of an event's histories has plain samples or buckets
/// (which [`pack_event`] would pack).
pub fn has_plain_history(event: &OomEvent) -> bool {
    [event.history.as_ref(), event.oom_memcg_history.as_ref()]
        .into_iter()
        .flatten()
        .any(|h| !h.samples.is_empty() || !h.buckets.is_empty())
}

/// Whether either of an event's histories is packed.
pub fn has_packed_history(event: &OomEvent) -> bool {
    [event.history.as_ref(), event.oom_memcg_history.as_ref()]
        .into_iter()
        .flatten()
        .any(|h| !h.packed.is_empty())
}

/// Unpacks what a subscription response carries (an event's histories or
/// a warning's), for a subscriber that asked for them packed.
pub fn unpack_response(response: &mut SubscribeResponse) -> Result<(), HistoryError> {
    match response.item.as_mut() {
        Some(subscribe_response::Item::Event(event)) => unpack_event(event),
        Some(subscribe_response::Item::Warning(warning)) => warning.history.as_mut().map_or(Ok(()), unpack),
        Some(subscribe_response::Item::Lagged(_)) | None => Ok(()),
    }
}

/// Moves `packed` back into `samples` and `buckets`. A history with both
/// is refused (which to believe?), as are damaged bytes; either way the
/// history is left as it was.
pub fn unpack(history: &mut MemoryHistory) -> Result<(), HistoryError> {
    if history.packed.is_empty() {
        return Ok(());
    }
    if !history.samples.is_empty() || !history.buckets.is_empty() {
        return Err(HistoryError::Both);
    }
    let mut input = Reader {
        bytes: &history.packed,
        at: 0,
    };
    let samples = read_samples(&mut input)?;
    let buckets = read_buckets(&mut input)?;
    if input.at != input.bytes.len() {
        return Err(HistoryError::Trailing(input.bytes.len() - input.at));
    }
    history.samples = samples;
    history.buckets = buckets;
    history.packed = Vec::new();
    Ok(())
}

/// Nanoseconds since the epoch, when they fit an i64 and the timestamp is
/// normalised (so that it comes back exactly).
fn nanos(t: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000_000)?
        .checked_add(i64::from(t.nanos))
}

fn timestamp(nanos: i64) -> Timestamp {
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        // rem_euclid of 10^9 is below 10^9: fits.
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or_default(),
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)).cast_unsigned()
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -(v & 1).cast_signed()
}

/// The low 7 bits of `v`.
fn low_seven(v: u64) -> u8 {
    u8::try_from(v & 0x7f).unwrap_or_default()
}

struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(low_seven(v) | 0x80);
            v >>= 7;
        }
        self.0.push(low_seven(v));
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, HistoryError> {
        let b = *self.bytes.get(self.at).ok_or(HistoryError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, HistoryError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may only carry the top bit.
            if shift == 63 && b > 1 {
                return Err(HistoryError::Varint(start));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(HistoryError::Varint(start))
    }

    /// A count of items of at least `min_bytes` each, checked against
    /// what is left (a corrupt count must not allocate gigabytes).
    fn count(&mut self, min_bytes: usize) -> Result<usize, HistoryError> {
        let n = self.varint()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes as u64) > left || n > MAX_UNPACKED as u64 {
            return Err(HistoryError::Count(n));
        }
        usize::try_from(n).map_err(|_| HistoryError::Count(n))
    }
}

/// A field's value as a delta from its last present value.
#[derive(Default)]
struct Delta(u64);

impl Delta {
    fn put(&mut self, out: &mut Writer, v: u64) {
        out.varint(zigzag(v.wrapping_sub(self.0).cast_signed()));
        self.0 = v;
    }

    fn get(&mut self, input: &mut Reader<'_>) -> Result<u64, HistoryError> {
        self.0 = self.0.wrapping_add(unzigzag(input.varint()?).cast_unsigned());
        Ok(self.0)
    }
}

/// Times as the change of their step: regular samples give zeros.
#[derive(Default)]
struct Clock {
    last: i64,
    step: i64,
}

impl Clock {
    fn put(&mut self, out: &mut Writer, t: i64) {
        let step = t.wrapping_sub(self.last);
        out.varint(zigzag(step.wrapping_sub(self.step)));
        (self.last, self.step) = (t, step);
    }

    fn get(&mut self, input: &mut Reader<'_>) -> Result<i64, HistoryError> {
        self.step = self.step.wrapping_add(unzigzag(input.varint()?));
        self.last = self.last.wrapping_add(self.step);
        Ok(self.last)
    }
}

/// A float as the XOR of its bits with the last present one's.
#[derive(Default)]
struct Xor(u64);

impl Xor {
    fn put(&mut self, out: &mut Writer, v: f64) {
        out.varint(v.to_bits() ^ self.0);
        self.0 = v.to_bits();
    }

    fn get(&mut self, input: &mut Reader<'_>) -> Result<f64, HistoryError> {
        self.0 ^= input.varint()?;
        Ok(f64::from_bits(self.0))
    }
}

/// Per sample: a bitmask of the fields present, then each present field.
fn write_samples(out: &mut Writer, samples: &[MemorySample]) {
    let mut clock = Clock::default();
    let mut ints: [Delta; 7] = Default::default();
    let mut floats: [Xor; 2] = Default::default();
    for s in samples {
        let values = sample_ints(s);
        let pressures = [s.pressure_some_avg10, s.pressure_full_avg10];
        let mut mask = u64::from(s.time.is_some());
        for (i, v) in values.iter().enumerate() {
            mask |= u64::from(v.is_some()) << (1 + i);
        }
        for (i, v) in pressures.iter().enumerate() {
            mask |= u64::from(v.is_some()) << (8 + i);
        }
        out.varint(mask);
        if let Some(t) = s.time.as_ref().and_then(nanos) {
            clock.put(out, t);
        }
        for (delta, v) in ints.iter_mut().zip(values) {
            if let Some(v) = v {
                delta.put(out, v);
            }
        }
        for (xor, v) in floats.iter_mut().zip(pressures) {
            if let Some(v) = v {
                xor.put(out, v);
            }
        }
    }
}

fn sample_ints(s: &MemorySample) -> [Option<u64>; 7] {
    [
        s.working_set_bytes,
        s.usage_bytes,
        s.anon_bytes,
        s.file_bytes,
        s.shmem_bytes,
        s.limit_bytes,
        s.kernel_bytes,
    ]
}

fn read_samples(input: &mut Reader<'_>) -> Result<Vec<MemorySample>, HistoryError> {
    // A sample takes at least its mask's byte.
    let n = input.count(1)?;
    let mut clock = Clock::default();
    let mut ints: [Delta; 7] = Default::default();
    let mut floats: [Xor; 2] = Default::default();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mask = input.varint()?;
        let has = |bit: usize| mask & (1 << bit) != 0;
        let time = if has(0) {
            Some(timestamp(clock.get(input)?))
        } else {
            None
        };
        let mut values = [None; 7];
        for (i, (delta, value)) in ints.iter_mut().zip(values.iter_mut()).enumerate() {
            if has(1 + i) {
                *value = Some(delta.get(input)?);
            }
        }
        let mut pressures = [None; 2];
        for (i, (xor, value)) in floats.iter_mut().zip(pressures.iter_mut()).enumerate() {
            if has(8 + i) {
                *value = Some(xor.get(input)?);
            }
        }
        let [
            working_set_bytes,
            usage_bytes,
            anon_bytes,
            file_bytes,
            shmem_bytes,
            limit_bytes,
            kernel_bytes,
        ] = values;
        samples.push(MemorySample {
            time,
            working_set_bytes,
            usage_bytes,
            anon_bytes,
            file_bytes,
            shmem_bytes,
            limit_bytes,
            pressure_some_avg10: pressures[0],
            pressure_full_avg10: pressures[1],
            kernel_bytes,
        });
    }
    Ok(samples)
}

/// Per bucket: a bitmask of the optional fields present, the time if
/// present, the three working sets, then the optional values.
fn write_buckets(out: &mut Writer, buckets: &[MemoryBucket]) {
    let mut clock = Clock::default();
    let mut ints: [Delta; 5] = Default::default();
    for b in buckets {
        let mask = u64::from(b.time.is_some())
            | u64::from(b.usage_last_bytes.is_some()) << 1
            | u64::from(b.limit_bytes.is_some()) << 2;
        out.varint(mask);
        if let Some(t) = b.time.as_ref().and_then(nanos) {
            clock.put(out, t);
        }
        let [min, max, last, usage, limit] = &mut ints;
        min.put(out, b.working_set_min_bytes);
        max.put(out, b.working_set_max_bytes);
        last.put(out, b.working_set_last_bytes);
        if let Some(v) = b.usage_last_bytes {
            usage.put(out, v);
        }
        if let Some(v) = b.limit_bytes {
            limit.put(out, v);
        }
    }
}

fn read_buckets(input: &mut Reader<'_>) -> Result<Vec<MemoryBucket>, HistoryError> {
    // A bucket takes at least its mask and three working sets.
    let n = input.count(4)?;
    let mut clock = Clock::default();
    let mut ints: [Delta; 5] = Default::default();
    let mut buckets = Vec::with_capacity(n);
    for _ in 0..n {
        let mask = input.varint()?;
        let time = if mask & 1 != 0 {
            Some(timestamp(clock.get(input)?))
        } else {
            None
        };
        let [min, max, last, usage, limit] = &mut ints;
        let working_set_min_bytes = min.get(input)?;
        let working_set_max_bytes = max.get(input)?;
        let working_set_last_bytes = last.get(input)?;
        let usage_last_bytes = if mask & 2 != 0 {
            Some(usage.get(input)?)
        } else {
            None
        };
        let limit_bytes = if mask & 4 != 0 {
            Some(limit.get(input)?)
        } else {
            None
        };
        buckets.push(MemoryBucket {
            time,
            working_set_min_bytes,
            working_set_max_bytes,
            working_set_last_bytes,
            usage_last_bytes,
            limit_bytes,
        });
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    fn sample(i: i64) -> MemorySample {
        MemorySample {
            time: Some(timestamp(
                1_795_000_000_000_000_000 + i * 100_000_000 + (i * 7919) % 3000,
            )),
            working_set_bytes: Some(100_000_000 + i.cast_unsigned() * 91_111),
            usage_bytes: Some(110_000_000 + i.cast_unsigned() * 91_111),
            anon_bytes: Some(90_000_000 + (i.cast_unsigned() / 10) * 811_111),
            file_bytes: Some(10_000_000),
            shmem_bytes: Some(0),
            limit_bytes: Some(268_435_456),
            ..MemorySample::default()
        }
    }

    /// A kill's history as the agent exports it: 60 s at 10 Hz, then
    /// 1-second buckets.
    fn history(samples: i64, buckets: i64) -> MemoryHistory {
        MemoryHistory {
            cgroup: "/kubepods/pod1/c".into(),
            samples: (0..samples).map(sample).collect(),
            buckets: (0..buckets)
                .map(|i| MemoryBucket {
                    time: Some(Timestamp {
                        seconds: 1_795_000_000 + i,
                        nanos: 0,
                    }),
                    working_set_min_bytes: 1000 + i.cast_unsigned(),
                    working_set_max_bytes: 2000 + i.cast_unsigned(),
                    working_set_last_bytes: 1500,
                    usage_last_bytes: (i % 3 != 0).then_some(3000),
                    limit_bytes: Some(268_435_456),
                })
                .collect(),
            limit_bytes: Some(268_435_456),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }
    }

    #[test]
    fn a_kill_history_comes_back_whole_from_a_quarter_of_its_bytes() {
        let plain = history(600, 840);
        let mut packed = plain.clone();
        pack(&mut packed);
        assert!(packed.samples.is_empty() && packed.buckets.is_empty());
        let (before, after) = (plain.encoded_len(), packed.encoded_len());
        assert!(after * 3 < before, "{after} bytes packed for {before} plain");
        let mut back = MemoryHistory::decode(packed.encode_to_vec().as_slice()).expect("decodes");
        unpack(&mut back).expect("unpacks");
        assert_eq!(back, plain);
    }

    #[test]
    fn unpacking_an_event_keeping_its_bytes_returns_what_each_history_was_sent_as() {
        let original = OomEvent {
            history: Some(history(600, 10)),
            oom_memcg_history: Some(history(5, 0)),
            ..OomEvent::default()
        };
        let mut received = original.clone();
        pack(received.history.as_mut().expect("has one"));
        let sent_packed = received.history.as_ref().expect("has one").packed.clone();
        let [history_bytes, memcg_bytes] = unpack_event_keeping(&mut received).expect("unpacks");
        assert_eq!(received, original);
        assert_eq!(history_bytes, sent_packed);
        assert!(memcg_bytes.is_empty(), "sent plain");
        assert!(!has_packed_history(&received) && has_plain_history(&received));

        // And back: the received bytes are moved in, not packed again; the
        // history sent plain is packed here.
        let kept_at = history_bytes.as_ptr();
        pack_event_keeping(&mut received, [history_bytes, memcg_bytes]);
        assert_eq!(
            received.history.as_ref().expect("has one").packed.as_ptr(),
            kept_at
        );
        assert!(has_packed_history(&received) && !has_plain_history(&received));
        let mut packed_here = original.clone();
        pack_event(&mut packed_here);
        assert_eq!(received, packed_here);

        let mut damaged = original.clone();
        pack(damaged.history.as_mut().expect("has one"));
        damaged.history.as_mut().expect("has one").packed.pop();
        let before = damaged.clone();
        assert!(unpack_event_keeping(&mut damaged).is_err());
        assert_eq!(damaged, before, "left as it was");
    }

    #[test]
    fn empty_and_unpacked_histories_are_left_alone() {
        let mut empty = history(0, 0);
        pack(&mut empty);
        assert_eq!(empty, history(0, 0));
        let mut plain = history(5, 5);
        unpack(&mut plain).expect("nothing to unpack");
        assert_eq!(plain, history(5, 5));
        // Packing twice changes nothing.
        let mut twice = history(5, 5);
        pack(&mut twice);
        let once = twice.clone();
        pack(&mut twice);
        assert_eq!(twice, once);
    }

    #[test]
    fn histories_longer_than_unpack_takes_stay_plain() {
        let long = MemoryHistory {
            samples: vec![MemorySample::default(); MAX_UNPACKED + 1],
            ..MemoryHistory::default()
        };
        let mut h = long.clone();
        pack(&mut h);
        assert_eq!(h, long);
        let mut longest = MemoryHistory {
            samples: vec![MemorySample::default(); MAX_UNPACKED],
            ..MemoryHistory::default()
        };
        pack(&mut longest);
        unpack(&mut longest).expect("the longest packed history unpacks");
        assert_eq!(longest.samples.len(), MAX_UNPACKED);
    }

    #[test]
    fn times_it_cannot_carry_exactly_stay_unpacked() {
        for bad in [
            Timestamp {
                seconds: 1,
                nanos: -5,
            },
            Timestamp {
                seconds: i64::MAX / 2,
                nanos: 0,
            },
        ] {
            let mut h = history(5, 0);
            h.samples[2].time = Some(bad);
            let before = h.clone();
            pack(&mut h);
            assert_eq!(h, before);
        }
    }

    #[test]
    fn damaged_packed_bytes_are_errors_and_change_nothing() {
        let mut packed = history(50, 20);
        pack(&mut packed);
        let bytes = packed.packed.clone();
        for cut in 1..bytes.len() {
            let mut h = MemoryHistory {
                packed: bytes[..cut].to_vec(),
                ..MemoryHistory::default()
            };
            let before = h.clone();
            assert!(unpack(&mut h).is_err(), "packed bytes cut at {cut} unpacked");
            assert_eq!(h, before);
        }
        let mut longer = MemoryHistory {
            packed: [bytes.as_slice(), &[0]].concat(),
            ..MemoryHistory::default()
        };
        assert_eq!(unpack(&mut longer), Err(HistoryError::Trailing(1)));
        // 2^60 samples claimed in 10 bytes.
        let mut huge = MemoryHistory {
            packed: vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10],
            ..MemoryHistory::default()
        };
        assert!(matches!(unpack(&mut huge), Err(HistoryError::Count(_))));
        // More samples than allowed, though the bytes are there.
        let mut many = MemoryHistory {
            packed: super::packed(&vec![MemorySample::default(); MAX_UNPACKED + 1], &[]),
            ..MemoryHistory::default()
        };
        assert_eq!(
            unpack(&mut many),
            Err(HistoryError::Count(MAX_UNPACKED as u64 + 1))
        );
        let mut endless = MemoryHistory {
            packed: vec![0xff; 11],
            ..MemoryHistory::default()
        };
        assert_eq!(unpack(&mut endless), Err(HistoryError::Varint(0)));
        let mut both = history(3, 0);
        both.packed = bytes;
        assert_eq!(unpack(&mut both), Err(HistoryError::Both));
    }

    fn any_time() -> impl Strategy<Value = Option<Timestamp>> {
        proptest::option::of((any::<i64>(), 0..1_000_000_000i32).prop_map(|(s, n)| Timestamp {
            seconds: s % 9_000_000_000,
            nanos: n,
        }))
    }

    fn any_float() -> impl Strategy<Value = Option<f64>> {
        // NaN != NaN would fail the comparison, not the encoding.
        proptest::option::of(any::<f64>().prop_filter("not NaN", |f| !f.is_nan()))
    }

    fn any_sample() -> impl Strategy<Value = MemorySample> {
        let ints = proptest::array::uniform7(proptest::option::of(any::<u64>()));
        (any_time(), ints, any_float(), any_float()).prop_map(|(time, [a, b, c, d, e, f, g], p, q)| {
            MemorySample {
                time,
                working_set_bytes: a,
                usage_bytes: b,
                anon_bytes: c,
                file_bytes: d,
                shmem_bytes: e,
                limit_bytes: f,
                pressure_some_avg10: p,
                pressure_full_avg10: q,
                kernel_bytes: g,
            }
        })
    }

    fn any_bucket() -> impl Strategy<Value = MemoryBucket> {
        let optional = proptest::option::of(any::<u64>());
        (any_time(), any::<[u64; 3]>(), optional.clone(), optional).prop_map(
            |(time, [min, max, last], usage, limit)| MemoryBucket {
                time,
                working_set_min_bytes: min,
                working_set_max_bytes: max,
                working_set_last_bytes: last,
                usage_last_bytes: usage,
                limit_bytes: limit,
            },
        )
    }

    proptest! {
        #[test]
        fn every_history_comes_back_exactly(
            samples in proptest::collection::vec(any_sample(), 0..40),
            buckets in proptest::collection::vec(any_bucket(), 0..20),
        ) {
            let plain = MemoryHistory { samples, buckets, ..MemoryHistory::default() };
            let mut h = plain.clone();
            pack(&mut h);
            unpack(&mut h).expect("unpacks");
            prop_assert_eq!(h, plain);
        }

        #[test]
        fn arbitrary_bytes_never_panic(packed in proptest::collection::vec(any::<u8>(), 1..200)) {
            let mut h = MemoryHistory { packed, ..MemoryHistory::default() };
            let _ = unpack(&mut h);
        }
    }
}
