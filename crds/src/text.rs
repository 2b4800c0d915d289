//! Quoting user text in error messages and logs without echoing megabytes back.

/// `s` cut to at most `max_chars` characters, with `…` when something was cut.
pub fn shorten(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// `s` cut to at most `max_bytes` bytes of UTF-8, `…` included, at a character boundary.
///
/// For fields the API server limits in bytes (an event's note: 1 KiB), where a character
/// bound would let non-ASCII text through too long.
pub fn shorten_bytes(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let Some(budget) = max_bytes.checked_sub('…'.len_utf8()) else {
        return String::new();
    };
    let cut = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= budget)
        .last()
        .unwrap_or(0);
    format!("{}…", &s[..cut])
}

/// `s` made safe for one log line: cut to `max_chars` characters (see [`shorten`]), and every
/// control character (newline, ESC of ANSI/OSC sequences, ...), bidirectional override and
/// backslash escaped (`\n`, `\u{1b}`, `\\`), so text from a peer can neither forge a line,
/// nor drive a terminal, nor fill the log.
pub fn for_log(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    for c in shorten(s, max_chars).chars() {
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || invisible || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{for_log, shorten, shorten_bytes};

    #[test]
    fn log_text_is_one_bounded_line_without_escape_sequences() {
        assert_eq!(for_log("pod-1", 10), "pod-1");
        assert_eq!(
            for_log("a\nINFO forged\u{1b}]0;x\u{7}\\", 100),
            "a\\nINFO forged\\u{1b}]0;x\\u{7}\\\\"
        );
        assert_eq!(for_log("\u{202e}abc", 100), "\\u{202e}abc");
        assert_eq!(for_log(&"x".repeat(1000), 5), "xxxxx…");
    }

    #[test]
    fn cuts_on_characters_not_bytes() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("µµµµ", 2), "µµ…");
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn cuts_on_bytes_at_a_character_boundary() {
        assert_eq!(shorten_bytes("abc", 3), "abc");
        assert_eq!(shorten_bytes("abcdef", 5), "ab…");
        // µ is two bytes: "µµ" + "…" is 7 bytes, a third µ would make 9.
        assert_eq!(shorten_bytes("µµµµ", 8), "µµµµ");
        assert_eq!(shorten_bytes("µµµµ", 7), "µµ…");
        assert_eq!(shorten_bytes("µµµµ", 4), "…");
        assert_eq!(shorten_bytes("µµµµ", 2), "");
        for max in 0..40 {
            let cut = shorten_bytes(&"ü€😀".repeat(10), max);
            assert!(cut.len() <= max, "{max}: {cut:?} is {} bytes", cut.len());
        }
    }
}
