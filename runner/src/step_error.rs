//! [`StepError`]: why a step cannot be compiled. It sits below the step's parts (`check`,
//! `extract`, `render`), which all report their problems with it, and below `step`, which
//! assembles them; `step` re-exports it as part of its API.

/// Why a step cannot be compiled (or the HTTP client built). Messages name the step and the
/// field; they never contain environment values.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A field has a value Volley cannot use.
    #[error("step `{step}`: {field}: {message}")]
    Invalid {
        /// The step's display name.
        step: String,
        /// Path of the field within the step (or `target.…`), e.g. `request.headers.X-Key`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// `${env:NAME}` references to variables the runner's environment does not have.
    #[error(
        "step `{step}`: environment variable{} {} not set; the step refers to {} (in the cluster, provide {} through runners.env or runners.envFrom)",
        plural(names.len()),
        if names.len() == 1 { "is" } else { "are" },
        names.iter().map(|n| format!("${{env:{n}}}")).collect::<Vec<_>>().join(", "),
        if names.len() == 1 { "it" } else { "them" },
    )]
    MissingEnv {
        /// The step's display name.
        step: String,
        /// The unset variables, sorted.
        names: Vec<String>,
    },
    /// A multipart part reads a ConfigMap, which only exists in the cluster.
    #[error(
        "step `{step}`: request.multipart part `{part}` uses configMapRef, which needs the cluster: the operator mounts ConfigMaps into runner pods, `volley run` cannot read them; use `file:` (relative to the manifest) for local runs"
    )]
    ConfigMapPart {
        /// The step's display name.
        step: String,
        /// The part's form field name.
        part: String,
    },
    /// A multipart file that cannot be read.
    #[error("step `{step}`: request.multipart part `{part}`: cannot read file {}: {source}", path.display())]
    File {
        /// The step's display name.
        step: String,
        /// The part's form field name.
        part: String,
        /// The file, resolved against the manifest's directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built (e.g. the TLS backend failed to initialise).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
