//! Making attacker-supplied strings safe for a log line or an audit record:
//! control characters (newlines, ANSI escapes, DEL, C1, bidi overrides) are
//! escaped, and the result is cut to a length cap with a note of how much
//! was left out. A caller can then neither forge a line nor make one line
//! cost more than a bounded number of bytes.

use std::fmt::Write as _;

/// Cap for identities, issuers and other short attacker-supplied values.
pub const SHORT: usize = 256;
/// Cap for reasons and error messages.
pub const LONG: usize = 1024;

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...), at most `max`
/// bytes of it kept (plus a `...(+N bytes)` suffix when cut).
pub fn clean(s: &str, max: usize) -> String {
    if s.len() <= max && !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len().min(max) + 24);
    let mut used = 0;
    for c in s.chars() {
        let before = out.len();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            break;
        }
        used += c.len_utf8();
    }
    if used < s.len() {
        let _ = write!(out, "...(+{} bytes)", s.len() - used);
    }
    out
}

/// [`clean`] with the [`SHORT`] cap.
pub fn short(s: &str) -> String {
    clean(s, SHORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_caps() {
        assert_eq!(short("spiffe://td/ns/a/sa/b"), "spiffe://td/ns/a/sa/b");
        assert_eq!(short("a\nb\x1b[31mc"), "a\\nb\\u{1b}[31mc");
        assert_eq!(short("x\u{202e}y"), "x\\u{202e}y");
        let long = "é".repeat(1000);
        let c = clean(&long, 10);
        assert_eq!(c, format!("{}...(+1990 bytes)", "é".repeat(5)));
        let ctl = "\x01".repeat(14_000);
        assert!(clean(&ctl, SHORT).len() < SHORT + 32);
        assert!(!clean(&ctl, SHORT).contains('\x01'));
    }
}
