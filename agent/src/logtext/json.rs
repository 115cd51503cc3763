//! Kernel lines inside JSON: `journalctl -o json`, log shippers' records
//! (fluent-bit, Loki, Google Cloud Logging), as opposed to other tools'
//! documents that quote a kill line (Kubernetes events, alerts). A JSON
//! value is the kernel's only where its record says so. Pure.

/// Keys whose string value is the logged line, quoted.
const MESSAGE_KEYS: &[&str] = &[
    "\"MESSAGE\"",
    "\"message\"",
    "\"log\"",
    "\"line\"",
    "\"msg\"",
    "\"textPayload\"",
    "\"_raw\"",
];

/// What names a record's source as the kernel.
const KERNEL_MARKS: &[&str] = &[
    "\"_TRANSPORT\":\"kernel\"",
    "\"transport\":\"kernel\"",
    "\"SYSLOG_IDENTIFIER\":\"kernel\"",
    "\"syslog_identifier\":\"kernel",
    "\"ident\":\"kernel\"",
    "\"program\":\"kernel\"",
    "\"source\":\"kmsg\"",
];

/// What names a document as another tool's, quoting the kernel.
const ECHO_MARKS: &[&str] = &[
    "OOMKilling",
    "\"involvedObject\"",
    "\"reason\"",
    "kernel-monitor",
    "\"kind\":\"Event\"",
    "\"alertname\"",
];

/// What one line of JSON says about its record's source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Provenance {
    pub kernel: bool,
    pub echo: bool,
}

/// The source marks a line of JSON carries (spaces around `:` ignored).
pub fn provenance(line: &str) -> Provenance {
    if !line.contains('"') {
        return Provenance::default();
    }
    let squeezed: String = line.chars().filter(|c| *c != ' ').collect();
    Provenance {
        kernel: KERNEL_MARKS.iter().any(|m| squeezed.contains(m)),
        echo: ECHO_MARKS.iter().any(|m| squeezed.contains(m)),
    }
}

/// The unescaped value of the line's message key, if it has one.
pub fn message_value(line: &str) -> Option<String> {
    memchr::memchr(b'"', line.as_bytes())?;
    MESSAGE_KEYS.iter().find_map(|key| {
        let at = line.find(key)? + key.len();
        let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
        let body = rest.strip_prefix('"')?;
        Some(unescape(body))
    })
}

/// A JSON string's body up to its closing quote, unescaped; `\u0001`-style
/// escapes of control characters (shippers leave them in) are dropped.
fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n' | 't' | 'r') => out.push(' '),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    if let Some(decoded) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        && !decoded.is_control()
                    {
                        out.push(decoded);
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_and_shipper_records() {
        let journal = r#"{"_TRANSPORT" : "kernel", "MESSAGE" : "Out of memory: Killed process 9 (x) total-vm:1kB", "PRIORITY" : "3"}"#;
        assert_eq!(
            message_value(journal).as_deref(),
            Some("Out of memory: Killed process 9 (x) total-vm:1kB")
        );
        assert!(provenance(journal).kernel);
        let shipped = r#"    "message": "Out of memory: Killed process 1 (a) oom_score_adj:0\u0003","#;
        assert_eq!(
            message_value(shipped).as_deref(),
            Some("Out of memory: Killed process 1 (a) oom_score_adj:0")
        );
        let event =
            r#"{"reason": "OOMKilling", "message": "Memory cgroup out of memory: Killed process 2 (b)"}"#;
        assert_eq!(
            provenance(event),
            Provenance {
                kernel: false,
                echo: true
            }
        );
        assert_eq!(message_value("no json here"), None);
    }
}
