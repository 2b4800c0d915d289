//! Names and labels of the objects the operator creates for a run, within Kubernetes' length
//! limits, and the identity of a run ([`RunRef`]).
//!
//! Object names are bounded (63 characters for pods, whose name becomes the hostname; 253 for
//! Secrets) and label values to 63 characters. A name that would be longer keeps a readable
//! prefix and ends in a short hash of the full name, so two long names that share a prefix still
//! get different objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use volley_crds::LoadTest;

/// `app.kubernetes.io/name`: what the object is.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`APP_NAME_LABEL`] on runner pods and run Secrets.
pub const APP_NAME_RUNNER: &str = "volley-runner";
/// `app.kubernetes.io/managed-by`: who manages the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on everything the operator creates.
pub const MANAGED_BY: &str = "volley-operator";
/// The LoadTest an object belongs to (its name, bounded to a label value).
pub const LOADTEST_LABEL: &str = "volley.dev/loadtest";
/// The run an object belongs to ([`RunRef::run_id`]).
pub const RUN_LABEL: &str = "volley.dev/run";
/// A runner pod's index among the run's runners, 0-based.
pub const RUNNER_INDEX_LABEL: &str = "volley.dev/runner-index";

/// Longest label value (and longest pod name: the pod name becomes its hostname).
pub const MAX_LABEL_VALUE: usize = 63;
/// Longest name of a DNS-subdomain object such as a Secret.
pub const MAX_OBJECT_NAME: usize = 253;

/// Hex digits of the hash that ends a shortened name.
const HASH_DIGITS: usize = 8;

/// `base` followed by `suffix`, at most `max` characters. When too long, `base` is cut and a
/// hash of the whole `base` is inserted before `suffix`: `PREFIX-HHHHHHHH{suffix}`.
pub fn bounded(base: &str, suffix: &str, max: usize) -> String {
    if base.len() + suffix.len() <= max {
        return format!("{base}{suffix}");
    }
    let hash = format!("{:016x}", fnv1a(base.as_bytes()));
    let keep = max.saturating_sub(suffix.len() + HASH_DIGITS + 1);
    let mut prefix: String = base.chars().take(keep).collect();
    // A name (and a label value) must end in an alphanumeric character before the hash's `-`.
    while prefix.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        prefix.pop();
    }
    let hash = &hash[..HASH_DIGITS];
    if prefix.is_empty() {
        format!("{hash}{suffix}")
    } else {
        format!("{prefix}-{hash}{suffix}")
    }
}

/// `value` as a label value (at most 63 characters).
pub fn label_value(value: &str) -> String {
    bounded(value, "", MAX_LABEL_VALUE)
}

/// What ends the names of run `run`'s objects: nothing for the first run (the names of a
/// LoadTest that never re-ran are those it always had), `-r{run}` for a re-run. A re-run's
/// names end in `r` and digits where a first run's end in a word or in digits after `runner`,
/// so no name of one LoadTest's re-run is a name of another LoadTest's first run.
pub fn run_suffix(run: u32) -> String {
    if run <= 1 {
        String::new()
    } else {
        format!("-r{run}")
    }
}

/// Name of runner pod `index` of run `run` of LoadTest `loadtest`:
/// `{loadtest}-runner-{index}`, then [`run_suffix`].
pub fn runner_pod_name(loadtest: &str, run: u32, index: u32) -> String {
    bounded(
        loadtest,
        &format!("-runner-{index}{}", run_suffix(run)),
        MAX_LABEL_VALUE,
    )
}

/// Name of the Secret holding the bearer token of run `run`: `{loadtest}-run-token`, then
/// [`run_suffix`].
pub fn run_secret_name(loadtest: &str, run: u32) -> String {
    bounded(
        loadtest,
        &format!("-run-token{}", run_suffix(run)),
        MAX_OBJECT_NAME,
    )
}

/// Name of the report ConfigMap of run `run`: `{loadtest}-report`, then [`run_suffix`].
/// Each run has its own, so the reports of earlier runs stay while they are in the history.
pub fn report_name(loadtest: &str, run: u32) -> String {
    bounded(
        loadtest,
        &format!("-report{}", run_suffix(run)),
        MAX_OBJECT_NAME,
    )
}

/// The id of run `run` of the LoadTest with UID `uid`: the UID for the first run (so runs
/// started before re-runs existed are adopted after an upgrade), `{uid}-r{run}` for a re-run.
pub fn run_id(uid: &str, run: u32) -> String {
    format!("{uid}{}", run_suffix(run))
}

/// 64-bit FNV-1a: a stable, dependency-free hash for shortened names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A LoadTest field the operator needs is missing (the API server always sets them; a
/// LoadTest read from elsewhere may lack them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the LoadTest has no metadata.{0}")]
pub struct MissingMetadata(pub &'static str);

/// Who a run is: the LoadTest it belongs to, its id, and the names derived from them.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRef {
    /// Namespace of the LoadTest (and of its pods and Secret).
    pub namespace: String,
    /// Name of the LoadTest.
    pub loadtest: String,
    /// The run's number (`status.run`, 1 when absent).
    pub run: u32,
    /// The run's id as the aggregator and the `volley.dev/run` label know it ([`run_id`]):
    /// the LoadTest's UID and the run's number, which are stable across operator restarts (so
    /// running pods are adopted), new when a LoadTest of the same name is created again, and
    /// new for every re-run (so a re-run never meets the pods or reports of the run before).
    pub run_id: String,
    /// Name of the run's token Secret.
    pub secret_name: String,
    /// Name of the run's report ConfigMap.
    pub report_name: String,
    /// Reference to the LoadTest as controller, so that deleting it deletes pods and Secret.
    pub owner: OwnerReference,
}

impl RunRef {
    /// The current run of `lt`: the one its status describes.
    pub fn of(lt: &LoadTest) -> Result<RunRef, MissingMetadata> {
        let meta = &lt.metadata;
        let name = meta.name.clone().ok_or(MissingMetadata("name"))?;
        let namespace = meta.namespace.clone().ok_or(MissingMetadata("namespace"))?;
        let uid = meta.uid.clone().ok_or(MissingMetadata("uid"))?;
        let run = lt.status.as_ref().and_then(|s| s.run).unwrap_or(1).max(1);
        Ok(RunRef {
            run,
            run_id: run_id(&uid, run),
            secret_name: run_secret_name(&name, run),
            report_name: report_name(&name, run),
            owner: OwnerReference {
                api_version: LoadTest::api_version(&()).into_owned(),
                kind: LoadTest::kind(&()).into_owned(),
                name: name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            namespace,
            loadtest: name,
        })
    }

    /// Labels common to every object of the run.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [
            (APP_NAME_LABEL, APP_NAME_RUNNER.to_string()),
            (MANAGED_BY_LABEL, MANAGED_BY.to_string()),
            (LOADTEST_LABEL, label_value(&self.loadtest)),
            (RUN_LABEL, label_value(&self.run_id)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Label selector matching the run's pods.
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", label_value(&self.run_id))
    }

    /// Who made an existing object that bears one of the run's names (its token Secret, its
    /// report ConfigMap). Names are predictable, so anyone who may create Secrets or
    /// ConfigMaps in the namespace can create one first; the operator only uses, replaces or
    /// deletes an object whose controller owner is this LoadTest (by UID) and that carries
    /// the run's label. (An object of an earlier run of this LoadTest carries that run's
    /// label: see [`RunRef::owns_earlier_run`].)
    pub fn ownership(&self, meta: &ObjectMeta) -> Ownership {
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let labelled = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .is_some_and(|v| *v == label_value(&self.run_id));
        match controller {
            Some(o) if o.kind == self.owner.kind && o.uid == self.owner.uid && labelled => {
                Ownership::Ours
            }
            Some(o)
                if o.kind == self.owner.kind
                    && o.api_version == self.owner.api_version
                    && o.name == self.loadtest
                    && o.uid != self.owner.uid =>
            {
                Ownership::EarlierLoadTest
            }
            _ => Ownership::Foreign,
        }
    }
}

impl RunRef {
    /// Whether `meta` is of an object the operator created for some run of this LoadTest
    /// (controller owner this LoadTest by UID, managed-by the operator): what may be deleted
    /// when an earlier run's report leaves the history.
    pub fn owns_earlier_run(&self, meta: &ObjectMeta) -> bool {
        let owned = meta.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true) && o.kind == self.owner.kind && o.uid == self.owner.uid
        });
        let managed = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGED_BY);
        owned && managed
    }
}

/// What [`RunRef::ownership`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by the operator for this run.
    Ours,
    /// Owned by an earlier LoadTest of the same name (deleted and created again): the garbage
    /// collector deletes it shortly, since its owner is gone. Never touched; waited for.
    EarlierLoadTest,
    /// Anything else: never used, replaced or deleted.
    Foreign,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(runner_pod_name("checkout", 1, 3), "checkout-runner-3");
        assert_eq!(run_secret_name("checkout", 1), "checkout-run-token");
        assert_eq!(report_name("checkout", 1), "checkout-report");
        assert_eq!(run_id("u-1", 1), "u-1");
        assert_eq!(label_value("checkout"), "checkout");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let long = "a".repeat(60);
        let pod = runner_pod_name(&long, 1, 12);
        assert_eq!(pod.len(), 63);
        assert!(pod.ends_with("-runner-12"), "{pod}");
        let other = runner_pod_name(&format!("{}b", "a".repeat(59)), 1, 12);
        assert_ne!(pod, other, "names sharing a prefix stay distinct");
        assert_eq!(pod, runner_pod_name(&long, 1, 12), "stable");
        let label = label_value(&"x".repeat(100));
        assert_eq!(label.len(), 63);
        let secret = run_secret_name(&"s".repeat(250), 1);
        assert_eq!(secret.len(), 253);
        assert!(secret.ends_with("-run-token"));
    }

    #[test]
    fn every_rerun_has_its_own_names_which_no_first_run_can_have() {
        assert_eq!(runner_pod_name("web", 2, 0), "web-runner-0-r2");
        assert_eq!(run_secret_name("web", 2), "web-run-token-r2");
        assert_eq!(report_name("web", 3), "web-report-r3");
        assert_eq!(run_id("u-1", 2), "u-1-r2");
        // LoadTests whose names look like another's run suffix still get other names.
        assert_ne!(
            runner_pod_name("web-r2", 1, 0),
            runner_pod_name("web", 2, 0)
        );
        assert_ne!(
            runner_pod_name("web-runner-0", 2, 1),
            runner_pod_name("web", 2, 0)
        );
        assert_ne!(
            runner_pod_name("web-runner-0-r2", 1, 0),
            runner_pod_name("web", 2, 0)
        );
        assert_ne!(report_name("web-report", 2), report_name("web", 2));
        // Long names keep the run suffix, and so stay distinct per run.
        let long = "a".repeat(80);
        assert!(runner_pod_name(&long, 12, 3).ends_with("-runner-3-r12"));
        assert_ne!(runner_pod_name(&long, 2, 0), runner_pod_name(&long, 3, 0));
        assert_eq!(runner_pod_name(&long, 99, 99).len(), 63);
    }

    #[test]
    fn the_run_number_comes_from_the_status() {
        let mut lt = crate::fixtures::loadtest("web", 1);
        lt.status = Some(volley_crds::LoadTestStatus {
            run: Some(4),
            ..Default::default()
        });
        let run = RunRef::of(&lt).unwrap();
        assert_eq!(run.run, 4);
        assert_eq!(run.run_id, format!("{}-r4", crate::fixtures::UID));
        assert_eq!(run.secret_name, "web-run-token-r4");
        assert_eq!(run.report_name, "web-report-r4");
        assert_eq!(
            run.owner.uid,
            crate::fixtures::UID,
            "the owner is the LoadTest"
        );
        let mut meta = ObjectMeta {
            owner_references: Some(vec![run.owner.clone()]),
            labels: Some(run.labels()),
            ..ObjectMeta::default()
        };
        assert_eq!(run.ownership(&meta), Ownership::Ours);
        assert!(run.owns_earlier_run(&meta));
        // The report of run 3: the LoadTest's, not this run's.
        let earlier = RunRef::of(&crate::fixtures::loadtest("web", 1)).unwrap();
        meta.labels = Some(earlier.labels());
        assert_eq!(run.ownership(&meta), Ownership::Foreign);
        assert!(run.owns_earlier_run(&meta));
        meta.owner_references = None;
        assert!(!run.owns_earlier_run(&meta), "not owned: never deleted");
    }

    #[test]
    fn cut_names_end_alphanumeric_before_the_hash() {
        let name = format!("{}-.-{}", "a".repeat(50), "b".repeat(20));
        let pod = runner_pod_name(&name, 1, 0);
        assert!(pod.len() <= 63);
        let (prefix, _) = pod.split_at(pod.len() - "-runner-0".len() - HASH_DIGITS - 1);
        assert!(prefix.ends_with('a'), "{pod}");
    }

    #[test]
    fn run_ref_needs_metadata_and_owns_by_controller_reference() {
        let mut lt = LoadTest::new("web", Default::default());
        assert_eq!(RunRef::of(&lt), Err(MissingMetadata("namespace")));
        lt.metadata.namespace = Some("team-a".into());
        assert_eq!(RunRef::of(&lt), Err(MissingMetadata("uid")));
        lt.metadata.uid = Some("0b6d5a4e-1111-2222-3333-444455556666".into());
        let run = RunRef::of(&lt).unwrap();
        assert_eq!(run.run_id, "0b6d5a4e-1111-2222-3333-444455556666");
        assert_eq!(run.secret_name, "web-run-token");
        assert_eq!(run.owner.api_version, "volley.dev/v1alpha1");
        assert_eq!(run.owner.kind, "LoadTest");
        assert_eq!(run.owner.controller, Some(true));
        assert_eq!(run.owner.block_owner_deletion, Some(true));
        assert_eq!(
            run.selector(),
            "volley.dev/run=0b6d5a4e-1111-2222-3333-444455556666"
        );
        assert_eq!(run.labels()["volley.dev/loadtest"], "web");
        assert_eq!(
            run.labels()["app.kubernetes.io/managed-by"],
            "volley-operator"
        );
    }
}
