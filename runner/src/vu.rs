//! [`VuContext`]: the state of one virtual user that steps read and write. It sits below
//! `render` (which looks values up in it) and `step` (which runs steps in it); `step`
//! re-exports it as part of its API.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cookies::CookieJar;
use crate::transport::Connections;

/// Per-VU state that steps read and write.
#[derive(Clone, Debug)]
pub struct VuContext {
    /// Global VU number (unique across runners): `${vu}`.
    pub vu: u64,
    /// The VU's iteration counter: `${iteration}`.
    pub iteration: u64,
    /// The runner's index: `${runner}`.
    pub runner: u32,
    /// Values extracted by setup: `${setup.NAME}`.
    pub setup: Arc<BTreeMap<String, String>>,
    /// Values extracted by earlier steps: `${NAME}`. The caller clears it at the start of each
    /// iteration.
    pub extracted: BTreeMap<String, String>,
    /// Feeder name → the current row (column → value): `${FEEDER.COLUMN}`.
    pub row: BTreeMap<String, Arc<BTreeMap<String, String>>>,
    /// The VU's cookies; they persist across iterations (e.g. a CSRF cookie).
    pub cookies: CookieJar,
    /// The VU's own keep-alive connection for plain HTTP ([`crate::transport`]); a clone of
    /// the context starts without one.
    pub connections: Connections,
}

impl VuContext {
    /// A fresh VU at iteration 0 with no extracted values, rows or cookies.
    pub fn new(vu: u64, runner: u32, setup: Arc<BTreeMap<String, String>>) -> Self {
        Self {
            vu,
            iteration: 0,
            runner,
            setup,
            extracted: BTreeMap::new(),
            row: BTreeMap::new(),
            cookies: CookieJar::new(),
            connections: Connections::default(),
        }
    }
}
