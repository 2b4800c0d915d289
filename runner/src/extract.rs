//! What a step keeps of a response, and taking values out of it: JSON path, header, cookie and
//! regex extractors.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, SET_COOKIE};
use serde_json::Value;
use serde_json_path::JsonPath;
use volley_core::validate::REGEX_SIZE_LIMIT;
use volley_crds::spec;

use crate::cookies::parse_set_cookie;
use crate::render::TemplateCompiler;
use crate::step_error::StepError;

/// How much of a response body is kept in memory for checks, extraction and polling. Bytes
/// beyond it are still read (and counted) but dropped; a JSON body cut short this way no
/// longer parses, so JSON paths into it find nothing.
pub(crate) const BODY_CAP: usize = 4 << 20;

/// A complete response as a step sees it.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body up to [`BODY_CAP`]; empty when the step needs no body.
    pub(crate) body: Vec<u8>,
    /// More bytes arrived than `body` holds.
    pub(crate) truncated: bool,
    /// The body parsed as JSON, on first use.
    json: OnceCell<Option<Value>>,
}

impl Received {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
        truncated: bool,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            truncated,
            json: OnceCell::new(),
        }
    }

    /// The body as JSON; `None` if it is not JSON (or was cut at [`BODY_CAP`]). Parsed once
    /// per response however many checks and extractors use it.
    pub(crate) fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                if self.truncated {
                    None
                } else {
                    serde_json::from_slice(&self.body).ok()
                }
            })
            .as_ref()
    }

    /// The first node `path` selects in the JSON body.
    pub(crate) fn json_first(&self, path: &JsonPath) -> Option<&Value> {
        path.query(self.json()?).first()
    }
}

/// A JSON value as text: strings without quotes, anything else as compact JSON.
pub(crate) fn json_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Compiles a JSON path found at `field`.
pub(crate) fn compile_json_path(
    path: &str,
    field: &str,
    compiler: &TemplateCompiler<'_>,
) -> Result<JsonPath, StepError> {
    JsonPath::parse(path).map_err(|e| {
        compiler.invalid(
            field,
            format!("`{path}` is not a valid JSON path ({e}); write e.g. $.token or $.items[0].id"),
        )
    })
}

/// Compiles a regular expression found at `field`, over bytes (bodies need not be UTF-8).
pub(crate) fn compile_regex(
    pattern: &str,
    field: &str,
    compiler: &TemplateCompiler<'_>,
) -> Result<regex::bytes::Regex, StepError> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| compiler.invalid(field, format!("not a valid regular expression: {e}")))
}

/// A compiled extractor.
#[derive(Clone, Debug)]
pub(crate) enum CompiledExtractor {
    /// First match of a JSON path in the body.
    JsonPath(JsonPath),
    /// A response header.
    Header(HeaderName),
    /// A cookie set by this response.
    Cookie(String),
    /// First capture group (or the whole match) of a regex over the body.
    Regex(regex::bytes::Regex),
}

impl CompiledExtractor {
    /// Compiles the extractor of value `name`.
    pub(crate) fn compile(
        name: &str,
        spec: &spec::Extractor,
        compiler: &TemplateCompiler<'_>,
    ) -> Result<CompiledExtractor, StepError> {
        Self::compile_at(&format!("extract.{name}"), spec, compiler)
    }

    /// Compiles every extractor of a step's `extract`, by name.
    pub(crate) fn compile_all(
        extract: &BTreeMap<String, spec::Extractor>,
        compiler: &TemplateCompiler<'_>,
    ) -> Result<Vec<(String, CompiledExtractor)>, StepError> {
        extract
            .iter()
            .map(|(name, spec)| Ok((name.clone(), Self::compile(name, spec, compiler)?)))
            .collect()
    }

    /// Compiles an extractor found at `field` (a step's `extract.NAME`, or the source of a
    /// custom metric).
    pub(crate) fn compile_at(
        field: &str,
        spec: &spec::Extractor,
        compiler: &TemplateCompiler<'_>,
    ) -> Result<CompiledExtractor, StepError> {
        let sources = [
            spec.json_path.is_some(),
            spec.header.is_some(),
            spec.cookie.is_some(),
            spec.regex.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(
                compiler.invalid(field, "set exactly one of jsonPath, header, cookie, regex")
            );
        }
        if let Some(path) = &spec.json_path {
            return compile_json_path(path, &format!("{field}.jsonPath"), compiler)
                .map(CompiledExtractor::JsonPath);
        }
        if let Some(header) = &spec.header {
            return HeaderName::from_bytes(header.as_bytes())
                .map(CompiledExtractor::Header)
                .map_err(|_| {
                    compiler.invalid(
                        &format!("{field}.header"),
                        format!("`{header}` is not a valid HTTP header name"),
                    )
                });
        }
        if let Some(cookie) = &spec.cookie {
            return Ok(CompiledExtractor::Cookie(cookie.clone()));
        }
        match &spec.regex {
            Some(pattern) => compile_regex(pattern, &format!("{field}.regex"), compiler)
                .map(CompiledExtractor::Regex),
            None => {
                Err(compiler.invalid(field, "set exactly one of jsonPath, header, cookie, regex"))
            }
        }
    }

    /// True when the extractor reads the body.
    pub(crate) fn needs_body(&self) -> bool {
        matches!(
            self,
            CompiledExtractor::JsonPath(_) | CompiledExtractor::Regex(_)
        )
    }

    /// The value, or `None` when the response does not have it.
    pub(crate) fn extract(&self, response: &Received) -> Option<String> {
        match self {
            CompiledExtractor::JsonPath(path) => {
                response.json_first(path).map(|v| json_text(v).into_owned())
            }
            CompiledExtractor::Header(name) => response
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            CompiledExtractor::Cookie(name) => response
                .headers
                .get_all(SET_COOKIE)
                .iter()
                .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                .filter_map(parse_set_cookie)
                .rfind(|c| c.name == name)
                .filter(|c| !c.delete)
                .map(|c| c.value.to_string()),
            CompiledExtractor::Regex(re) => {
                let captures = re.captures(&response.body)?;
                let m = captures.get(1).or_else(|| captures.get(0))?;
                Some(String::from_utf8_lossy(m.as_bytes()).into_owned())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn no_env(_: &str) -> Result<String, std::env::VarError> {
        Err(std::env::VarError::NotPresent)
    }

    fn extractor(spec: spec::Extractor) -> Result<CompiledExtractor, StepError> {
        let c = TemplateCompiler::new("s", &no_env);
        CompiledExtractor::compile("x", &spec, &c)
    }

    fn response(body: &str) -> Received {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("rid-9"));
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("csrf_token=c1; Path=/"),
        );
        headers.append(SET_COOKIE, HeaderValue::from_static("gone=; Max-Age=0"));
        Received::new(StatusCode::OK, headers, body.as_bytes().to_vec(), false)
    }

    #[test]
    fn every_source() {
        let r = response(r#"{"token":"t-1","items":[{"id":42,"tags":["a"]}],"ok":true}"#);
        let cases = [
            (
                spec::Extractor {
                    json_path: Some("$.token".into()),
                    ..Default::default()
                },
                Some("t-1"),
            ),
            (
                spec::Extractor {
                    json_path: Some("$.items[0].id".into()),
                    ..Default::default()
                },
                Some("42"),
            ),
            (
                spec::Extractor {
                    json_path: Some("$.items[0].tags".into()),
                    ..Default::default()
                },
                Some(r#"["a"]"#),
            ),
            (
                spec::Extractor {
                    json_path: Some("$.ok".into()),
                    ..Default::default()
                },
                Some("true"),
            ),
            (
                spec::Extractor {
                    json_path: Some("$.missing".into()),
                    ..Default::default()
                },
                None,
            ),
            (
                spec::Extractor {
                    header: Some("X-Request-Id".into()),
                    ..Default::default()
                },
                Some("rid-9"),
            ),
            (
                spec::Extractor {
                    header: Some("x-none".into()),
                    ..Default::default()
                },
                None,
            ),
            (
                spec::Extractor {
                    cookie: Some("csrf_token".into()),
                    ..Default::default()
                },
                Some("c1"),
            ),
            (
                spec::Extractor {
                    cookie: Some("gone".into()),
                    ..Default::default()
                },
                None,
            ),
            (
                spec::Extractor {
                    regex: Some(r#""token":"([^"]+)""#.into()),
                    ..Default::default()
                },
                Some("t-1"),
            ),
            (
                spec::Extractor {
                    regex: Some(r"t-\d".into()),
                    ..Default::default()
                },
                Some("t-1"),
            ),
            (
                spec::Extractor {
                    regex: Some("nomatch".into()),
                    ..Default::default()
                },
                None,
            ),
        ];
        for (spec, want) in cases {
            let ex = extractor(spec.clone()).unwrap();
            assert_eq!(ex.extract(&r).as_deref(), want, "{spec:?}");
        }
    }

    #[test]
    fn not_json_or_truncated_finds_nothing() {
        let ex = extractor(spec::Extractor {
            json_path: Some("$.a".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ex.extract(&response("<html>")), None);
        let mut r = response(r#"{"a":1}"#);
        r.truncated = true;
        assert_eq!(ex.extract(&r), None);
    }

    #[test]
    fn compile_errors_name_the_field() {
        for (spec, needle) in [
            (spec::Extractor::default(), "extract.x: set exactly one"),
            (
                spec::Extractor {
                    header: Some("a".into()),
                    cookie: Some("b".into()),
                    ..Default::default()
                },
                "extract.x: set exactly one",
            ),
            (
                spec::Extractor {
                    json_path: Some("token".into()),
                    ..Default::default()
                },
                "extract.x.jsonPath",
            ),
            (
                spec::Extractor {
                    regex: Some("(".into()),
                    ..Default::default()
                },
                "extract.x.regex",
            ),
            (
                spec::Extractor {
                    header: Some("bad header".into()),
                    ..Default::default()
                },
                "extract.x.header",
            ),
        ] {
            let msg = extractor(spec).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
