//! The exit codes of `volley run` and `volley agent`, shared by both so neither module has to
//! reach into the other for them.

/// Exit code when every threshold passed (`volley run`), or the runner did its part
/// (`volley agent`).
pub const EXIT_PASSED: u8 = 0;
/// Exit code when the run could not be carried out.
pub const EXIT_ERROR: u8 = 1;
/// Exit code when a threshold failed (`volley run`).
pub const EXIT_THRESHOLDS_FAILED: u8 = 99;
