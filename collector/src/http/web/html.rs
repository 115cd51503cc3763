//! HTML text: escaping every string that comes from an event, and the
//! page around each view. Pure.

use std::fmt::Write as _;

/// `text` safe in an element or a quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (a kernel line may hold any byte) are
            // shown, not interpreted.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A query string value, percent-encoded.
pub(super) fn query_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where a link may go back to after login: a path on this site only.
pub(super) fn local_path(next: &str) -> Option<&str> {
    let safe = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    safe.then_some(next)
}

/// Navigation entries: (path, label).
const NAV: &[(&str, &str)] = &[("/", "Kills"), ("/summary", "Summary"), ("/top", "Top")];

/// A whole page: `title` (escaped here) and `body` (already HTML).
pub(super) fn page(title: &str, current: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let here = if *path == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{here}>{label}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · oomlens</title>\n<link rel=\"stylesheet\" href=\"/static/app.css\">\n\
         <script src=\"/static/live.js\" defer></script>\n</head>\n<body>\n\
         <header><a class=\"brand\" href=\"/\">oomlens</a><nav>{nav}</nav></header>\n\
         <main>\n{body}\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path("/kills/abc?x=1"), Some("/kills/abc?x=1"));
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "kills",
            "/a\nb",
        ] {
            assert_eq!(local_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
