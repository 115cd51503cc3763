//! Finding the kernel's message inside a line whose prefix is of no known
//! shape (an unusual logger, a paste that lost part of its prefix), and
//! telling a log's prefix from another tool's echo of a kill line (an
//! event, a JSON document, an alert). Pure.

/// Where a kernel OOM message may start, with how far the message starts
/// before the match.
const ANCHORS: &[&str] = &[
    "oom-kill:constraint=",
    "Memory cgroup out of memory",
    "Out of memory",
    "Killed process ",
    "Task in /",
    "Tasks in /",
    "Memory cgroup stats for ",
    "oom_reaper: reaped process ",
    "memory: usage ",
    "memory+swap: usage ",
    "kmem: usage ",
];

/// What tools that repeat kernel lines put before them: Kubernetes events
/// (`OOMKilling`), JSON keys, key=value loggers.
const ECHO_MARKS: &[&str] = &[
    "OOMKilling",
    "OOMKilled",
    "SystemOOM",
    "msg=",
    "level=",
    "\"message\"",
    "'message'",
    "reason",
    "Reason",
    // A JSON key whose opening quote a paste (or our quote stripping) lost.
    "\": ",
    "\":\"",
];

const TRIGGER: &str = " invoked oom-killer: ";

/// Every anchor and the trigger's words, found in one pass.
static SEARCH: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(ANCHORS.iter().chain(std::iter::once(&TRIGGER)))
        .unwrap_or_else(|e| unreachable!("fixed patterns: {e}"))
});

/// The byte offset where a kernel message starts in `text`, if one of the
/// anchors is there (the earliest); for a trigger line (`COMM invoked
/// oom-killer:`), where its comm starts.
pub(super) fn find(text: &str) -> Option<usize> {
    let found = SEARCH.find(text)?;
    if found.pattern().as_usize() < ANCHORS.len() {
        return Some(found.start());
    }
    // The comm is the word before: a prefix of unknown shape makes a comm
    // with spaces ambiguous, and the trigger's comm is evidence, not a
    // reported field.
    Some(
        text[..found.start()]
            .rfind([' ', ']', ':', '|'])
            .map_or(0, |space| space + 1),
    )
}

/// Whether the text before a kernel message is another tool echoing it.
pub(super) fn echoed(before: &str) -> bool {
    ECHO_MARKS.iter().any(|mark| before.contains(mark)) || json_key(before)
}

/// A JSON object's key (`"key": `) in the text.
fn json_key(text: &str) -> bool {
    text.match_indices("\":").any(|(at, _)| {
        text[..at].rfind('"').is_some_and(|open| {
            text[open + 1..at]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_found_after_any_prefix() {
        let line = "Aug 30 06:58:55.050705 ... kernel: oom-kill:constraint=CONSTRAINT_MEMCG,x";
        assert_eq!(
            &line[find(line).expect("found")..],
            "oom-kill:constraint=CONSTRAINT_MEMCG,x"
        );
        let trigger = "weird|prefix|java invoked oom-killer: gfp_mask=0xd0";
        assert_eq!(
            &trigger[find(trigger).expect("found")..],
            "java invoked oom-killer: gfp_mask=0xd0"
        );
        assert_eq!(find("eth0: link up"), None);
    }

    #[test]
    fn echoes_are_told_apart() {
        assert!(echoed("22m  Warning  OOMKilling  node/aks-1  "));
        assert!(echoed("{\"reason\": \"OOMKilling\", \"message\": \""));
        assert!(echoed("time=\"2020\" level=info msg=\""));
        assert!(!echoed("Jun 25, 2021 @ 12:42:13.029 | kernel | [113782.638786] "));
        assert!(!echoed("localhost kernel: "));
    }
}
