//! The validating admission webhook's HTTPS server and its certificate.
//!
//! The API server calls `POST /validate-loadtest` ([`VALIDATE_PATH`]) with an AdmissionReview;
//! [`crate::admission::review`] answers it. The API server only speaks TLS to webhooks, so the
//! server serves HTTPS (HTTP/1.1, rustls) on its own port (the chart's 9443). Its certificate
//! comes from one of two places ([`CertSource`]):
//!
//! - files (`tls.crt`, `tls.key`) in a directory mounted from a Secret, which cert-manager
//!   writes and renews (the chart's `webhook.certManager.enabled`, which also has cert-manager
//!   inject the CA into the ValidatingWebhookConfiguration). The files are read again every
//!   [`RELOAD_INTERVAL`] and a changed pair is served from then on;
//! - otherwise generated at start: a self-signed CA and a serving certificate for the
//!   webhook's Service names ([`generate`]), renewed when a third of its life is left. The
//!   replica that leads writes the CA into the ValidatingWebhookConfiguration's `caBundle`
//!   ([`publish_ca_bundle`]) when its term starts and after each renewal; the chart's Service
//!   routes to the leader only, so the API server always meets the certificate whose CA it was
//!   given.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::RunnerDefaults;

/// The path the ValidatingWebhookConfiguration calls.
pub const VALIDATE_PATH: &str = "/validate-loadtest";
/// How often mounted certificate files are read again (the kubelet updates a mounted Secret
/// within about a minute; cert-manager renews well before expiry).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Life of a generated serving certificate (and its CA).
pub const GENERATED_LIFETIME: SignedDuration = SignedDuration::from_hours(365 * 24);
/// How often the generated certificate's remaining life is checked.
const RENEW_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest TLS handshake or request header read: the API server is fast; anyone slower is
/// holding a connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest AdmissionReview read.
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Why a certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen could not make the CA or the serving certificate.
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The PEM files are not a certificate chain and a private key.
    #[error("cannot read the webhook certificate: {0}")]
    Pem(String),
    /// rustls does not accept the key.
    #[error("the webhook key is not usable: {0}")]
    Key(#[from] rustls::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate and key in PEM, as files hold them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate chain (serving certificate first).
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A generated CA and the serving certificate it signed.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The CA certificate in PEM: the ValidatingWebhookConfiguration's `caBundle`.
    pub ca_pem: String,
    /// The serving certificate and key.
    pub serving: PemPair,
    /// When the serving certificate expires.
    pub not_after: Timestamp,
}

/// The names the API server uses for Service `service` in `namespace`
/// (`service.namespace.svc` is the one it dials).
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// A new CA and a serving certificate for `names` (DNS names or IP addresses), valid from a
/// day before `now` (clock skew) for [`GENERATED_LIFETIME`].
pub fn generate(names: &[String], now: Timestamp) -> Result<Generated, CertError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let day = |t: Timestamp| {
        let d = t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
        // jiff's month and day are always in range for these.
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let not_before = day(now - SignedDuration::from_hours(24));
    let not_after_ts = now + GENERATED_LIFETIME;
    let not_after = day(not_after_ts);

    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "volley-operator webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("volley-operator", String::as_str),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        serving: PemPair {
            cert: leaf_cert.pem(),
            key: leaf_key.serialize_pem(),
        },
        // The certificate says midnight of that day; renewal only needs about when.
        not_after: not_after_ts,
    })
}

/// Whether a generated certificate expiring at `not_after` is renewed at `now`: when less
/// than a third of [`GENERATED_LIFETIME`] is left.
pub fn needs_renewal(not_after: Timestamp, now: Timestamp) -> bool {
    not_after.duration_since(now) < GENERATED_LIFETIME / 3
}

/// Parses a PEM certificate chain and private key into what rustls serves.
pub fn certified_key(pair: &PemPair) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Pem("no certificate in the PEM text".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes())
        .map_err(|e| CertError::Pem(format!("private key: {e}")))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate being served, replaced on renewal or reload while connections go on.
#[derive(Debug)]
pub struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore(RwLock::new(Arc::new(key))))
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reads `tls.crt` and `tls.key` from `dir` (the layout of a `kubernetes.io/tls` Secret).
pub fn read_dir_pair(dir: &Path) -> Result<PemPair, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
    };
    Ok(PemPair {
        cert: read("tls.crt")?,
        key: read("tls.key")?,
    })
}

#[derive(Clone)]
struct Handler {
    client: kube::Client,
    defaults: Arc<RunnerDefaults>,
}

/// The webhook's routes: [`VALIDATE_PATH`].
pub fn router(client: kube::Client, defaults: RunnerDefaults) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(validate))
        // An UPDATE carries the object twice, each up to the API server's ~1.5 MiB.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(Handler {
            client,
            defaults: Arc::new(defaults),
        })
}

async fn validate(
    State(h): State<Handler>,
    axum::Json(review): axum::Json<AdmissionReview<DynamicObject>>,
) -> axum::Json<AdmissionReview<DynamicObject>> {
    axum::Json(crate::admission::review(&h.client, &h.defaults, review).await)
}

/// Serves `router` over TLS with the certificate in `store` on `listener` until `stop` turns
/// true. Handshakes run beside the accept loop (a slow peer holds only its own connection),
/// each bounded by [`HANDSHAKE_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    store: Arc<CertStore>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = match rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot configure TLS for the webhook");
            return;
        }
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stopped = Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in this directory, reloaded when they change.
    Dir(PathBuf),
    /// Generated for these names; the CA goes into the named ValidatingWebhookConfiguration.
    Generated {
        /// The serving certificate's names.
        names: Vec<String>,
        /// The ValidatingWebhookConfiguration whose `caBundle` is written.
        configuration: String,
    },
}

/// The certificate being served and, when generated, the CA to publish.
pub struct Certificates {
    /// What the server presents.
    pub store: Arc<CertStore>,
    /// The generated CA (PEM), `None` for mounted files.
    pub ca_pem: Arc<RwLock<Option<String>>>,
    source: CertSource,
    not_after: Option<Timestamp>,
    last_pair: PemPair,
}

impl Certificates {
    /// Loads or generates the first certificate.
    pub fn start(source: CertSource) -> Result<Certificates, CertError> {
        let (pair, ca, not_after) = match &source {
            CertSource::Dir(dir) => (read_dir_pair(dir)?, None, None),
            CertSource::Generated { names, .. } => {
                let g = generate(names, Timestamp::now())?;
                (g.serving, Some(g.ca_pem), Some(g.not_after))
            }
        };
        Ok(Certificates {
            store: CertStore::new(certified_key(&pair)?),
            ca_pem: Arc::new(RwLock::new(ca)),
            source,
            not_after,
            last_pair: pair,
        })
    }

    /// One maintenance step at `now`: reloads changed files, or renews a generated certificate
    /// that [`needs_renewal`]. True when a new generated CA must be published.
    pub fn refresh(&mut self, now: Timestamp) -> Result<bool, CertError> {
        match &self.source {
            CertSource::Dir(dir) => {
                let pair = read_dir_pair(dir)?;
                if pair != self.last_pair {
                    self.store.replace(certified_key(&pair)?);
                    tracing::info!(dir = %dir.display(), "webhook certificate reloaded");
                    self.last_pair = pair;
                }
                Ok(false)
            }
            CertSource::Generated { names, .. } => {
                if !self.not_after.is_some_and(|t| needs_renewal(t, now)) {
                    return Ok(false);
                }
                let g = generate(names, now)?;
                self.store.replace(certified_key(&g.serving)?);
                *self
                    .ca_pem
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(g.ca_pem);
                self.not_after = Some(g.not_after);
                self.last_pair = g.serving;
                tracing::info!(not_after = %g.not_after, "webhook certificate renewed");
                Ok(true)
            }
        }
    }

    /// The ValidatingWebhookConfiguration to publish the CA in, for generated certificates.
    pub fn configuration(&self) -> Option<&str> {
        match &self.source {
            CertSource::Generated { configuration, .. } => Some(configuration),
            CertSource::Dir(_) => None,
        }
    }

    /// Keeps the certificate fresh until `stop`: reloads or renews, and publishes a renewed CA
    /// while this replica `leading`.
    pub async fn maintain(
        mut self,
        client: kube::Client,
        leading: Arc<AtomicBool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let every = match self.source {
            CertSource::Dir(_) => RELOAD_INTERVAL,
            CertSource::Generated { .. } => RENEW_CHECK_INTERVAL,
        };
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.refresh(Timestamp::now()) {
                Ok(true) if leading.load(Ordering::SeqCst) => {
                    if let Some(name) = self.configuration() {
                        publish_logged(&client, name, &self.ca_pem).await;
                    }
                }
                Ok(_) => {}
                // Keep serving the last good certificate; the next round tries again.
                Err(e) => tracing::warn!(error = %e, "webhook certificate not refreshed"),
            }
        }
    }
}

/// Writes `ca_pem` as the `caBundle` of every webhook of ValidatingWebhookConfiguration
/// `name` (the chart's one or more).
pub async fn publish_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    let api: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
    let current = api.get(name).await?;
    if let Some(patch) = ca_bundle_patch(&current, ca_pem) {
        api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
    }
    Ok(())
}

/// The strategic merge patch that sets every webhook's `clientConfig.caBundle` of `config` to
/// `ca_pem` (webhooks merge by name, so nothing else changes); `None` when all already hold
/// it.
pub fn ca_bundle_patch(
    config: &ValidatingWebhookConfiguration,
    ca_pem: &str,
) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let hooks = config.webhooks.as_deref().unwrap_or_default();
    let stale = hooks.iter().any(|h| {
        h.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem.as_bytes())
    });
    if !stale {
        return None;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let webhooks: Vec<serde_json::Value> = hooks
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    Some(serde_json::json!({ "webhooks": webhooks }))
}

/// [`publish_ca_bundle`] with the current CA, logging the outcome.
pub async fn publish_logged(client: &kube::Client, name: &str, ca: &RwLock<Option<String>>) {
    let ca_pem = ca
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(ca_pem) = ca_pem else { return };
    match publish_ca_bundle(client, name, &ca_pem).await {
        Ok(()) => tracing::info!(configuration = %name, "webhook CA bundle published"),
        Err(e) => {
            tracing::error!(configuration = %name, error = %e, "cannot publish the webhook CA bundle; the API server will not trust this replica's webhook")
        }
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
