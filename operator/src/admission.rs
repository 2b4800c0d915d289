//! The validating admission webhook's decisions: a LoadTest CREATE or UPDATE is allowed, or
//! denied with every problem found, each with its field path.
//!
//! The rules are those of `volley validate --cluster` ([`spec_check::check`], i.e.
//! `volley_core::validate::validate_for_cluster`), then the cluster administrator's limits
//! ([`volley_core::target_policy::check_spec`] and [`spec_check::admit`] with the operator's
//! configured allow-list), then one rule only the API server can answer: for every Secret the
//! spec hands to its runners (`runners.env[].valueFrom.secretKeyRef`, `runners.envFrom[].secretRef`)
//! the requesting user must be allowed to `get` that Secret themselves, asked with a
//! `SubjectAccessReview` (docs/security.md, "Who may read a Secret through a runner").
//!
//! Unknown fields: the API server prunes fields the CRD's structural schema does not declare
//! while it decodes the request, before any admission webhook sees the object, so a `maxVus`
//! sent with `kubectl apply --validate=false` never reaches this code. Server-side field
//! validation (`kubectl apply`'s default `--validate=strict`) refuses it before pruning. The
//! webhook still reads the object with the manifest reader, which refuses unknown fields: they
//! reach it when the installed CRD is newer than the operator (fields this operator would
//! ignore) or in a subtree the schema keeps unknown fields in.
//!
//! Everything here but [`may_get_secret`] and [`review`] is pure.

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{DynamicObject, Status};
use volley_core::manifest::{ManifestError, parse_manifest};
use volley_core::target_policy::check_spec;
use volley_core::validate::FieldError;
use volley_crds::LoadTestSpec;
use volley_crds::text::shorten;

use crate::config::RunnerDefaults;
use crate::spec_check;

/// Most problems a denial lists; the rest are counted. The message is what `kubectl apply`
/// prints, so it stays readable.
pub const MAX_LISTED: usize = 20;

/// A Secret that a spec hands to its runners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The field naming it, e.g. `spec.runners.env[0].valueFrom.secretKeyRef.name`.
    pub path: String,
    /// The Secret's name, in the LoadTest's namespace.
    pub name: String,
}

/// Every problem that keeps `object` (the LoadTest as the API server would store it) from
/// running in this cluster, or its spec when there is none: unknown fields and values of the
/// wrong type, the `volley validate --cluster` rules, then the allow-list limits of `defaults`.
pub fn check_object(
    object: &serde_json::Value,
    defaults: &RunnerDefaults,
) -> Result<LoadTestSpec, Vec<FieldError>> {
    // JSON is YAML: the same reader as `volley validate`, so the two judge alike.
    let lt = parse_manifest(&object.to_string()).map_err(manifest_errors)?;
    let mut errors = spec_check::check(&lt.spec).err().unwrap_or_default();
    // The allow-list only once the spec is valid, as the operator admits runs: a URL that does
    // not parse is already an error above.
    if errors.is_empty() {
        errors = check_spec(&lt.spec, &defaults.allowed_targets);
        if errors.is_empty()
            && let Err(refusal) = spec_check::admit(&lt.spec, defaults)
        {
            // Image and proxy refusals name their field at the start of the message.
            let (path, message) = match refusal.message.split_once(": ") {
                Some((path, rest)) if path.starts_with("spec.") => (path, rest),
                _ => ("spec.runners", refusal.message.as_str()),
            };
            errors.push(FieldError {
                path: path.to_string(),
                message: message.to_string(),
            });
        }
    }
    if errors.is_empty() {
        Ok(lt.spec)
    } else {
        Err(errors)
    }
}

/// The manifest reader's error as field errors (line and column say nothing of a JSON object
/// the API server serialised on one line).
fn manifest_errors(e: ManifestError) -> Vec<FieldError> {
    match e {
        ManifestError::Invalid { path, message, .. } => vec![FieldError { path, message }],
        ManifestError::UnknownFields(paths) => paths
            .into_iter()
            .map(|path| FieldError {
                path,
                message: "unknown field: no LoadTest field has this name (check its spelling \
                          and case, and that the operator is as new as the CRD)"
                    .to_string(),
            })
            .collect(),
        ManifestError::Several(all) => all.into_iter().flat_map(manifest_errors).collect(),
        other @ (ManifestError::WrongKind(_) | ManifestError::TooLarge(_)) => vec![FieldError {
            path: ".".to_string(),
            message: other.to_string(),
        }],
    }
}

/// The Secrets `spec` hands to its runners, in spec order.
pub fn secret_refs(spec: &LoadTestSpec) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    for (i, env) in spec.runners.env.iter().enumerate() {
        let name = env
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| s.name.clone());
        if let Some(name) = name {
            refs.push(SecretRef {
                path: format!("spec.runners.env[{i}].valueFrom.secretKeyRef.name"),
                name,
            });
        }
    }
    for (i, from) in spec.runners.env_from.iter().enumerate() {
        if let Some(secret) = &from.secret_ref {
            refs.push(SecretRef {
                path: format!("spec.runners.envFrom[{i}].secretRef.name"),
                name: secret.name.clone(),
            });
        }
    }
    // The operator reads these itself, to query Prometheus with them.
    let auth = spec
        .observe
        .as_ref()
        .and_then(|o| o.prometheus.as_ref())
        .and_then(|p| p.auth.as_ref());
    if let Some(auth) = auth {
        let p = "spec.observe.prometheus.auth";
        if let Some(token) = &auth.bearer_token_secret_ref {
            refs.push(SecretRef {
                path: format!("{p}.bearerTokenSecretRef.name"),
                name: token.name.clone(),
            });
        }
        if let Some(basic) = &auth.basic_auth {
            for (field, r) in [
                ("usernameSecretRef", &basic.username_secret_ref),
                ("passwordSecretRef", &basic.password_secret_ref),
            ] {
                refs.push(SecretRef {
                    path: format!("{p}.basicAuth.{field}.name"),
                    name: r.name.clone(),
                });
            }
        }
    }
    refs
}

/// The Secrets whose access must be checked: those of `new` that `old` (the stored object of
/// an UPDATE) did not already name. A Secret named before was checked for whoever added it;
/// asking again would let only Secret readers label or annotate the LoadTest.
pub fn secrets_to_check(new: &LoadTestSpec, old: Option<&LoadTestSpec>) -> Vec<SecretRef> {
    let before: Vec<String> = old
        .map(|o| secret_refs(o).into_iter().map(|r| r.name).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    secret_refs(new)
        .into_iter()
        .filter(|r| !before.contains(&r.name))
        .filter(|r| {
            // One question per Secret, however many fields name it.
            let first = !seen.contains(&r.name);
            seen.push(r.name.clone());
            first
        })
        .collect()
}

/// The `SubjectAccessReview` asking whether `user` may `get` Secret `name` in `namespace`.
pub fn secret_access_review(user: &UserInfo, namespace: &str, name: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some("get".to_string()),
                group: Some(String::new()),
                version: Some("v1".to_string()),
                resource: Some("secrets".to_string()),
                name: Some(name.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The field error of a Secret the requesting user may not read (or that could not be
/// checked: `why` says which).
pub fn secret_denied(
    user: &UserInfo,
    namespace: &str,
    secret: &SecretRef,
    why: &str,
) -> FieldError {
    FieldError {
        path: secret.path.clone(),
        message: format!(
            "{} may not get Secret `{}` in namespace `{namespace}` ({why}); a LoadTest may only \
             hand its runners Secrets that its author can read",
            user.username.as_deref().map_or_else(
                || "the requesting user".to_string(),
                |u| format!("user `{}`", shorten(u, 100))
            ),
            shorten(&secret.name, 253),
        ),
    }
}

/// What to do with one request before any Secret access is asked.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Admit: not a LoadTest CREATE/UPDATE this webhook judges, or an UPDATE that leaves the
    /// spec as it was (finalizers, labels, annotations: an invalid spec stored before the
    /// webhook existed must stay deletable and labelable).
    Allow,
    /// Deny with these problems.
    Deny(Vec<FieldError>),
    /// Valid; admit when the user may read each of these Secrets.
    CheckSecrets(Vec<SecretRef>),
}

/// The decision for `req`, with the operator's `defaults` (its allow-list and runner image).
pub fn decide(req: &AdmissionRequest<DynamicObject>, defaults: &RunnerDefaults) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Decision::Allow;
    }
    let Some(object) = &req.object else {
        return Decision::Deny(vec![FieldError {
            path: ".".to_string(),
            message: "the admission request holds no object".to_string(),
        }]);
    };
    let new = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return Decision::Deny(vec![FieldError {
                path: ".".to_string(),
                message: format!("the object cannot be read: {e}"),
            }]);
        }
    };
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    if let Some(old) = &old
        && old.get("spec") == new.get("spec")
    {
        return Decision::Allow;
    }
    match check_object(&new, defaults) {
        Err(errors) => Decision::Deny(errors),
        Ok(spec) => {
            let old_spec = old
                .and_then(|o| o.get("spec").cloned())
                .and_then(|s| serde_json::from_value::<LoadTestSpec>(s).ok());
            let secrets = secrets_to_check(&spec, old_spec.as_ref());
            if secrets.is_empty() {
                Decision::Allow
            } else {
                Decision::CheckSecrets(secrets)
            }
        }
    }
}

/// The response to `req`: allowed when `errors` is empty, otherwise denied listing them
/// (at most [`MAX_LISTED`], each also a cause with its field).
pub fn respond(req: &AdmissionRequest<DynamicObject>, errors: &[FieldError]) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if errors.is_empty() {
        return response;
    }
    let listed: Vec<String> = errors
        .iter()
        .take(MAX_LISTED)
        .map(ToString::to_string)
        .collect();
    let mut message = format!(
        "{} problem{} with this LoadTest: {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        listed.join("; ")
    );
    if errors.len() > MAX_LISTED {
        message.push_str(&format!("; … and {} more", errors.len() - MAX_LISTED));
    }
    let mut response = response.deny(&message);
    response.result = Status::failure(&message, "Invalid")
        .with_code(422)
        .with_details(StatusDetails {
            name: req.name.clone(),
            group: "volley.dev".to_string(),
            kind: "LoadTest".to_string(),
            uid: String::new(),
            causes: errors
                .iter()
                .take(MAX_LISTED)
                .map(|e| StatusCause {
                    reason: "FieldValueInvalid".to_string(),
                    message: e.message.clone(),
                    field: e.path.clone(),
                })
                .collect(),
            retry_after_seconds: 0,
        });
    response
}

/// Asks the API server whether `user` may `get` Secret `name` in `namespace`: `Ok(None)` when
/// allowed, `Ok(Some(reason))` when not.
pub async fn may_get_secret(
    client: &kube::Client,
    user: &UserInfo,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
    let answer = api
        .create(
            &PostParams::default(),
            &secret_access_review(user, namespace, name),
        )
        .await?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        Ok(None)
    } else {
        let reason = status
            .reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "RBAC allows no `get` on it".to_string());
        Ok(Some(shorten(&reason, 200)))
    }
}

/// Most `SubjectAccessReview`s in flight for one request.
const CONCURRENT_REVIEWS: usize = 8;
/// How long all of one request's `SubjectAccessReview`s may take: under the API server's own
/// webhook timeout (the chart's default 10 s), so the author reads why instead of a timeout.
pub const SECRET_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// The field errors of the Secrets in `secrets` that `user` may not `get` in `namespace`, or
/// whose access could not be checked within [`SECRET_CHECK_DEADLINE`].
async fn check_secrets(
    client: &kube::Client,
    user: &UserInfo,
    namespace: &str,
    secrets: &[SecretRef],
) -> Vec<FieldError> {
    use futures::StreamExt as _;
    // Owned values in each future: borrowed ones make the future's Send proof ask for a
    // closure over every lifetime, which rustc cannot give here.
    let asked = futures::stream::iter(secrets.iter().cloned().map(|secret: SecretRef| {
        let (client, user, namespace) = (client.clone(), user.clone(), namespace.to_string());
        async move {
            let answer = may_get_secret(&client, &user, &namespace, &secret.name).await;
            (secret, answer)
        }
    }))
    .buffered(CONCURRENT_REVIEWS)
    .collect::<Vec<_>>();
    let Ok(answers) = tokio::time::timeout(SECRET_CHECK_DEADLINE, asked).await else {
        tracing::warn!(%namespace, secrets = secrets.len(), "SubjectAccessReviews did not finish in time");
        return secrets
            .iter()
            .map(|s| {
                secret_denied(
                    user,
                    namespace,
                    s,
                    "the API server did not answer in time: try again",
                )
            })
            .collect();
    };
    let mut errors = Vec::new();
    for (secret, answer) in answers {
        match answer {
            Ok(None) => {}
            Ok(Some(why)) => errors.push(secret_denied(user, namespace, &secret, &why)),
            Err(e) => {
                tracing::warn!(error = %e, secret = %secret.name, %namespace, "SubjectAccessReview failed");
                errors.push(secret_denied(
                    user,
                    namespace,
                    &secret,
                    "the operator could not ask the API server: try again",
                ));
            }
        }
    }
    errors
}

/// Answers one AdmissionReview: [`decide`], then a `SubjectAccessReview` per Secret to check.
/// A Secret whose access cannot be checked (the API server did not answer) denies: failing
/// open would hand out the Secret.
pub async fn review(
    client: &kube::Client,
    defaults: &RunnerDefaults,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionReview<DynamicObject> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let namespace = req.namespace.clone().unwrap_or_default();
    let errors = match decide(&req, defaults) {
        Decision::Allow => Vec::new(),
        Decision::Deny(errors) => errors,
        Decision::CheckSecrets(secrets) => {
            check_secrets(client, &req.user_info, &namespace, &secrets).await
        }
    };
    tracing::info!(
        loadtest = %req.name,
        %namespace,
        operation = ?req.operation,
        allowed = errors.is_empty(),
        problems = errors.len(),
        "admission review"
    );
    respond(&req, &errors).into_review()
}

#[cfg(test)]
#[path = "admission_tests.rs"]
pub(crate) mod tests;
