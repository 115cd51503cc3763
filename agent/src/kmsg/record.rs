//! Pure parser for one `/dev/kmsg` record.
//!
//! Format (Documentation/ABI/testing/dev-kmsg):
//! `PRIO,SEQ,TS_USEC,FLAGS[,KEY=VALUE...];MESSAGE\n` then optional
//! continuation lines ` KEY=VALUE\n`. Non-printable bytes in MESSAGE and
//! values arrive escaped as `\xNN`.

use std::fmt;

/// The syslog facility of kernel messages. Records written to `/dev/kmsg`
/// from user space always carry a non-zero facility, so only facility 0 is
/// trustworthy kernel output.
pub const KERNEL_FACILITY: u8 = 0;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub facility: u8,
    pub level: u8,
    pub seq: u64,
    /// Microseconds since boot (the kernel's printk clock).
    pub timestamp_us: u64,
    /// `-` for a complete record, `c` for a continuation fragment (old
    /// kernels), `+` for a continuation of the previous record.
    pub flag: char,
    /// `caller=T123` / `C1` when the kernel has CONFIG_PRINTK_CALLER: the
    /// task or CPU that printed the record, which tells interleaved OOM
    /// reports apart.
    pub caller: Option<String>,
    /// The message with `\xNN` escapes decoded.
    pub message: String,
    /// Continuation lines (`SUBSYSTEM=...`, `DEVICE=...`), decoded.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// True when the kernel itself wrote this record (facility 0).
    pub fn is_kernel(&self) -> bool {
        self.facility == KERNEL_FACILITY
    }

    /// The record as a line for the OOM parser.
    pub fn input_line(&self) -> crate::oom::InputLine<'_> {
        crate::oom::InputLine {
            text: &self.message,
            from_kernel: self.is_kernel(),
            caller: self.caller.as_deref(),
            host: None,
            stamp: crate::oom::Stamp {
                seq: Some(self.seq),
                monotonic_us: Some(self.timestamp_us),
                wall: None,
                level: Some(self.level),
                line: None,
            },
        }
    }
}

/// Why a record could not be parsed. Carries the record text for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RecordError {
    pub reason: &'static str,
    /// The start of the offending record, lossily decoded, for the log.
    pub excerpt: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed kmsg record ({}): {:?}", self.reason, self.excerpt)
    }
}

fn error(reason: &'static str, raw: &[u8]) -> RecordError {
    let end = raw.len().min(120);
    RecordError {
        reason,
        excerpt: String::from_utf8_lossy(&raw[..end]).into_owned(),
    }
}

/// Parses one record as returned by one `read()` of `/dev/kmsg`.
pub fn parse_record(raw: &[u8]) -> Result<Record, RecordError> {
    let semicolon = memchr::memchr(b';', raw).ok_or_else(|| error("no ';' after the header", raw))?;
    let mut header = raw[..semicolon].split(|&b| b == b',');
    let mut number = |what: &'static str| -> Result<u64, RecordError> {
        header
            .next()
            .and_then(parse_decimal)
            .ok_or_else(|| error(what, raw))
    };
    let prio = number("bad priority")?;
    let seq = number("bad sequence number")?;
    let timestamp_us = number("bad timestamp")?;
    let flag = match header.next() {
        Some([flag]) if flag.is_ascii() => char::from(*flag),
        Some(_) => return Err(error("bad flags", raw)),
        None => '-',
    };
    let caller = header
        .find_map(|p| p.strip_prefix(b"caller="))
        .map(|c| String::from_utf8_lossy(c).into_owned());
    let facility = u8::try_from(prio >> 3).map_err(|_| error("priority out of range", raw))?;

    let body = &raw[semicolon + 1..];
    let message_end = memchr::memchr(b'\n', body).unwrap_or(body.len());
    let message = decode_escapes(&body[..message_end]);
    let fields = if message_end < body.len() {
        body[message_end + 1..]
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_prefix(b" "))
            .filter_map(|line| {
                let eq = memchr::memchr(b'=', line)?;
                Some((decode_escapes(&line[..eq]), decode_escapes(&line[eq + 1..])))
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Record {
        facility,
        level: (prio & 7) as u8,
        seq,
        timestamp_us,
        flag,
        caller,
        message,
        fields,
    })
}

/// A decimal number of ASCII digits only (no sign, no spaces).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Decodes the kernel's `\xNN` escapes; invalid UTF-8 becomes U+FFFD.
pub fn decode_escapes(raw: &[u8]) -> String {
    if memchr::memchr(b'\\', raw).is_none() {
        return match std::str::from_utf8(raw) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(raw).into_owned(),
        };
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x') {
            let hex = raw.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_real_oom_record() {
        let raw =
            b"3,447,10837389275,-;Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB\n";
        let record = parse_record(raw).expect("valid");
        assert_eq!(record.facility, 0);
        assert_eq!(record.level, 3);
        assert_eq!(record.seq, 447);
        assert_eq!(record.timestamp_us, 10_837_389_275);
        assert_eq!(record.flag, '-');
        assert!(record.is_kernel());
        assert_eq!(
            record.message,
            "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB"
        );
        assert!(record.fields.is_empty());
    }

    #[test]
    fn user_space_writes_have_a_nonzero_facility() {
        // `echo '<3>Out of memory: Killed process 1 (x)' > /dev/kmsg` arrives as prio 11.
        let record = parse_record(b"11,900,5,-;Out of memory: Killed process 1 (x)\n").expect("valid");
        assert_eq!(record.facility, 1);
        assert_eq!(record.level, 3);
        assert!(!record.is_kernel());
    }

    #[test]
    fn continuation_lines_caller_and_escapes() {
        let raw =
            b"6,339,5140900,-,caller=T12;usb 1-1: new\\x0adevice \\x5cok\n SUBSYSTEM=usb\n DEVICE=c189:1\n";
        let record = parse_record(raw).expect("valid");
        assert_eq!(record.caller.as_deref(), Some("T12"));
        assert_eq!(record.message, "usb 1-1: new\ndevice \\ok");
        assert_eq!(
            record.fields,
            vec![
                ("SUBSYSTEM".to_owned(), "usb".to_owned()),
                ("DEVICE".to_owned(), "c189:1".to_owned())
            ]
        );
    }

    #[test]
    fn malformed_records_say_why() {
        assert_eq!(
            parse_record(b"no header here").expect_err("bad").reason,
            "no ';' after the header"
        );
        assert_eq!(
            parse_record(b"x,1,2,-;m").expect_err("bad").reason,
            "bad priority"
        );
        assert_eq!(
            parse_record(b"6,,2,-;m").expect_err("bad").reason,
            "bad sequence number"
        );
        assert_eq!(
            parse_record(b"6,1,t,-;m").expect_err("bad").reason,
            "bad timestamp"
        );
        assert_eq!(parse_record(b"6,1,2,--;m").expect_err("bad").reason, "bad flags");
        let err = parse_record(b"99999999999,1,2,-;m").expect_err("bad");
        assert_eq!(err.reason, "priority out of range");
        assert!(err.to_string().contains("99999999999,1,2"), "{err}");
    }

    #[test]
    fn incomplete_escapes_are_kept_verbatim() {
        assert_eq!(decode_escapes(b"a\\x4"), "a\\x4");
        assert_eq!(decode_escapes(b"a\\xzz"), "a\\xzz");
        assert_eq!(decode_escapes(b"\\xff"), "\u{fffd}");
    }

    proptest! {
        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_record(&raw);
        }

        #[test]
        fn header_fields_round_trip(prio in 0u64..2048, seq: u64, ts: u64, msg in "[ -~]{0,80}") {
            let raw = format!("{prio},{seq},{ts},-;{}\n", msg.replace('\\', "/"));
            let record = parse_record(raw.as_bytes()).expect("well-formed");
            prop_assert_eq!(u64::from(record.facility), prio >> 3);
            prop_assert_eq!(u64::from(record.level), prio & 7);
            prop_assert_eq!(record.seq, seq);
            prop_assert_eq!(record.timestamp_us, ts);
            prop_assert_eq!(record.message, msg.replace('\\', "/"));
        }
    }
}
