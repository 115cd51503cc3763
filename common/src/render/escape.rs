//! Text from events and status reports made safe for a terminal.
//!
//! Pod names, commands, cgroup paths and kernel lines come from the
//! kernel, the container runtime and agents: anything may be in them. An
//! escape sequence printed raw can clear the screen, set the window title,
//! or hide and rewrite what was printed before it; a newline can forge a
//! row. Every string from an event or a status passes through
//! [`printable`] before it is put in a table, `show` or `watch`; JSON
//! output needs nothing (serde escapes control characters).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character escaped: C0 (ESC, BEL, newline,
/// carriage return, tab, ...), DEL and C1 (`U+0080`..`U+009F`, which some
/// terminals read as CSI and OSC). Newline, carriage return and tab read
/// as `\n`, `\r`, `\t`; the others as `\x1b` (below `U+0080`) or
/// `\u{9b}`. Borrowed when there is nothing to escape (the usual case).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`printable`] of an optional string, owned.
pub(crate) fn printable_opt(text: Option<&str>) -> Option<String> {
    text.map(|t| printable(t).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("shop/api-7d9f"), Cow::Borrowed(_)));
        assert_eq!(printable("ünïcödé ✓"), "ünïcödé ✓");
        assert_eq!(
            printable("a\x1b[2Jb\x07c\x7fd\u{9b}31me\u{85}"),
            "a\\x1b[2Jb\\x07c\\x7fd\\u{9b}31me\\u{85}"
        );
        assert_eq!(printable("x\ny\rz\tw\0"), "x\\ny\\rz\\tw\\x00");
        assert!(!printable("\x1b]0;title\x07").chars().any(char::is_control));
    }
}
