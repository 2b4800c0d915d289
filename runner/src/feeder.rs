//! Data feeders: CSV tables that hand one row to each iteration.
//!
//! Rows are split between runners the same way load is: runner `i` of `n` owns rows
//! `i, i + n, i + 2n, …`. That makes `unique` hold across the whole test without runners
//! talking to each other, and spreads `sequential` runners over different rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use volley_crds::spec::{DataFeeder, FeederOrder};

/// One CSV row: column name → value.
pub type Row = Arc<BTreeMap<String, String>>;

/// Most rows a feeder may hold; a CSV beyond this is almost certainly a mistake.
pub const MAX_ROWS: usize = 10_000_000;

/// Why a feeder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    /// The CSV file could not be read.
    #[error("feeder `{feeder}`: cannot read {path}: {source}")]
    Read {
        /// Feeder name.
        feeder: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CSV is malformed.
    #[error("feeder `{feeder}`: {message}")]
    Csv {
        /// Feeder name.
        feeder: String,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// A ConfigMap feeder outside the cluster.
    #[error(
        "feeder `{0}` reads a ConfigMap, which only exists in the cluster; for `volley run`, give it `file: PATH` instead"
    )]
    NeedsCluster(String),
}

/// A loaded feeder: this runner's rows and a cursor.
#[derive(Debug)]
pub struct Feeder {
    name: String,
    order: FeederOrder,
    rows: Vec<Row>,
    cursor: AtomicU64,
}

impl Feeder {
    /// Loads a feeder's CSV and keeps runner `runner` of `runners`'s rows.
    ///
    /// `file` paths are relative to `manifest_dir`. ConfigMap feeders are read from
    /// `configmap_root/NAME/KEY` when a root is given (the operator mounts them there).
    pub fn load(
        spec: &DataFeeder,
        manifest_dir: &Path,
        configmap_root: Option<&Path>,
        runner: u32,
        runners: u32,
    ) -> Result<Feeder, FeederError> {
        let path = match (&spec.file, &spec.config_map_ref, configmap_root) {
            (Some(file), _, _) => manifest_dir.join(file),
            (None, Some(cm), Some(root)) => root.join(&cm.name).join(&cm.key),
            _ => return Err(FeederError::NeedsCluster(spec.name.clone())),
        };
        let text = std::fs::read(&path).map_err(|source| FeederError::Read {
            feeder: spec.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        let all = parse_csv(&spec.name, &text)?;
        let n = runners.max(1) as usize;
        // Checked on the whole table, so every runner reports the same mistake.
        if all.len() < n {
            return Err(FeederError::Csv {
                feeder: spec.name.clone(),
                message: format!(
                    "{} has {} data rows for {runners} runners; it needs at least {runners} rows",
                    path.display(),
                    all.len()
                ),
            });
        }
        let mine: Vec<Row> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == runner as usize % n)
            .map(|(_, r)| r)
            .collect();
        Ok(Feeder::from_rows(&spec.name, spec.order, mine))
    }

    /// A feeder over rows already in memory.
    pub fn from_rows(name: &str, order: FeederOrder, rows: Vec<Row>) -> Feeder {
        Feeder {
            name: name.to_string(),
            order,
            rows,
            cursor: AtomicU64::new(0),
        }
    }

    /// The feeder's name, as used in `${NAME.COLUMN}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many rows this runner holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the feeder holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The next row, or `None` when a `unique` feeder has handed out every row.
    pub fn next_row(&self) -> Option<Row> {
        if self.rows.is_empty() {
            return None;
        }
        let len = self.rows.len() as u64;
        let index = match self.order {
            FeederOrder::Sequential => self.cursor.fetch_add(1, Ordering::Relaxed) % len,
            FeederOrder::Unique => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed);
                if i >= len {
                    return None;
                }
                i
            }
            FeederOrder::Random => rand::random_range(0..len),
        };
        self.rows.get(usize::try_from(index).ok()?).cloned()
    }
}

/// Parses a CSV whose first line names the columns.
fn parse_csv(feeder: &str, bytes: &[u8]) -> Result<Vec<Row>, FeederError> {
    let csv_err = |message: String| FeederError::Csv {
        feeder: feeder.to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(format!("cannot read the header line: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.is_empty() || headers.iter().any(String::is_empty) {
        return Err(csv_err(
            "the first line must name every column (e.g. `email,password`)".to_string(),
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        if rows.len() >= MAX_ROWS {
            return Err(csv_err(format!("more than {MAX_ROWS} rows")));
        }
        let row: BTreeMap<String, String> = headers
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_string))
            .collect();
        rows.push(Arc::new(row));
    }
    if rows.is_empty() {
        return Err(csv_err(
            "the CSV has a header line but no data rows".to_string(),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn write_csv(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn spec(order: FeederOrder) -> DataFeeder {
        DataFeeder {
            name: "users".into(),
            file: Some("users.csv".into()),
            order,
            ..DataFeeder::default()
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("volley-feeder-{tag}-{}", std::process::id()))
    }

    fn emails(n: usize) -> String {
        let mut s = String::from("email, password\n");
        for i in 0..n {
            s.push_str(&format!("user{i}@example.com, pw{i}\n"));
        }
        s
    }

    #[test]
    fn sequential_wraps_and_trims() {
        let dir = tempdir("seq");
        write_csv(&dir, "users.csv", &emails(3));
        let f = Feeder::load(&spec(FeederOrder::Sequential), &dir, None, 0, 1).unwrap();
        let got: Vec<String> = (0..5)
            .map(|_| f.next_row().unwrap()["email"].clone())
            .collect();
        assert_eq!(got[0], "user0@example.com");
        assert_eq!(got[3], "user0@example.com");
        assert_eq!(f.next_row().unwrap()["password"], "pw2");
    }

    #[test]
    fn unique_rows_are_partitioned_across_runners_and_run_out() {
        let dir = tempdir("uniq");
        write_csv(&dir, "users.csv", &emails(10));
        let mut seen = HashSet::new();
        for runner in 0..3 {
            let f = Feeder::load(&spec(FeederOrder::Unique), &dir, None, runner, 3).unwrap();
            while let Some(row) = f.next_row() {
                assert!(seen.insert(row["email"].clone()), "row handed out twice");
            }
        }
        assert_eq!(seen.len(), 10, "every row used exactly once across runners");
    }

    #[test]
    fn random_stays_within_the_runner_share() {
        let rows: Vec<Row> = (0..4)
            .map(|i| Arc::new(BTreeMap::from([("n".to_string(), i.to_string())])))
            .collect();
        let f = Feeder::from_rows("r", FeederOrder::Random, rows);
        let seen: HashSet<String> = (0..200)
            .map(|_| f.next_row().unwrap()["n"].clone())
            .collect();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn errors_name_the_feeder_and_problem() {
        let dir = tempdir("err");
        write_csv(&dir, "users.csv", "email,password\n");
        let err = Feeder::load(&spec(FeederOrder::Sequential), &dir, None, 0, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("feeder `users`: the CSV has a header line but no data rows"),
            "{err}"
        );

        write_csv(&dir, "users.csv", "email,password\na@x,1\nb@x,2,extra\n");
        let err = Feeder::load(&spec(FeederOrder::Sequential), &dir, None, 0, 1).unwrap_err();
        assert!(err.to_string().contains("feeder `users`"), "{err}");

        write_csv(&dir, "users.csv", &emails(2));
        let err = Feeder::load(&spec(FeederOrder::Sequential), &dir, None, 0, 3).unwrap_err();
        assert!(err.to_string().contains("needs at least 3 rows"), "{err}");

        let missing = DataFeeder {
            file: Some("nope.csv".into()),
            ..spec(FeederOrder::Sequential)
        };
        let err = Feeder::load(&missing, &dir, None, 0, 1).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");

        let cm = DataFeeder {
            file: None,
            config_map_ref: Some(volley_crds::spec::ConfigMapKeyRef {
                name: "u".into(),
                key: "u.csv".into(),
            }),
            ..spec(FeederOrder::Sequential)
        };
        let err = Feeder::load(&cm, &dir, None, 0, 1).unwrap_err();
        assert!(matches!(err, FeederError::NeedsCluster(_)));
        write_csv(&dir.join("u"), "u.csv", &emails(1));
        assert_eq!(Feeder::load(&cm, &dir, Some(&dir), 0, 1).unwrap().len(), 1);
    }
}
