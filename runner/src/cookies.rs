//! A virtual user's cookie jar.
//!
//! Each VU talks to one target, so the jar is deliberately simple: cookies are keyed by name
//! only, and `Domain`, `Path`, `Secure`, `HttpOnly` and `SameSite` are ignored — every cookie
//! in the jar is sent with every request of the VU. The one attribute honoured is deletion:
//! `Max-Age=0` (or negative) or an `Expires` date in the past removes the cookie, which is how
//! servers log a user out. A positive `Max-Age` or future `Expires` does not make the cookie
//! expire later on; a VU's session is short compared with cookie lifetimes.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, SET_COOKIE};

/// Cookies of one virtual user, in the order the server first set them.
///
/// It persists across iterations (so a CSRF cookie obtained once keeps working) until the
/// caller clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieJar {
    /// `(name, value)` pairs; names are unique. A `Vec` because a jar holds a handful of
    /// cookies, where a linear scan beats hashing.
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of cookie `name`, if the jar has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets cookie `name`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.cookies.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.cookies.push((name, value)),
        }
    }

    /// Removes cookie `name`; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.cookies.len();
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.len() != before
    }

    /// Empties the jar.
    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// Number of cookies.
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// True when the jar holds no cookie.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// The cookies as `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.cookies.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Applies every `Set-Cookie` header of a response.
    pub fn store_from(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            // Cookie values are ASCII by RFC 6265; anything else is kept byte-for-byte
            // where it is valid UTF-8 and skipped otherwise.
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                continue;
            };
            match parse_set_cookie(text) {
                Some(SetCookie {
                    name,
                    value,
                    delete: false,
                }) => self.set(name, value),
                Some(SetCookie {
                    name, delete: true, ..
                }) => {
                    self.remove(name);
                }
                None => {}
            }
        }
    }

    /// Appends the jar as a `Cookie` header value (`a=1; b=2`) to `out`, after a `; ` if
    /// `out` already holds something. Returns false, leaving `out` alone, when the jar is
    /// empty.
    pub fn write_header(&self, out: &mut String) -> bool {
        if self.cookies.is_empty() {
            return false;
        }
        for (name, value) in &self.cookies {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(name);
            out.push('=');
            out.push_str(value);
        }
        true
    }
}

/// The parts of a `Set-Cookie` header the jar uses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetCookie<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a str,
    /// `Max-Age` ≤ 0 or `Expires` in the past: the server asks to delete the cookie.
    pub(crate) delete: bool,
}

/// Parses `name=value; Attr=...` (RFC 6265 section 5.2, leniently). `None` when there is no
/// `=` or the name is empty, which RFC 6265 says to ignore.
pub(crate) fn parse_set_cookie(header: &str) -> Option<SetCookie<'_>> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut value = value.trim();
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        value = &value[1..value.len() - 1];
    }
    let mut max_age: Option<i64> = None;
    let mut expired = false;
    for attr in parts {
        let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
        let key = key.trim();
        let val = val.trim();
        if key.eq_ignore_ascii_case("max-age") {
            // Max-Age wins over Expires whatever the order (RFC 6265 5.3 step 3).
            if let Ok(secs) = val.parse::<i64>() {
                max_age = Some(secs);
            }
        } else if key.eq_ignore_ascii_case("expires")
            && let Some(when) = parse_cookie_date(val)
        {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            expired = when <= now;
        }
    }
    let delete = match max_age {
        Some(secs) => secs <= 0,
        None => expired,
    };
    Some(SetCookie {
        name,
        value,
        delete,
    })
}

/// Parses a cookie date (RFC 6265 section 5.1.1, the lenient algorithm browsers use) into
/// seconds since the Unix epoch. Accepts `Thu, 01 Jan 1970 00:00:00 GMT`,
/// `Thursday, 01-Jan-70 00:00:00 GMT` and the asctime form.
pub(crate) fn parse_cookie_date(text: &str) -> Option<i64> {
    let is_delim = |c: char| {
        c == '\t'
            || (' '..='/').contains(&c)
            || (';'..='@').contains(&c)
            || ('['..='`').contains(&c)
            || ('{'..='~').contains(&c)
    };
    let (mut time, mut day, mut month, mut year) = (None, None, None, None);
    for token in text.split(is_delim).filter(|t| !t.is_empty()) {
        if time.is_none()
            && let Some(t) = parse_time(token)
        {
            time = Some(t);
        } else if day.is_none()
            && let Some(d) = leading_digits(token, 1, 2)
        {
            day = Some(d);
        } else if month.is_none()
            && let Some(m) = parse_month(token)
        {
            month = Some(m);
        } else if year.is_none()
            && let Some(y) = leading_digits(token, 2, 4)
        {
            year = Some(y);
        }
    }
    let (hour, minute, second) = time?;
    let (day, month, mut year) = (day?, month?, year?);
    if (70..=99).contains(&year) {
        year += 1900;
    } else if year <= 69 {
        year += 2000;
    }
    if year < 1601 || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

/// `hh:mm:ss` with 1-2 digits each, possibly followed by non-digits.
fn parse_time(token: &str) -> Option<(u32, u32, u32)> {
    let mut fields = token.split(':');
    let h = leading_digits(fields.next()?, 1, 2)?;
    let m = leading_digits(fields.next()?, 1, 2)?;
    let s = leading_digits(fields.next()?, 1, 2)?;
    Some((h, m, s))
}

/// The number formed by `min..=max` leading digits, when no further digit follows.
fn leading_digits(token: &str, min: usize, max: usize) -> Option<u32> {
    let digits = token.bytes().take_while(u8::is_ascii_digit).count();
    if digits < min || digits > max {
        return None;
    }
    token[..digits].parse().ok()
}

fn parse_month(token: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let prefix = token.get(..3)?;
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(prefix))
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_name_value_and_ignores_scoping_attributes() {
        let c = parse_set_cookie("csrf_token=abc123; Path=/; HttpOnly; SameSite=Lax").unwrap();
        assert_eq!(
            c,
            SetCookie {
                name: "csrf_token",
                value: "abc123",
                delete: false
            }
        );
        assert_eq!(parse_set_cookie("q=\"x y\"").unwrap().value, "x y");
        assert_eq!(parse_set_cookie("v=a=b").unwrap().value, "a=b");
        assert_eq!(parse_set_cookie("novalue"), None);
        assert_eq!(parse_set_cookie("=x"), None);
    }

    #[test]
    fn deletion_by_max_age_or_past_expires() {
        assert!(parse_set_cookie("a=; Max-Age=0").unwrap().delete);
        assert!(parse_set_cookie("a=; max-age=-1").unwrap().delete);
        assert!(!parse_set_cookie("a=1; Max-Age=60").unwrap().delete);
        assert!(
            parse_set_cookie("a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
                .unwrap()
                .delete
        );
        assert!(
            !parse_set_cookie("a=1; Expires=Fri, 01 Jan 2100 00:00:00 GMT")
                .unwrap()
                .delete
        );
        // Max-Age takes precedence over Expires.
        assert!(
            !parse_set_cookie("a=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=10")
                .unwrap()
                .delete
        );
    }

    #[test]
    fn cookie_dates() {
        assert_eq!(parse_cookie_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_cookie_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_cookie_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_cookie_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_cookie_date("Wed, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(parse_cookie_date("never"), None);
        assert_eq!(parse_cookie_date("Thu, 01 Jan 1970 25:00:00 GMT"), None);
    }

    #[test]
    fn jar_stores_replaces_deletes_and_writes_header() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        headers.append(SET_COOKIE, HeaderValue::from_static("b=2"));
        let mut jar = CookieJar::new();
        jar.store_from(&headers);
        assert_eq!(jar.len(), 2);
        let mut out = String::new();
        assert!(jar.write_header(&mut out));
        assert_eq!(out, "a=1; b=2");

        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("a=3"));
        headers.append(SET_COOKIE, HeaderValue::from_static("b=; Max-Age=0"));
        jar.store_from(&headers);
        assert_eq!(jar.get("a"), Some("3"));
        assert_eq!(jar.get("b"), None);

        let mut out = String::from("user=x");
        jar.write_header(&mut out);
        assert_eq!(out, "user=x; a=3");

        jar.clear();
        assert!(jar.is_empty());
        let mut out = String::new();
        assert!(!jar.write_header(&mut out));
    }
}
