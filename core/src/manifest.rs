//! Reading a LoadTest manifest from YAML, with errors that name the field and the line.
//!
//! Unknown keys are reported instead of silently dropped (a typo like `maxVus` would otherwise
//! run a test without its VU cap). The types themselves do not deny unknown fields, so an
//! operator reading objects written by a newer CRD keeps working.

use serde::de::DeserializeSeed as _;
use volley_crds::spec::LoadTest;
use volley_crds::text::shorten;

/// API version of the LoadTest resource.
pub const API_VERSION: &str = "volley.dev/v1alpha1";
/// Kind of the LoadTest resource.
pub const KIND: &str = "LoadTest";
/// Largest manifest accepted (the API server's own limit on an object is about 1.5 MiB).
pub const MAX_MANIFEST_BYTES: usize = 3 * 1024 * 1024;
/// Most unknown fields listed in one error; a hostile manifest can have hundreds of thousands.
pub const MAX_UNKNOWN_FIELDS_LISTED: usize = 20;
/// Longest field path quoted in an error (a path through a deeply nested JSON body, or through
/// a megabyte-long key, would otherwise be the whole error).
const MAX_PATH_CHARS: usize = 200;

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid YAML, or a value of the wrong type.
    #[error("{path}: {message}{}", location(.line, .column))]
    Invalid {
        /// Field path, e.g. `spec.scenarios[0].rate` (`.` when the document itself is wrong).
        path: String,
        /// What is wrong.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
    },
    /// Keys that no LoadTest field has: at most [`MAX_UNKNOWN_FIELDS_LISTED`] of them, each
    /// path shortened; a last entry `… and N more` counts the rest.
    #[error("unknown field{} {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    UnknownFields(Vec<String>),
    /// The document is not a `volley.dev/v1alpha1` LoadTest.
    #[error("{0}")]
    WrongKind(String),
    /// Several values of the wrong type, each an [`ManifestError::Invalid`] at its own line
    /// and column, in document order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ManifestError>),
    /// The file is too large to be a LoadTest.
    #[error("the manifest is {0} bytes; a LoadTest is at most {MAX_MANIFEST_BYTES} bytes")]
    TooLarge(usize),
}

fn location(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

/// Most YAML documents one file may hold.
pub const MAX_DOCUMENTS: usize = 100;

/// The YAML documents of a file (split at `---` lines), each as text that keeps the file's
/// line numbers: the lines before it are blank, so an error's line is the file's line. Empty
/// documents (only comments or whitespace) are left out; `None` when there are more than
/// [`MAX_DOCUMENTS`].
pub fn documents(yaml: &str) -> Option<Vec<String>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    let mut finish = |text: &mut String, has_content: bool| {
        if has_content {
            docs.push(std::mem::take(text));
        }
        text.clear();
        docs.len() <= MAX_DOCUMENTS
    };
    for (i, line) in yaml.split_inclusive('\n').enumerate() {
        let marker = line
            .strip_prefix("---")
            .filter(|rest| rest.trim().is_empty() || rest.starts_with([' ', '\t']));
        if let Some(rest) = marker {
            if !finish(&mut current, has_content) {
                return None;
            }
            has_content = false;
            current.push_str(&"\n".repeat(i));
            // `--- {a: 1}` starts a document on the marker's line.
            current.push_str("   ");
            current.push_str(rest);
        } else {
            current.push_str(line);
        }
        let content = line.trim_start_matches("---");
        if !content.trim().is_empty() && !content.trim_start().starts_with('#') {
            has_content = true;
        }
    }
    if !finish(&mut current, has_content) {
        return None;
    }
    Some(docs)
}

/// Parses one LoadTest from the bytes of a file: like [`parse_manifest`], and text that is not
/// UTF-8 is an error giving the line and column of the first bad byte (instead of an I/O
/// error that says neither).
pub fn parse_manifest_bytes(bytes: &[u8]) -> Result<LoadTest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_manifest(text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            Err(ManifestError::Invalid {
                path: ".".to_string(),
                message: format!(
                    "the manifest is not valid UTF-8 (byte {:#04x} at offset {})",
                    bytes[e.valid_up_to()],
                    e.valid_up_to()
                ),
                line: Some(line),
                column: Some(column),
            })
        }
    }
}

/// Parses one LoadTest from YAML (or JSON, which is YAML).
///
/// Checks `apiVersion` and `kind`, refuses duplicate keys anywhere (in a map such as `headers`
/// or a `json` body the last one would otherwise silently win), and reports unknown keys as
/// errors. Cross-field rules are [`crate::validate::validate`]'s job.
pub fn parse_manifest(yaml: &str) -> Result<LoadTest, ManifestError> {
    if yaml.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(yaml.len()));
    }
    // Editors on Windows start files with a byte-order mark, which YAML allows; the parser
    // would otherwise report it as a second document.
    let yaml = yaml.strip_prefix('\u{feff}').unwrap_or(yaml);
    check_flow_depth(yaml)?;
    check_header(yaml)?;
    let values = check_duplicate_keys(yaml)?;
    let mut unknown = Vec::new();
    let de = serde_norway::Deserializer::from_str(yaml);
    let mut record =
        |path: serde_ignored::Path<'_>| unknown.push(bracket_indexes(&path.to_string()));
    let ignored = serde_ignored::Deserializer::new(de, &mut record);
    let parsed: Result<LoadTest, _> = serde_path_to_error::deserialize(ignored);
    let lt = parsed.map_err(|first| type_errors(yaml, values, first))?;
    // `status` is the operator's to write; keys under it are not the author's typos.
    // apiVersion and kind were checked by `check_header`.
    unknown.retain(|p| !p.starts_with("status") && p != "apiVersion" && p != "kind");
    if !unknown.is_empty() {
        let more = unknown.len().saturating_sub(MAX_UNKNOWN_FIELDS_LISTED);
        unknown.truncate(MAX_UNKNOWN_FIELDS_LISTED);
        for p in &mut unknown {
            *p = shorten(p, MAX_PATH_CHARS);
        }
        if more > 0 {
            unknown.push(format!("… and {more} more"));
        }
        return Err(ManifestError::UnknownFields(unknown));
    }
    Ok(lt)
}

/// Most values of the wrong type reported for one manifest.
pub const MAX_TYPE_ERRORS: usize = 20;
/// Largest manifest whose type errors are all looked for: each one after the first costs a
/// few reads of the document, and a real LoadTest is a few kilobytes with a few hundred
/// values (aliases can make a small file hold many more).
const MAX_RECOVERY_BYTES: usize = 256 * 1024;
/// Most values (as [`MAX_MANIFEST_VALUES`] counts them) of a manifest whose type errors are all
/// looked for.
const MAX_RECOVERY_VALUES: usize = 20_000;

/// Every value of the wrong type, not only the `first` that serde stopped at, each at its own
/// line and column (serde places an error in a flow mapping at the mapping's `{`). `values`
/// is how many values the document holds.
///
/// serde stops at the first error, so the document is read again as a YAML tree with each bad
/// value replaced by one of the right type (a stand-in found by trying a few), until it reads or
/// [`MAX_TYPE_ERRORS`] are found. A value no stand-in fixes (a mapping that should be a
/// different mapping) ends the search there.
fn type_errors(
    yaml: &str,
    values: usize,
    first: serde_path_to_error::Error<serde_norway::Error>,
) -> ManifestError {
    let first_path: Vec<Segment> = first.path().iter().cloned().collect();
    let mut found = vec![located(yaml, &first_path, path_error(first))];
    if yaml.len() <= MAX_RECOVERY_BYTES
        && values <= MAX_RECOVERY_VALUES
        && let Ok(mut tree) = serde_norway::from_str::<serde_norway::Value>(yaml)
    {
        let mut at = first_path;
        let mut message = message_of(&found[0]);
        while found.len() < MAX_TYPE_ERRORS {
            let Some(next) = stand_in(&mut tree, &at, &message) else {
                break;
            };
            let Err(e) = next else { break };
            let path: Vec<Segment> = e.path().iter().cloned().collect();
            let error = path_error(e);
            if found.iter().any(|f| same_path(f, &error)) {
                break;
            }
            message = message_of(&error);
            found.push(located(yaml, &path, error));
            at = path;
        }
    }
    if found.len() == 1 {
        found.remove(0)
    } else {
        ManifestError::Several(found)
    }
}

type Segment = serde_path_to_error::Segment;
type Reread = Result<LoadTest, serde_path_to_error::Error<serde_norway::Error>>;

/// Replaces the bad value at `at` in `tree` (adds it, when `message` says it is missing) with
/// the first stand-in after which the document reads or fails elsewhere; that reading. `None`
/// when no stand-in does.
fn stand_in(tree: &mut serde_norway::Value, at: &[Segment], message: &str) -> Option<Reread> {
    use serde_norway::Value;
    let mut at = at.to_vec();
    if let Some(name) = quoted_after(message, "missing field `") {
        at.push(Segment::Map { key: name });
    }
    let mut candidates = Vec::new();
    // `unknown variant `x`, expected one of `a`, `b``: the first allowed value.
    if let Some(allowed) =
        quoted_after(message, "expected one of `").or_else(|| quoted_after(message, "expected `"))
    {
        candidates.push(Value::String(allowed));
    }
    candidates.extend([
        Value::String("1s".into()),
        Value::Number(1.into()),
        Value::String("x".into()),
        Value::Bool(true),
        Value::Mapping(serde_norway::Mapping::new()),
        Value::Sequence(Vec::new()),
        Value::Null,
    ]);
    for candidate in candidates {
        let mut patched = tree.clone();
        if !put(&mut patched, &at, candidate) {
            return None;
        }
        let reread: Reread = serde_path_to_error::deserialize(patched.clone());
        let still_here = reread.as_ref().err().is_some_and(|e| {
            let path: Vec<Segment> = e.path().iter().cloned().collect();
            same_segments(&path, &at) || same_segments(&path, &at[..at.len().saturating_sub(1)])
        });
        if !still_here {
            *tree = patched;
            return Some(reread);
        }
    }
    None
}

/// Sets the value at `at` (adding the last key to its mapping when missing); false when the
/// path does not lead there.
fn put(tree: &mut serde_norway::Value, at: &[Segment], value: serde_norway::Value) -> bool {
    let Some((last, parents)) = at.split_last() else {
        return false;
    };
    let mut node = tree;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => node.as_mapping_mut().and_then(|m| m.get_mut(key.as_str())),
            Segment::Seq { index } => node.as_sequence_mut().and_then(|s| s.get_mut(*index)),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match last {
        Segment::Map { key } => match node.as_mapping_mut() {
            Some(m) => {
                m.insert(serde_norway::Value::String(key.clone()), value);
                true
            }
            None => false,
        },
        Segment::Seq { index } => match node.as_sequence_mut().and_then(|s| s.get_mut(*index)) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn same_segments(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Map { key: k1 }, Segment::Map { key: k2 }) => k1 == k2,
            (Segment::Seq { index: i1 }, Segment::Seq { index: i2 }) => i1 == i2,
            _ => false,
        })
}

fn same_path(a: &ManifestError, b: &ManifestError) -> bool {
    match (a, b) {
        (ManifestError::Invalid { path: p1, .. }, ManifestError::Invalid { path: p2, .. }) => {
            p1 == p2
        }
        _ => false,
    }
}

fn message_of(e: &ManifestError) -> String {
    match e {
        ManifestError::Invalid { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// The text between `prefix` and the next backtick in `message`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// `error` placed at the line and column of the value at `path` in `yaml`, where it has one.
fn located(yaml: &str, path: &[Segment], error: ManifestError) -> ManifestError {
    match (error, locate(yaml, path)) {
        (
            ManifestError::Invalid {
                path: p, message, ..
            },
            Some((line, column)),
        ) => ManifestError::Invalid {
            path: p,
            message,
            line: Some(line),
            column: Some(column),
        },
        (error, _) => error,
    }
}

/// The line and column of the value at `path`: the document is walked until that value,
/// which answers with an error, and the YAML parser places an error at the value it was
/// raised in.
fn locate(yaml: &str, path: &[Segment]) -> Option<(usize, usize)> {
    if path.is_empty() {
        return None;
    }
    let de = serde_norway::Deserializer::from_str(yaml);
    let e = Locate { path }.deserialize(de).err()?;
    if e.to_string().contains(HERE) {
        e.location().map(|l| (l.line(), l.column()))
    } else {
        None
    }
}

const HERE: &str = "volley: the value looked for";

/// Walks down `path`, ignoring everything beside it; at its end, fails with [`HERE`].
struct Locate<'p> {
    path: &'p [Segment],
}

impl<'de> serde::de::DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(serde::de::Error::custom(HERE));
        };
        let Segment::Seq { index } = first else {
            return Ok(());
        };
        let mut i = 0;
        while i < *index {
            if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
        seq.next_element_seed(Locate { path: rest })?;
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(serde::de::Error::custom(HERE));
        };
        let Segment::Map { key: wanted } = first else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<serde_norway::Value>()? {
            if key.as_str() == Some(wanted.as_str()) {
                return map.next_value_seed(Locate { path: rest });
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

impl Locate<'_> {
    /// A scalar: the place when the path ends here.
    fn leaf<E: serde::de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(HERE))
        } else {
            Ok(())
        }
    }
}

fn path_error(e: serde_path_to_error::Error<serde_norway::Error>) -> ManifestError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let loc = inner.location();
    let message = strip_location(&inner.to_string());
    let message = shorten(&strip_path_prefix(&message, &path), 400);
    ManifestError::Invalid {
        path: shorten(&path, MAX_PATH_CHARS),
        message,
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
    }
}

/// Most values (scalars, lists and maps, counting every expansion of a YAML alias) a manifest
/// may hold. Without aliases a 3 MiB manifest holds at most about 1.5 million; a real LoadTest
/// holds a few hundred. The YAML parser's own alias limit counts jumps, not what they expand
/// to, so 100 000 aliases of a 1 000-item list (half a megabyte of YAML) would otherwise
/// become 100 million values.
pub const MAX_MANIFEST_VALUES: usize = 1_000_000;

/// Walks the whole document once, following aliases, and fails on the first mapping with a
/// key written twice, or once the document expands past [`MAX_MANIFEST_VALUES`].
///
/// Struct fields get serde's own "duplicate field" error, but maps (`headers`, `labels`, a
/// `json` body, ...) keep the last value without a word, so `{X-Env: prod, X-Env: staging}`
/// would quietly test staging.
fn check_duplicate_keys(yaml: &str) -> Result<usize, ManifestError> {
    let de = serde_norway::Deserializer::from_str(yaml);
    let mut track = serde_path_to_error::Track::new();
    let values = std::cell::Cell::new(0);
    let walked = Walk {
        values: &values,
        key: false,
    }
    .deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
    walked
        .map(|_| values.get())
        .map_err(|e| path_error(serde_path_to_error::Error::new(track.path(), e)))
}

/// Any YAML value, checked for duplicate mapping keys at every level. Walking a mapping key
/// (`key`) answers the key as text, to compare with the others (`None` for a list or mapping
/// used as a key); walking anything else answers `None`.
#[derive(Clone, Copy)]
struct Walk<'a> {
    /// Values seen so far.
    values: &'a std::cell::Cell<usize>,
    /// This value is a mapping key.
    key: bool,
}

impl Walk<'_> {
    fn count<E: serde::de::Error>(self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_MANIFEST_VALUES {
            return Err(E::custom(format!(
                "the manifest expands to more than {MAX_MANIFEST_VALUES} values (through YAML aliases?)"
            )));
        }
        Ok(())
    }

    /// A scalar: counted, and its text when it is a key.
    fn scalar<E: serde::de::Error>(
        self,
        text: impl FnOnce() -> String,
    ) -> Result<Option<String>, E> {
        self.count()?;
        Ok(self.key.then(text))
    }

    /// The same walk for a value inside this one.
    fn inner(self, key: bool) -> Self {
        Walk { key, ..self }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.key {
            "a mapping key"
        } else {
            "any YAML value"
        })
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.scalar(|| v.to_string())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(|| "null".to_string())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        self.count()?;
        while seq.next_element_seed(self.inner(false))?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.count()?;
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key_seed(self.inner(true))? {
            if let Some(key) = key
                && !seen.insert(key.clone())
            {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{}`: each key may appear once (otherwise the last one would silently win)",
                    shorten(&key, 60)
                )));
            }
            map.next_value_seed(self.inner(false))?;
        }
        Ok(None)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, e: A) -> Result<Self::Value, A::Error> {
        // A tagged value such as `!Thing {...}`.
        use serde::de::VariantAccess as _;
        let (serde::de::IgnoredAny, variant) = e.variant()?;
        variant
            .newtype_variant_seed(self.inner(false))
            .map(|_| None)
    }
}

/// Deepest nesting of `[...]` and `{...}` accepted. Deserializing stops at 128 levels anyway;
/// the YAML scanner, though, spends time proportional to the nesting depth on every token, so
/// 3 MiB of `[` would take hours to refuse.
pub const MAX_FLOW_DEPTH: usize = 200;

/// Refuses flow nesting deeper than [`MAX_FLOW_DEPTH`] before the YAML parser sees it.
///
/// The count errs on the high side: an opening bracket always counts (even where it might be
/// text), a closing one only outside quotes and comments. Any character that may start a quoted
/// scalar is taken to start one, so text cannot hide closing brackets from the count.
fn check_flow_depth(yaml: &str) -> Result<(), ManifestError> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut state = In::Plain;
    let mut depth: usize = 0;
    let mut prev = '\n'; // last character outside quotes, whitespace included
    let mut prev_solid = '\n'; // last one that was not whitespace
    let mut escaped = false;
    let (mut line, mut column) = (1, 0);
    for c in yaml.chars() {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        if c == '[' || c == '{' {
            depth += 1;
            if depth > MAX_FLOW_DEPTH {
                return Err(ManifestError::Invalid {
                    path: ".".to_string(),
                    message: format!(
                        "brackets are nested more than {MAX_FLOW_DEPTH} levels deep; nothing in a LoadTest nests that deep"
                    ),
                    line: Some(line),
                    column: Some(column),
                });
            }
        }
        match state {
            In::Single => {
                if c == '\'' {
                    state = In::Plain;
                }
                continue;
            }
            In::Double => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    state = In::Plain;
                }
                continue;
            }
            In::Comment => {
                if c == '\n' {
                    state = In::Plain;
                }
                continue;
            }
            In::Plain => {}
        }
        let token_start = prev.is_whitespace() || "[{,:?-".contains(prev_solid);
        match c {
            '\'' if token_start => state = In::Single,
            '"' if token_start => state = In::Double,
            '#' if prev.is_whitespace() => state = In::Comment,
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
        if !c.is_whitespace() {
            prev_solid = c;
        }
    }
    Ok(())
}

/// Checks apiVersion and kind first, so a Deployment fed to `volley validate` gets "this is a
/// Deployment" rather than a complaint about a missing `spec.target`.
fn check_header(yaml: &str) -> Result<(), ManifestError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Header {
        api_version: Option<String>,
        kind: Option<String>,
    }
    let header: Header = match serde_norway::from_str(yaml) {
        Ok(h) => h,
        Err(e) => {
            let loc = e.location();
            return Err(ManifestError::Invalid {
                path: ".".to_string(),
                // The header struct is ours, not the author's: say what a manifest is instead.
                message: strip_location(&e.to_string()).replace(
                    "struct Header",
                    "a LoadTest (a mapping with apiVersion, kind, metadata and spec)",
                ),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
            });
        }
    };
    match (header.api_version.as_deref(), header.kind.as_deref()) {
        (Some(API_VERSION), Some(KIND)) => Ok(()),
        (None, _) | (_, None) => Err(ManifestError::WrongKind(format!(
            "the manifest needs `apiVersion: {API_VERSION}` and `kind: {KIND}`"
        ))),
        (Some(v), Some(k)) => Err(ManifestError::WrongKind(format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, found apiVersion {v} and kind {k}"
        ))),
    }
}

/// serde_ignored writes `spec.scenarios.0.maxVus`; validation errors write `spec.scenarios[0]`.
fn bracket_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, segment) in path.split('.').enumerate() {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// serde_norway prefixes some messages with its own (sometimes shorter) view of the path;
/// `path` already says where, so the prefix only repeats it.
fn strip_path_prefix(message: &str, path: &str) -> String {
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.is_empty()
        && path.starts_with(prefix)
    {
        return rest.to_string();
    }
    message.to_string()
}

/// serde_norway appends "at line L column C" to messages; the error carries those separately.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: smoke}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  scenarios:
    - name: s
      executor: constant-vus
      vus: 1
      duration: 1s
      steps: [{request: {url: /health}}]
"#;

    #[test]
    fn documents_keep_the_files_line_numbers() {
        let yaml = "# head\na: 1\n---\nb: 2\n--- {c: 3}\n---\n# only a comment\n";
        let docs = documents(yaml).unwrap();
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert_eq!(docs[0], "# head\na: 1\n");
        assert_eq!(docs[1], "\n\n   \nb: 2\n");
        assert_eq!(docs[2], "\n\n\n\n    {c: 3}\n");
        assert_eq!(documents("").unwrap().len(), 0);
        assert!(documents(&"---\na: 1\n".repeat(MAX_DOCUMENTS + 1)).is_none());
    }

    #[test]
    fn every_type_error_is_reported_at_its_value() {
        let yaml = MINIMAL
            .replace("vus: 1", "vus: many")
            .replace("duration: 1s", "duration: 1y")
            .replace("executor: constant-vus", "executor: constant-vu");
        let Err(ManifestError::Several(errors)) = parse_manifest(&yaml) else {
            panic!("{:?}", parse_manifest(&yaml));
        };
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("spec.scenarios[0].executor: unknown variant `constant-vu`"));
        assert!(got[0].ends_with("(line 9, column 17)"), "{}", got[0]);
        assert!(
            got[1].starts_with("spec.scenarios[0].vus: invalid type"),
            "{}",
            got[1]
        );
        assert!(got[1].ends_with("(line 10, column 12)"), "{}", got[1]);
        assert!(got[2].starts_with("spec.scenarios[0].duration: invalid duration `1y`"));
        assert!(got[2].ends_with("(line 11, column 17)"), "{}", got[2]);
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let lt = parse_manifest(MINIMAL).unwrap();
        assert_eq!(lt.metadata.name.as_deref(), Some("smoke"));
        assert_eq!(lt.spec.target.timeout.to_string(), "30s");
        assert_eq!(lt.spec.runners.parallelism, 1);
        assert_eq!(lt.spec.scenarios[0].graceful_stop.to_string(), "30s");
        let req = lt.spec.scenarios[0].steps[0].request.as_ref().unwrap();
        assert_eq!(req.method, "GET");
    }

    #[test]
    fn wrong_type_names_the_field_and_line() {
        let yaml = MINIMAL.replace("vus: 1", "vus: lots");
        let err = parse_manifest(&yaml).unwrap_err();
        match &err {
            ManifestError::Invalid { path, line, .. } => {
                assert_eq!(path, "spec.scenarios[0].vus");
                assert_eq!(*line, Some(10));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("spec.scenarios[0].vus: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_names_the_field() {
        let yaml = MINIMAL.replace("duration: 1s", "duration: -1s");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].duration"), "{err}");
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn unknown_executor_lists_the_valid_ones() {
        let yaml = MINIMAL.replace("constant-vus", "constant-users");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].executor"), "{err}");
        assert!(err.contains("ramping-arrival-rate"), "{err}");
    }

    #[test]
    fn typos_are_reported_as_unknown_fields() {
        let yaml = MINIMAL.replace("vus: 1", "vus: 1\n      maxVus: 3");
        let err = parse_manifest(&yaml).unwrap_err();
        assert_eq!(
            err,
            ManifestError::UnknownFields(vec!["spec.scenarios[0].maxVus".into()])
        );
    }

    #[test]
    fn missing_required_field() {
        let yaml = MINIMAL.replace("      steps: [{request: {url: /health}}]\n", "");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0]"), "{err}");
        assert!(err.contains("missing field `steps`"), "{err}");
    }

    #[test]
    fn other_kinds_are_named() {
        let err = parse_manifest("apiVersion: apps/v1\nkind: Deployment\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("found apiVersion apps/v1 and kind Deployment")
        );
        let err = parse_manifest("spec: {}\n").unwrap_err();
        assert!(err.to_string().contains("needs `apiVersion"));
    }

    #[test]
    fn broken_yaml_has_a_line() {
        let err = parse_manifest("apiVersion: [\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Invalid { line: Some(_), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn threshold_and_sleep_forms() {
        let yaml = MINIMAL.replace(
            "steps: [{request: {url: /health}}]",
            "steps: [{request: {url: /health}}, {sleep: 1s}, {sleep: {min: 1s, max: 3s}}]\n  thresholds: [\"p(95) < 500ms\", {expr: \"error_rate < 1%\", scenario: s, abortOnFail: true}]",
        );
        let lt = parse_manifest(&yaml).unwrap();
        assert_eq!(lt.spec.thresholds.len(), 2);
        assert!(lt.spec.thresholds[1].to_threshold().abort_on_fail);
        let bad = yaml.replace("{min: 1s, max: 3s}", "{min: 1s, maxx: 3s}");
        let err = parse_manifest(&bad).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].steps[2].sleep"), "{err}");
        assert!(err.contains("maxx"), "{err}");
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let huge = "#".repeat(MAX_MANIFEST_BYTES + 1);
        assert!(matches!(
            parse_manifest(&huge),
            Err(ManifestError::TooLarge(_))
        ));
    }
}
