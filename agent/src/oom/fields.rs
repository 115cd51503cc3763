//! The values inside an OOM report's lines: numbers as the kernel (and the
//! tools people paste through) print them, `(comm)` after a pid, and the
//! fields of the kill and summary lines. Pure.

/// The kernel's `TASK_COMM_LEN` is 16 with the NUL: a longer name in
/// parentheses is not a process name, and the line is not the kernel's.
pub const MAX_COMM_BYTES: usize = 15;

/// A kill line's fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KillFields {
    pub uid: Option<u32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
}

/// The integer at the start of `text` (after spaces).
pub fn leading_int<T: std::str::FromStr>(text: &str) -> Option<T> {
    let text = text.trim_start();
    let end = text
        .bytes()
        .enumerate()
        .find(|&(i, b)| !(b.is_ascii_digit() || (i == 0 && b == b'-')))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse().ok()
}

/// `12345kB`, `12345 kB`, `12345`, digits grouped with commas
/// (`26,184,840kB`: some tools reformat numbers on the way), and the unit
/// as people retype or cut it (`kb`, `KB`, `k`).
pub fn kb_value(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = ["kB", "KB", "kb", "Kb", "k", "K"]
        .iter()
        .find_map(|unit| text.strip_suffix(unit))
        .unwrap_or(text)
        .trim_end();
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b',')
        || digits.starts_with(',')
    {
        return None;
    }
    digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .try_fold(0u64, |n, b| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// Whether `comm` can be a process name the kernel printed.
pub fn valid_comm(comm: &str) -> bool {
    !comm.is_empty() && comm.len() <= MAX_COMM_BYTES && !comm.contains(['\n', '\t'])
}

/// `(comm)` after a pid: `1234 (my proc) total-vm...`. A comm may contain
/// spaces and parentheses, so the closing parenthesis is the one followed by
/// a known continuation, else the last one. None for a name longer than the
/// kernel's.
pub fn paren_comm<'a>(rest: &'a str, endings: &[&str]) -> Option<(&'a str, &'a str)> {
    let open = rest.find('(')? + 1;
    let body = &rest[open..];
    let close = endings
        .iter()
        .filter_map(|e| body.find(e))
        .min()
        .or_else(|| body.rfind(')'))?;
    let comm = &body[..close];
    valid_comm(comm).then(|| (comm, &body[close + 1..]))
}

/// A value a person blanked out before publishing (`<node_name>`, `***`,
/// `....`, `[REDACTED]`, `xxxx`): unknown, never data.
pub fn redacted(value: &str) -> bool {
    value.contains("...")
        || value.contains('…')
        || value.contains("***")
        || value.contains('<')
        || value.contains('>')
        || value.contains("REDACTED")
        || value.contains("redacted")
        || value.contains("xxxx")
        || value.contains("XXXX")
}

/// The fields after a kill line's `(comm)`: `key:value` pairs separated by
/// `, ` or spaces, in every era's order (`total-vm:...kB, anon-rss:...`,
/// `UID:0 pgtables:...kB oom_score_adj:0`, RHEL's `, UID 0, total-vm:`).
pub fn kill_fields(tail: &str) -> KillFields {
    let mut fields = KillFields::default();
    let mut tokens = field_tokens(tail).peekable();
    while let Some(token) = tokens.next() {
        let (key, value) = match token.split_once(':') {
            Some((k, v)) if !v.is_empty() => (k, v),
            Some((k, _)) => (k, tokens.next().unwrap_or_default()),
            None => (
                token,
                tokens
                    .next_if(|t| t.bytes().all(|b| b.is_ascii_digit()))
                    .unwrap_or_default(),
            ),
        };
        match key {
            "UID" => fields.uid = fields.uid.or(value.parse().ok()),
            "total-vm" | "vsz" => fields.total_vm_kb = kb_value(value),
            "anon-rss" => fields.anon_rss_kb = kb_value(value),
            "file-rss" => fields.file_rss_kb = kb_value(value),
            "shmem-rss" => fields.shmem_rss_kb = kb_value(value),
            "pgtables" => fields.pgtables_kb = kb_value(value),
            "oom_score_adj" => fields.oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    fields
}

/// Splits on spaces, and on commas that start a new field (a comma followed
/// by a letter or a space; a comma between digits groups them).
fn field_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(' ')
        .flat_map(|word| {
            let bytes = word.as_bytes();
            let mut pieces = Vec::new();
            let mut start = 0;
            for (at, &b) in bytes.iter().enumerate() {
                let next = bytes.get(at + 1);
                if b == b',' && !next.is_some_and(u8::is_ascii_digit) {
                    pieces.push(&word[start..at]);
                    start = at + 1;
                }
            }
            pieces.push(&word[start..]);
            pieces
        })
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_printed_and_as_pasted() {
        assert_eq!(kb_value("35476kB"), Some(35476));
        assert_eq!(kb_value("26,184,840kB"), Some(26_184_840));
        assert_eq!(kb_value("153,700,88kB"), Some(15_370_088));
        assert_eq!(kb_value("12 kB"), Some(12));
        assert_eq!(kb_value(",5kB"), None);
        assert_eq!(kb_value("kB"), None);
        assert_eq!(kb_value("99999999999999999999999kB"), None);
        assert_eq!(leading_int::<i32>(" -998 x"), Some(-998));
    }

    #[test]
    fn fields_of_every_era() {
        let modern = kill_fields(
            " total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:-998",
        );
        assert_eq!(
            modern,
            KillFields {
                uid: Some(0),
                total_vm_kb: Some(35476),
                anon_rss_kb: Some(32512),
                file_rss_kb: Some(1584),
                shmem_rss_kb: Some(0),
                pgtables_kb: Some(116),
                oom_score_adj: Some(-998),
            }
        );
        let rhel = kill_fields(", UID 1000, total-vm:5306232kB, anon-rss:2086600kB, file-rss:0kB");
        assert_eq!((rhel.uid, rhel.anon_rss_kb), (Some(1000), Some(2_086_600)));
        let grouped = kill_fields(" total-vm:26,184,840kB, anon-rss:153,700,88kB, file-rss:0kB");
        assert_eq!(
            (grouped.total_vm_kb, grouped.anon_rss_kb),
            (Some(26_184_840), Some(15_370_088))
        );
        // A mail client ate the space after a comma.
        let squeezed = kill_fields(" total-vm:1kB,anon-rss:2kB");
        assert_eq!((squeezed.total_vm_kb, squeezed.anon_rss_kb), (Some(1), Some(2)));
    }

    #[test]
    fn names_and_blanks() {
        assert_eq!(
            paren_comm("7 (my (odd) proc) total-vm:1kB", &[") total-vm:"]),
            Some(("my (odd) proc", " total-vm:1kB"))
        );
        assert_eq!(
            paren_comm("7 ((resolved)) total-vm:1kB", &[") total-vm:"]),
            Some(("(resolved)", " total-vm:1kB"))
        );
        assert_eq!(paren_comm("7 (a name far too long for a comm)", &[]), None);
        assert!(redacted("/lxc.payload....-lxc/kubepods.slice"));
        assert!(redacted("<node_name>"));
        assert!(!redacted("/kubepods/burstable/pod1/abc"));
    }
}
