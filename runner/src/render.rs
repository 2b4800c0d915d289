//! Template rendering: `${...}` strings compiled once per run, rendered once per step execution.
//!
//! Strings are parsed with [`volley_core::template::Template`] at compile time. `${env:NAME}`
//! is resolved at compile time too — the environment does not change during a run, and
//! resolving early lets `volley run` report every unset variable before any load — and kept
//! as a redacted piece so its value never shows up in `Debug` output or logs. Everything else
//! (`${setup.x}`, `${x}`, `${feeder.column}`, `${uuid}`, `${vu}`, `${iteration}`, `${runner}`)
//! is looked up in the [`VuContext`] at render time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use reqwest::Url;
use reqwest::header::HeaderName;
use volley_core::target_policy::join_url;
use volley_core::template::{Reference, Segment, Template};

use crate::step_error::StepError;
use crate::vu::VuContext;

/// Where compile-time `${env:NAME}` values come from: the process environment in production,
/// a map in unit tests (editing the real environment is `unsafe` in edition 2024).
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

/// A header of a step, compiled: its name, its value's template and the field it came from
/// (for errors about the value).
pub(crate) struct HeaderText {
    pub(crate) name: HeaderName,
    pub(crate) text: Text,
    pub(crate) field: String,
}

/// Compile-time state shared by all templates of one step: which step (for error messages)
/// and which environment variables turned out to be unset, so they are reported together.
pub(crate) struct TemplateCompiler<'a> {
    pub(crate) step: &'a str,
    env: EnvLookup<'a>,
    pub(crate) missing_env: BTreeSet<String>,
}

impl<'a> TemplateCompiler<'a> {
    pub(crate) fn new(step: &'a str, env: EnvLookup<'a>) -> Self {
        Self {
            step,
            env,
            missing_env: BTreeSet::new(),
        }
    }

    /// An error about `field` of this step.
    pub(crate) fn invalid(&self, field: &str, message: impl Into<String>) -> StepError {
        StepError::Invalid {
            step: self.step.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The URL of a step whose `url` (`url_text`, the value of `field`) has no per-execution
    /// reference: `base` joined with it and checked by `parse` (which names the schemes the
    /// step speaks); `None` when it is rendered per execution.
    pub(crate) fn static_url(
        &self,
        base: &str,
        url_text: &Text,
        field: &str,
        parse: fn(&str) -> Result<Url, String>,
    ) -> Result<Option<Url>, StepError> {
        let Some(path) = url_text.static_value() else {
            return Ok(None);
        };
        parse(&join_url(base, &path)).map(Some).map_err(|why| {
            // The text holds the values of its `${env:...}` (e.g. a password with a `/` in
            // `https://user:${env:PW}@host/`), which must not reach the message.
            let why = if url_text.has_secret() {
                "not a valid URL once its ${env:...} values are filled in (the URL is not \
                 shown, as it holds them)"
                    .to_string()
            } else {
                why
            };
            self.invalid(field, why)
        })
    }

    /// The target's headers, then the step's (`step_field` names where they come from): each
    /// name checked and each value compiled, a step header replacing a target header of the
    /// same name whatever the case, in first-seen order.
    pub(crate) fn header_texts(
        &mut self,
        target: &BTreeMap<String, String>,
        step: &BTreeMap<String, String>,
        step_field: &str,
    ) -> Result<Vec<HeaderText>, StepError> {
        let mut headers: Vec<HeaderText> = Vec::new();
        let sources = target
            .iter()
            .map(|(n, v)| (n, v, "target.headers"))
            .chain(step.iter().map(|(n, v)| (n, v, step_field)));
        for (name, value, prefix) in sources {
            let field = format!("{prefix}.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.invalid(&field, "not a valid HTTP header name"))?;
            let text = self.text(value, &field)?;
            let compiled = HeaderText {
                name: header,
                text,
                field,
            };
            match headers.iter_mut().find(|h| h.name == compiled.name) {
                Some(slot) => *slot = compiled,
                None => headers.push(compiled),
            }
        }
        Ok(headers)
    }

    /// Parses `source` (the value of `field`) and resolves its `${env:...}` references.
    pub(crate) fn text(&mut self, source: &str, field: &str) -> Result<Text, StepError> {
        let template = Template::parse(source).map_err(|e| self.invalid(field, e.message))?;
        let mut pieces = Vec::with_capacity(template.segments.len());
        for segment in template.segments {
            match segment {
                Segment::Literal(text) => pieces.push(Piece::Literal(text)),
                Segment::Ref(Reference::Env(name)) => match (self.env)(&name) {
                    Ok(value) => pieces.push(Piece::Secret(value)),
                    Err(std::env::VarError::NotPresent) => {
                        self.missing_env.insert(name);
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(self.invalid(
                            field,
                            format!("environment variable {name} is not valid UTF-8"),
                        ));
                    }
                },
                Segment::Ref(reference) => pieces.push(Piece::Ref(reference)),
            }
        }
        Ok(Text { pieces })
    }
}

/// A compiled template string.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Text {
    pieces: Vec<Piece>,
}

#[derive(Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// The value of an `${env:NAME}`; never printed.
    Secret(String),
    Ref(Reference),
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => f.write_str(&text.replace("${", "$${"))?,
                Piece::Secret(_) => f.write_str("${env:<redacted>}")?,
                Piece::Ref(reference) => write!(f, "{reference}")?,
            }
        }
        f.write_str("\"")
    }
}

/// A reference with no value at render time: an extraction of an earlier step failed, or a
/// setup value or feeder column is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no value for {missing}")]
pub(crate) struct RenderError {
    /// The reference (printing it never shows a value).
    pub(crate) missing: Reference,
}

impl Text {
    /// True when every render yields the same text (env values count as fixed).
    pub(crate) fn is_static(&self) -> bool {
        !self.pieces.iter().any(|p| matches!(p, Piece::Ref(_)))
    }

    /// True when the text contains an environment value (headers built from it are then
    /// marked sensitive).
    pub(crate) fn has_secret(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Secret(_)))
    }

    /// The text of a static template; `None` if it has context references.
    pub(crate) fn static_value(&self) -> Option<String> {
        if !self.is_static() {
            return None;
        }
        let mut out = String::new();
        for piece in &self.pieces {
            if let Piece::Literal(s) | Piece::Secret(s) = piece {
                out.push_str(s);
            }
        }
        Some(out)
    }

    /// Appends the rendered text to `out`.
    pub(crate) fn render_into(&self, ctx: &VuContext, out: &mut String) -> Result<(), RenderError> {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) | Piece::Secret(s) => out.push_str(s),
                Piece::Ref(reference) => render_reference(reference, ctx, out)?,
            }
        }
        Ok(())
    }

    /// The rendered text.
    pub(crate) fn render(&self, ctx: &VuContext) -> Result<String, RenderError> {
        let mut out = String::new();
        self.render_into(ctx, &mut out)?;
        Ok(out)
    }
}

fn render_reference(
    reference: &Reference,
    ctx: &VuContext,
    out: &mut String,
) -> Result<(), RenderError> {
    let missing = || RenderError {
        missing: reference.clone(),
    };
    match reference {
        // Resolved at compile time; kept for completeness should a caller build a Text by hand.
        Reference::Env(_) => return Err(missing()),
        Reference::Setup(name) => out.push_str(ctx.setup.get(name).ok_or_else(missing)?),
        Reference::Extracted(name) => out.push_str(ctx.extracted.get(name).ok_or_else(missing)?),
        Reference::Feeder { feeder, column } => out.push_str(
            ctx.row
                .get(feeder)
                .and_then(|row| row.get(column))
                .ok_or_else(missing)?,
        ),
        Reference::Uuid => {
            let mut buf = uuid::Uuid::encode_buffer();
            out.push_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf));
        }
        // Writing to a String cannot fail.
        Reference::Vu => {
            let _ = write!(out, "{}", ctx.vu);
        }
        Reference::Iteration => {
            let _ = write!(out, "{}", ctx.iteration);
        }
        Reference::Runner => {
            let _ = write!(out, "{}", ctx.runner);
        }
    }
    Ok(())
}

/// A JSON body whose string values (at any depth) may be templates. Object keys are literal.
/// Subtrees without context references are serialized once at compile time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JsonText {
    /// Serialized JSON, copied as is.
    Raw(String),
    /// A string value rendered from a template, then JSON-escaped.
    Str(Text),
    /// An array.
    Array(Vec<JsonText>),
    /// An object: serialized keys (quotes included) and values.
    Object(Vec<(String, JsonText)>),
}

impl JsonText {
    /// Compiles a JSON value found at `field`.
    pub(crate) fn compile(
        value: &serde_json::Value,
        field: &str,
        compiler: &mut TemplateCompiler<'_>,
    ) -> Result<JsonText, StepError> {
        use serde_json::Value;
        let compiled = match value {
            Value::String(s) => JsonText::Str(compiler.text(s, field)?),
            Value::Array(items) => JsonText::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| JsonText::compile(item, &format!("{field}[{i}]"), compiler))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonText::Object(
                map.iter()
                    .map(|(k, v)| {
                        let mut key = String::with_capacity(k.len() + 2);
                        push_json_string(&mut key, k);
                        Ok((
                            key,
                            JsonText::compile(v, &format!("{field}.{k}"), compiler)?,
                        ))
                    })
                    .collect::<Result<_, StepError>>()?,
            ),
            Value::Null | Value::Bool(_) | Value::Number(_) => JsonText::Raw(value.to_string()),
        };
        Ok(compiled.fold_static())
    }

    /// Replaces subtrees without context references by their serialized text.
    fn fold_static(self) -> JsonText {
        if self.is_static() {
            let mut raw = String::new();
            self.write_static(&mut raw);
            JsonText::Raw(raw)
        } else {
            self
        }
    }

    fn is_static(&self) -> bool {
        match self {
            JsonText::Raw(_) => true,
            JsonText::Str(text) => text.is_static(),
            JsonText::Array(items) => items.iter().all(JsonText::is_static),
            JsonText::Object(fields) => fields.iter().all(|(_, v)| v.is_static()),
        }
    }

    fn write_static(&self, out: &mut String) {
        match self {
            JsonText::Raw(raw) => out.push_str(raw),
            JsonText::Str(text) => push_json_string(out, &text.static_value().unwrap_or_default()),
            JsonText::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_static(out);
                }
                out.push(']');
            }
            JsonText::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(key);
                    out.push(':');
                    value.write_static(out);
                }
                out.push('}');
            }
        }
    }

    /// The serialized body when it has no context references.
    pub(crate) fn static_value(&self) -> Option<&str> {
        match self {
            JsonText::Raw(raw) => Some(raw),
            _ => None,
        }
    }

    /// Appends the serialized, rendered JSON to `out`. `scratch` is reused for string values.
    pub(crate) fn render_into(
        &self,
        ctx: &VuContext,
        out: &mut String,
        scratch: &mut String,
    ) -> Result<(), RenderError> {
        match self {
            JsonText::Raw(raw) => out.push_str(raw),
            JsonText::Str(text) => {
                scratch.clear();
                text.render_into(ctx, scratch)?;
                push_json_string(out, scratch);
            }
            JsonText::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render_into(ctx, out, scratch)?;
                }
                out.push(']');
            }
            JsonText::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(key);
                    out.push(':');
                    value.render_into(ctx, out, scratch)?;
                }
                out.push('}');
            }
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string literal (quotes included), escaped per RFC 8259.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn env(name: &str) -> Result<String, std::env::VarError> {
        match name {
            "API_KEY" => Ok("s3cret".to_string()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    fn ctx() -> VuContext {
        let setup = Arc::new(BTreeMap::from([("token".to_string(), "tok".to_string())]));
        let mut ctx = VuContext::new(7, 2, setup);
        ctx.iteration = 41;
        ctx.extracted.insert("jobId".into(), "j-1".into());
        ctx.row.insert(
            "users".into(),
            Arc::new(BTreeMap::from([("email".to_string(), "a@b.c".to_string())])),
        );
        ctx
    }

    fn compile(source: &str) -> Text {
        let mut c = TemplateCompiler::new("s", &env);
        let text = c.text(source, "f").unwrap();
        assert!(c.missing_env.is_empty());
        text
    }

    #[test]
    fn renders_every_reference_kind() {
        let text = compile(
            "k=${env:API_KEY} t=${setup.token} j=${jobId} e=${users.email} vu=${vu} it=${iteration} r=${runner} $${lit}",
        );
        assert!(!text.is_static());
        assert!(text.has_secret());
        assert_eq!(
            text.render(&ctx()).unwrap(),
            "k=s3cret t=tok j=j-1 e=a@b.c vu=7 it=41 r=2 ${lit}"
        );
    }

    #[test]
    fn uuid_is_fresh_each_render() {
        let text = compile("${uuid}");
        let ctx = ctx();
        let a = text.render(&ctx).unwrap();
        let b = text.render(&ctx).unwrap();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn missing_values_name_the_reference() {
        let ctx = ctx();
        for (source, missing) in [
            ("${nope}", "${nope}"),
            ("${setup.nope}", "${setup.nope}"),
            ("${users.nope}", "${users.nope}"),
            ("${other.email}", "${other.email}"),
        ] {
            let err = compile(source).render(&ctx).unwrap_err();
            assert_eq!(err.missing.to_string(), missing);
        }
    }

    #[test]
    fn env_is_resolved_at_compile_time_and_redacted() {
        let mut c = TemplateCompiler::new("s", &env);
        let text = c.text("${env:API_KEY}", "f").unwrap();
        assert!(text.is_static());
        assert_eq!(text.static_value().as_deref(), Some("s3cret"));
        assert!(!format!("{text:?}").contains("s3cret"));
        c.text("${env:MISSING_B} ${env:MISSING_A}", "g").unwrap();
        assert_eq!(
            c.missing_env.iter().collect::<Vec<_>>(),
            ["MISSING_A", "MISSING_B"]
        );
    }

    #[test]
    fn bad_template_names_the_field() {
        let mut c = TemplateCompiler::new("login", &env);
        let err = c.text("/jobs/${id", "request.url").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("login") && msg.contains("request.url") && msg.contains("never closed"),
            "{msg}"
        );
    }

    #[test]
    fn json_bodies_render_strings_recursively() {
        let value = serde_json::json!({
            "email": "${users.email}",
            "n": 3,
            "nested": {"list": ["${vu}", true, null, "plain"], "quote": "say \"${jobId}\"\n"},
            "static": {"a": [1, 2]},
        });
        let mut c = TemplateCompiler::new("s", &env);
        let json = JsonText::compile(&value, "request.json", &mut c).unwrap();
        assert!(json.static_value().is_none());
        if let JsonText::Object(fields) = &json {
            let (_, stat) = fields.iter().find(|(k, _)| k == "\"static\"").unwrap();
            assert_eq!(stat, &JsonText::Raw("{\"a\":[1,2]}".into()));
        } else {
            panic!("expected an object");
        }
        let mut out = String::new();
        json.render_into(&ctx(), &mut out, &mut String::new())
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "email": "a@b.c",
                "n": 3,
                "nested": {"list": ["7", true, null, "plain"], "quote": "say \"j-1\"\n"},
                "static": {"a": [1, 2]},
            })
        );
    }

    #[test]
    fn static_json_is_serialized_once() {
        let value =
            serde_json::json!({"format": "webp", "key": "${env:API_KEY}", "q": [1, "\u{1}"]});
        let mut c = TemplateCompiler::new("s", &env);
        let json = JsonText::compile(&value, "request.json", &mut c).unwrap();
        let raw = json.static_value().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"format": "webp", "key": "s3cret", "q": [1, "\u{1}"]})
        );
    }

    fn http_only(text: &str) -> Result<Url, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
        match url.scheme() {
            "http" => Ok(url),
            other => Err(format!("`{text}` uses scheme `{other}`")),
        }
    }

    /// A static URL is joined and parsed once; a per-execution one is left for rendering; a
    /// bad one names the field, and hides the text when it holds an `${env:...}` value.
    #[test]
    fn static_urls_are_joined_parsed_and_never_leak_env_values() {
        let c = TemplateCompiler::new("s", &env);
        let url = c
            .static_url("http://h:1/api", &compile("/v1"), "request.url", http_only)
            .unwrap();
        assert_eq!(url.unwrap().as_str(), "http://h:1/api/v1");
        let dynamic = c.static_url("http://h:1", &compile("/u/${vu}"), "request.url", http_only);
        assert!(matches!(dynamic, Ok(None)));
        let bad = c
            .static_url("", &compile("ftp://h/x"), "request.url", http_only)
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("request.url") && bad.contains("scheme `ftp`"),
            "{bad}"
        );
        let secret = c
            .static_url(
                "",
                &compile("ftp://u:${env:API_KEY}@h/"),
                "websocket.url",
                http_only,
            )
            .unwrap_err()
            .to_string();
        assert!(secret.contains("websocket.url"), "{secret}");
        assert!(
            !secret.contains("s3cret") && !secret.contains("ftp"),
            "{secret}"
        );
    }

    /// Step headers replace target headers of the same name whatever the case, keep the
    /// target's position, and say which field the winning value came from.
    #[test]
    fn step_headers_replace_target_headers_by_name() {
        let mut c = TemplateCompiler::new("s", &env);
        let target = BTreeMap::from([
            ("Accept".to_string(), "text/plain".to_string()),
            ("X-Team".to_string(), "a".to_string()),
        ]);
        let step = BTreeMap::from([("accept".to_string(), "application/json".to_string())]);
        let headers = c.header_texts(&target, &step, "request.headers").unwrap();
        let got: Vec<_> = headers
            .iter()
            .map(|h| {
                (
                    h.name.as_str(),
                    h.text.static_value().unwrap(),
                    h.field.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "accept",
                    "application/json".to_string(),
                    "request.headers.accept"
                ),
                ("x-team", "a".to_string(), "target.headers.X-Team"),
            ]
        );
        let bad = BTreeMap::from([("bad name".to_string(), "v".to_string())]);
        let err = c
            .header_texts(&target, &bad, "websocket.headers")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("websocket.headers.bad name"), "{err}");
    }
}
