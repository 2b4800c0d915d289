//! Quoting user text in error messages without echoing megabytes back.

/// `s` cut to at most `max_chars` characters, with `…` when something was cut.
pub fn shorten(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn cuts_on_characters_not_bytes() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("µµµµ", 2), "µµ…");
        assert_eq!(shorten("", 0), "");
    }
}
