//! What the operator admits: the spec rules that hold in a cluster ([`check`], i.e.
//! `volley_core::validate::validate_for_cluster`: local `file:` sources cannot work in a pod,
//! the token variable is the operator's, every `${env:...}` must be declared). Then the cluster administrator's limits
//! ([`admit`]): the allow-list of load targets (`--allowed-targets`, see docs/security.md) and,
//! while it is set, the operator's own runner image and no proxy variable in `runners.env`.

use volley_core::target_policy::{RefusedUrl, refused_urls};
use volley_core::validate::FieldError;
use volley_crds::LoadTestSpec;
use volley_crds::text::shorten;

use crate::config::RunnerDefaults;
use crate::pods::runner_image;

/// Reason of a run refused because the spec aims at a host outside the allowed targets.
pub const TARGET_NOT_ALLOWED: &str = "TargetNotAllowed";
/// Reason of a run refused because it brings its own runner image while targets are limited.
pub const IMAGE_NOT_ALLOWED: &str = "ImageNotAllowed";
/// Reason of a run refused because `runners.env` sets a proxy variable while targets are
/// limited.
pub const PROXY_NOT_ALLOWED: &str = "ProxyNotAllowed";
/// Variables that make HTTP clients send everything to a proxy (compared without case).
/// `NO_PROXY` only exempts hosts from a proxy, so it is not among them.
const PROXY_VARIABLES: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];
/// Longest refusal message, in characters (all but the image name are ASCII): it is the
/// status message and, behind the reason, the note of an event, which the API server limits
/// to 1024 bytes. The same bound as every finished run's message
/// ([`crate::conditions::MAX_MESSAGE_CHARS`]), so that bounding it again changes nothing.
pub const MAX_REFUSAL_CHARS: usize = crate::conditions::MAX_MESSAGE_CHARS;
/// How many characters of refused URLs (paths and hosts) a message lists before it only
/// counts the rest.
const URL_LIST_CHARS: usize = 400;

/// Why the administrator's limits refuse a spec: the run's reason and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// [`TARGET_NOT_ALLOWED`], [`IMAGE_NOT_ALLOWED`] or [`PROXY_NOT_ALLOWED`].
    pub reason: &'static str,
    /// What is refused and why, at most [`MAX_REFUSAL_CHARS`] characters.
    pub message: String,
}

/// Whether the cluster administrator's limits in `defaults` let `spec` run, checked before any
/// Secret or pod exists (after [`check`]):
///
/// 1. every URL whose host is known before the run (`check_spec`: the base URL and the
///    setup and scenario URLs whose scheme and host hold no `${...}`) must be an allowed
///    target; otherwise [`TARGET_NOT_ALLOWED`], naming each refused field and host;
/// 2. while a list is set, `spec.runners.image` may only be empty or the operator's runner
///    image: the runners enforce the list for the URLs only they can see, and another image
///    could ignore it. Otherwise [`IMAGE_NOT_ALLOWED`];
/// 3. while a list is set, `spec.runners.env` may not name a proxy variable (`HTTP_PROXY`,
///    `HTTPS_PROXY`, `ALL_PROXY`, any case): through a proxy every request reaches the proxy's
///    host, whatever the list says. Volley's runner ignores these variables anyway; the
///    refusal tells the author so instead of a run that silently goes direct. Otherwise
///    [`PROXY_NOT_ALLOWED`]. Names from `runners.envFrom` cannot be known without reading
///    the tenant's ConfigMaps and Secrets, which the operator does not do: there the
///    runner's own disregard of proxies is the guard.
///
/// Without a list (allow-all) everything is admitted.
pub fn admit(spec: &LoadTestSpec, defaults: &RunnerDefaults) -> Result<(), Refusal> {
    let policy = &defaults.allowed_targets;
    if policy.is_empty() {
        return Ok(());
    }
    let refused = refused_urls(spec, policy);
    if !refused.is_empty() {
        return Err(Refusal {
            reason: TARGET_NOT_ALLOWED,
            message: targets_message(&refused),
        });
    }
    let image = runner_image(&spec.runners, defaults);
    if image != defaults.image {
        let message = format!(
            "spec.runners.image: `{}` is not allowed: while the cluster administrator limits \
             the load targets (--allowed-targets), runners must run the operator's runner image \
             `{}`, since another image could ignore the limit; remove spec.runners.image",
            shorten(image, 100),
            shorten(&defaults.image, 200),
        );
        return Err(Refusal {
            reason: IMAGE_NOT_ALLOWED,
            message: shorten(&message, MAX_REFUSAL_CHARS),
        });
    }
    let proxy = spec.runners.env.iter().enumerate().find(|(_, var)| {
        PROXY_VARIABLES
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&var.name))
    });
    if let Some((i, var)) = proxy {
        let message = format!(
            "spec.runners.env[{i}].name: `{}` is not allowed: while the cluster administrator \
             limits the load targets (--allowed-targets), runners send load straight to the \
             allowed hosts and never through a proxy (a proxy would receive every request, \
             whatever the list says); remove it",
            shorten(&var.name, 100),
        );
        return Err(Refusal {
            reason: PROXY_NOT_ALLOWED,
            message: shorten(&message, MAX_REFUSAL_CHARS),
        });
    }
    Ok(())
}

/// `the spec sends load to N URLs outside the allowed targets: PATH (`HOST`), …; the cluster
/// administrator allows only LIST[; hint]`: every refused field with its host (as many as fit,
/// then a count), and the explanation once. The explanations of one policy differ only by
/// their hint, and a policy gives at most one kind of hint (for names when it lists only
/// blocks, for IP addresses when it lists only names), so the longest covers them all.
fn targets_message(refused: &[RefusedUrl]) -> String {
    let mut listed = String::new();
    let mut left_out = 0usize;
    let mut why = String::new();
    for r in refused {
        let explanation = r.error.explanation();
        if explanation.len() > why.len() {
            why = explanation;
        }
        let item = format!("{} (`{}`)", r.path, shorten(&r.error.target, 120));
        if left_out > 0 || (!listed.is_empty() && listed.len() + item.len() > URL_LIST_CHARS) {
            left_out += 1;
            continue;
        }
        if !listed.is_empty() {
            listed.push_str(", ");
        }
        listed.push_str(&item);
    }
    if left_out > 0 {
        listed.push_str(&format!(" and {left_out} more"));
    }
    let count = match refused.len() {
        1 => "a URL".to_string(),
        n => format!("{n} URLs"),
    };
    let mut message =
        format!("the spec sends load to {count} outside the allowed targets: {listed}");
    if !why.is_empty() {
        message.push_str("; ");
        message.push_str(&why);
    }
    shorten(&message, MAX_REFUSAL_CHARS)
}

/// Every problem that keeps `spec` from running in the cluster: the shared validation's, then
/// the cluster-only ones ([`volley_core::validate::validate_for_cluster`]).
pub fn check(spec: &LoadTestSpec) -> Result<(), Vec<FieldError>> {
    volley_core::validate::validate_for_cluster(spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn local_files_and_the_token_variable_are_refused() {
        assert_eq!(check(&fixtures::loadtest("web", 2).spec), Ok(()));
        let mut lt = fixtures::loadtest_yaml(
            "web",
            "data: [{name: users, file: users.csv}]\n  runners: {env: [{name: VOLLEY_TOKEN, value: x}]}",
        );
        lt.spec.scenarios[0].steps[0]
            .request
            .as_mut()
            .unwrap()
            .multipart = vec![volley_crds::spec::MultipartPart {
            name: "f".into(),
            file: Some("cat.png".into()),
            ..Default::default()
        }];
        let paths: Vec<String> = check(&lt.spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.data[0].file",
                "spec.scenarios[0].steps[0].request.multipart[0].file",
                "spec.runners.env[0].name",
            ]
        );
    }

    #[test]
    fn env_a_runner_pod_would_not_have_is_refused_naming_the_field() {
        let mut lt = fixtures::loadtest_yaml("web", "runners: {env: [{name: DECLARED, value: x}]}");
        lt.spec.scenarios[0].steps[0]
            .request
            .as_mut()
            .unwrap()
            .headers
            .insert("X-A".into(), "${env:DECLARED}".into());
        assert_eq!(check(&lt.spec), Ok(()));
        lt.spec.scenarios[0].steps[0]
            .request
            .as_mut()
            .unwrap()
            .headers
            .insert("X-B".into(), "${env:MISSING}".into());
        let errors = check(&lt.spec).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .path
                .starts_with("spec.scenarios[0].steps[0].request.headers"),
            "{}",
            errors[0].path
        );
        assert!(
            errors[0]
                .message
                .contains("${env:MISSING} is not declared in spec.runners.env")
        );
    }

    fn refusal(
        lt: &volley_crds::LoadTest,
        defaults: &RunnerDefaults,
    ) -> Option<(&'static str, String)> {
        admit(&lt.spec, defaults)
            .err()
            .map(|r| (r.reason, r.message))
    }

    #[test]
    fn admission_by_targets_and_image() {
        // The fixtures aim at http://target.team-a.svc:8080 with a relative step URL.
        let test_image = fixtures::defaults().image;
        let own_image = format!("runners: {{image: '{test_image}'}}");
        let other_image = "runners: {image: 'registry.evil/volley:1'}";
        let setup_elsewhere = "setup: [{request: {url: 'https://login.evil.io/auth'}}]";
        let templated_host = "setup: [{request: {url: 'http://${env:HOST}/x'}}]";
        let cases: [(&str, &str, &str, Option<&str>); 13] = [
            ("no list: anything goes", "", other_image, None),
            ("no list: any host", "", setup_elsewhere, None),
            ("an exact name", "target.team-a.svc", "", None),
            ("a wildcard", "*.team-a.svc", "", None),
            ("the right port", "target.team-a.svc:8080", "", None),
            (
                "the wrong port",
                "target.team-a.svc:80",
                "",
                Some(TARGET_NOT_ALLOWED),
            ),
            (
                "another namespace",
                "*.team-b.svc",
                "",
                Some(TARGET_NOT_ALLOWED),
            ),
            (
                "a CIDR block never matches a name",
                "10.0.0.0/8",
                "",
                Some(TARGET_NOT_ALLOWED),
            ),
            (
                "a setup URL elsewhere",
                "*.team-a.svc",
                setup_elsewhere,
                Some(TARGET_NOT_ALLOWED),
            ),
            (
                "a templated host is the runners' job",
                "*.team-a.svc",
                templated_host,
                None,
            ),
            (
                "the operator's image, spelled out",
                "*.team-a.svc",
                &own_image,
                None,
            ),
            (
                "another image",
                "*.team-a.svc",
                other_image,
                Some(IMAGE_NOT_ALLOWED),
            ),
            (
                "an empty image is the default",
                "*.team-a.svc",
                "runners: {image: ''}",
                None,
            ),
        ];
        for (name, list, extra, want) in cases {
            let lt = fixtures::loadtest_yaml("web", extra);
            let got = refusal(&lt, &fixtures::guarded(list));
            assert_eq!(got.as_ref().map(|r| r.0), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn a_target_refusal_names_every_field_and_host_and_the_list_once() {
        let mut lt = fixtures::loadtest_yaml(
            "web",
            "setup: [{request: {url: 'https://login.evil.io/auth'}}]",
        );
        lt.spec.target.base_url = "http://127.0.0.1:8080".into();
        let (reason, message) =
            refusal(&lt, &fixtures::guarded("10.0.0.0/8, api.example.com")).unwrap();
        assert_eq!(reason, TARGET_NOT_ALLOWED);
        assert_eq!(
            message,
            "the spec sends load to 2 URLs outside the allowed targets: \
             spec.target.baseUrl (`127.0.0.1:8080`), spec.setup[0].request.url \
             (`login.evil.io:443`); the cluster administrator allows only \
             10.0.0.0/8,api.example.com"
        );
        // The hint of a name against a list of blocks is kept.
        let (_, message) = refusal(&lt, &fixtures::guarded("10.0.0.0/8")).unwrap();
        assert!(
            message.starts_with(
                "the spec sends load to 2 URLs outside the allowed targets: \
                 spec.target.baseUrl (`127.0.0.1:8080`), spec.setup[0].request.url \
                 (`login.evil.io:443`); the cluster administrator allows only 10.0.0.0/8; \
                 host names are not resolved"
            ),
            "{message}"
        );
        let lt = fixtures::loadtest("web", 1);
        let (_, message) = refusal(&lt, &fixtures::guarded("10.0.0.0/8")).unwrap();
        assert!(
            message.starts_with(
                "the spec sends load to a URL outside the allowed targets: \
                 spec.target.baseUrl (`target.team-a.svc:8080`); "
            ),
            "{message}"
        );
    }

    #[test]
    fn a_target_refusal_is_bounded() {
        let mut lt = fixtures::loadtest("web", 1);
        let long = format!("http://{}.example.com/", "a".repeat(60));
        let step = lt.spec.scenarios[0].steps[0].clone();
        lt.spec.scenarios[0].steps = (0..500)
            .map(|i| {
                let mut s = step.clone();
                s.request.as_mut().unwrap().url = format!("{long}{i}");
                s
            })
            .collect();
        let list: Vec<String> = (0..40)
            .map(|i| format!("host-{i}.allowed.example"))
            .collect();
        let (reason, message) = refusal(&lt, &fixtures::guarded(&list.join(","))).unwrap();
        assert_eq!(reason, TARGET_NOT_ALLOWED);
        assert!(
            message.chars().count() <= MAX_REFUSAL_CHARS + 1,
            "{}",
            message.len()
        );
        assert!(
            message.len() + "TargetNotAllowed: ".len() <= 1024,
            "fits an event note"
        );
        assert!(
            message.starts_with("the spec sends load to 501 URLs outside the allowed targets: spec.target.baseUrl (`target.team-a.svc:8080`), spec.scenarios[0].steps[0].request.url (`"),
            "{message}"
        );
        assert!(
            message
                .contains(" more; the cluster administrator allows only host-0.allowed.example,"),
            "{message}"
        );
    }

    #[test]
    fn an_image_refusal_names_the_field_and_both_images() {
        let lt = fixtures::loadtest_yaml("web", "runners: {image: 'registry.evil/volley:1'}");
        let (reason, message) = refusal(&lt, &fixtures::guarded("*.team-a.svc")).unwrap();
        assert_eq!(reason, IMAGE_NOT_ALLOWED);
        assert!(
            message.starts_with("spec.runners.image: `registry.evil/volley:1` is not allowed"),
            "{message}"
        );
        assert!(
            message.contains("`ghcr.io/volley-dev/volley:test`"),
            "{message}"
        );
        let huge = fixtures::loadtest_yaml(
            "web",
            &format!("runners: {{image: '{}'}}", "é".repeat(5000)),
        );
        let (_, message) = refusal(&huge, &fixtures::guarded("*.team-a.svc")).unwrap();
        assert!(
            message.len() + "ImageNotAllowed: ".len() <= 1024,
            "{}",
            message.len()
        );
    }

    #[test]
    fn proxy_variables_are_refused_while_targets_are_limited() {
        for name in ["HTTP_PROXY", "https_proxy", "All_Proxy"] {
            let lt = fixtures::loadtest_yaml(
                "web",
                &format!(
                    "runners: {{env: [{{name: TOKEN_URL, value: x}}, {{name: {name}, value: 'http://169.254.169.254:80'}}]}}"
                ),
            );
            let (reason, message) = refusal(&lt, &fixtures::guarded("*.team-a.svc")).unwrap();
            assert_eq!(reason, PROXY_NOT_ALLOWED, "{name}");
            assert!(
                message.starts_with(&format!(
                    "spec.runners.env[1].name: `{name}` is not allowed"
                )),
                "{message}"
            );
            // Without a list the guard is off (and the runner ignores proxies anyway).
            assert_eq!(refusal(&lt, &fixtures::defaults()), None, "{name}");
        }
        // NO_PROXY only exempts hosts from a proxy: harmless.
        let lt = fixtures::loadtest_yaml("web", "runners: {env: [{name: NO_PROXY, value: '*'}]}");
        assert_eq!(refusal(&lt, &fixtures::guarded("*.team-a.svc")), None);
    }

    #[test]
    fn shared_validation_errors_come_first() {
        let mut lt = fixtures::loadtest("web", 2);
        lt.spec.runners.parallelism = 0;
        let errors = check(&lt.spec).unwrap_err();
        assert_eq!(errors[0].path, "spec.runners.parallelism");
    }
}
