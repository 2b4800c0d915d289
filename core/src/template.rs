//! The `${...}` templates of step strings: parsed once into segments, so validation can check
//! every reference before a run and the engine can render without re-parsing.
//!
//! References: `${env:NAME}` (runner environment), `${setup.NAME}` (extracted in setup),
//! `${NAME}` (extracted earlier in the iteration), `${FEEDER.COLUMN}` (data feeder row),
//! and the built-ins `${uuid}`, `${vu}`, `${iteration}`, `${runner}`. `$${` is a literal `${`.

use std::fmt;

use volley_crds::text::shorten;

/// A parsed template: literal text and references, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The pieces, in order.
    pub segments: Vec<Segment>,
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is.
    Literal(String),
    /// A value looked up at render time.
    Ref(Reference),
}

/// What a `${...}` refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `${env:NAME}`: an environment variable of the runner.
    Env(String),
    /// `${setup.NAME}`: a value extracted by a setup step.
    Setup(String),
    /// `${NAME}`: a value extracted by an earlier step of the same iteration.
    Extracted(String),
    /// `${FEEDER.COLUMN}`: a column of the data feeder's current row.
    Feeder {
        /// Feeder name.
        feeder: String,
        /// Column name.
        column: String,
    },
    /// `${uuid}`: a fresh random UUID each time it is rendered.
    Uuid,
    /// `${vu}`: the VU's number, unique across runners.
    Vu,
    /// `${iteration}`: the VU's iteration counter.
    Iteration,
    /// `${runner}`: the runner's index.
    Runner,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Env(n) => write!(f, "${{env:{n}}}"),
            Reference::Setup(n) => write!(f, "${{setup.{n}}}"),
            Reference::Extracted(n) => write!(f, "${{{n}}}"),
            Reference::Feeder { feeder, column } => write!(f, "${{{feeder}.{column}}}"),
            Reference::Uuid => f.write_str("${uuid}"),
            Reference::Vu => f.write_str("${vu}"),
            Reference::Iteration => f.write_str("${iteration}"),
            Reference::Runner => f.write_str("${runner}"),
        }
    }
}

/// A template that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong, in a sentence.
    pub message: String,
}

/// Names usable in references: letters, digits, `_` and `-`, not starting with a digit.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Template {
    /// Parses `input`; text without `${` is a single literal.
    pub fn parse(input: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = input;
        while let Some(pos) = rest.find("${") {
            let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
            if escaped {
                literal.push_str(&rest[..pos - 1]);
                literal.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let Some(end) = after.find('}') else {
                return Err(TemplateError {
                    message: format!(
                        "`${{` at character {} is never closed with `}}`",
                        input.len() - rest.len() + pos
                    ),
                });
            };
            let reference = parse_reference(&after[..end])?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// The references, in order of appearance.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Literal(_) => None,
        })
    }

    /// True when rendering always yields the same text.
    pub fn is_static(&self) -> bool {
        self.references().next().is_none()
    }
}

fn parse_reference(body: &str) -> Result<Reference, TemplateError> {
    let trimmed = body.trim();
    let bad = |why: &str| TemplateError {
        message: format!(
            "`${{{}}}` is not a valid reference: {why}",
            shorten(body, 40)
        ),
    };
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(name) = trimmed.strip_prefix("env:") {
        return if is_env_name(name) {
            Ok(Reference::Env(name.to_string()))
        } else {
            Err(bad(
                "environment variable names are letters, digits and `_`, not starting with a digit",
            ))
        };
    }
    match trimmed {
        "uuid" => return Ok(Reference::Uuid),
        "vu" => return Ok(Reference::Vu),
        "iteration" => return Ok(Reference::Iteration),
        "runner" => return Ok(Reference::Runner),
        _ => {}
    }
    match trimmed.split_once('.') {
        Some((prefix, name)) => {
            if !is_identifier(prefix) || !is_identifier(name) {
                return Err(bad(
                    "expected `setup.NAME` or `FEEDER.COLUMN` with names made of letters, digits, `_` and `-`",
                ));
            }
            if prefix == "setup" {
                Ok(Reference::Setup(name.to_string()))
            } else {
                Ok(Reference::Feeder {
                    feeder: prefix.to_string(),
                    column: name.to_string(),
                })
            }
        }
        None if is_identifier(trimmed) => Ok(Reference::Extracted(trimmed.to_string())),
        None => Err(bad(
            "expected `env:NAME`, `setup.NAME`, `FEEDER.COLUMN`, an extracted name, or one of uuid, vu, iteration, runner",
        )),
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refs(s: &str) -> Vec<Reference> {
        Template::parse(s).unwrap().references().cloned().collect()
    }

    #[test]
    fn plain_text_is_one_literal() {
        let t = Template::parse("/api/items").unwrap();
        assert_eq!(t.segments, vec![Segment::Literal("/api/items".into())]);
        assert!(t.is_static());
        assert!(Template::parse("").unwrap().segments.is_empty());
    }

    #[test]
    fn every_reference_kind() {
        assert_eq!(
            refs(
                "${env:AUTH_EMAIL}${setup.token}${jobId}${users.email}${uuid}${vu}${iteration}${runner}"
            ),
            vec![
                Reference::Env("AUTH_EMAIL".into()),
                Reference::Setup("token".into()),
                Reference::Extracted("jobId".into()),
                Reference::Feeder {
                    feeder: "users".into(),
                    column: "email".into()
                },
                Reference::Uuid,
                Reference::Vu,
                Reference::Iteration,
                Reference::Runner,
            ]
        );
    }

    #[test]
    fn literals_and_refs_interleave() {
        let t = Template::parse("Bearer ${setup.token} for ${vu}!").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("Bearer ".into()),
                Segment::Ref(Reference::Setup("token".into())),
                Segment::Literal(" for ".into()),
                Segment::Ref(Reference::Vu),
                Segment::Literal("!".into()),
            ]
        );
    }

    #[test]
    fn dollar_dollar_escapes() {
        let t = Template::parse("cost: $${price} ${vu}").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("cost: ${price} ".into()),
                Segment::Ref(Reference::Vu)
            ]
        );
    }

    #[test]
    fn bad_references_say_why() {
        for (input, needle) in [
            ("${}", "empty"),
            ("${ }", "empty"),
            ("/jobs/${jobId", "never closed"),
            ("${env:}", "environment variable"),
            ("${env:1ABC}", "environment variable"),
            ("${foo bar}", "expected"),
            ("${a.b.c}", "FEEDER.COLUMN"),
            ("${.x}", "FEEDER.COLUMN"),
        ] {
            let err = Template::parse(input).unwrap_err();
            assert!(err.message.contains(needle), "{input}: {}", err.message);
        }
    }

    #[test]
    fn display_round_trips() {
        for r in refs("${env:A}${setup.b}${c}${d.e}${uuid}${vu}${iteration}${runner}") {
            assert_eq!(refs(&r.to_string()), vec![r]);
        }
    }
}
