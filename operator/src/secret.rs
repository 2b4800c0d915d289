//! The per-run Secret: the bearer token every runner of the run presents to the aggregator.
//!
//! The token is 32 random bytes written as 64 hex digits. It lives in the Secret, in the
//! aggregator's memory and in the runner pods' environment; [`Token`] never prints it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::RngCore;

use crate::names::RunRef;

/// Key of the token in the run's Secret.
pub const TOKEN_KEY: &str = "token";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A run's bearer token. `Debug` and `Display` print `[redacted]`, so it cannot end up in a log
/// line by accident; [`Token::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token from the thread's cryptographically secure generator.
    pub fn generate() -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token read from a run's Secret, if it holds a non-empty UTF-8 one.
    pub fn from_secret(secret: &Secret) -> Option<Token> {
        let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
        let text = std::str::from_utf8(&bytes.0).ok()?.trim();
        (!text.is_empty()).then(|| Token(text.to_string()))
    }

    /// The token itself, for the Secret and the aggregator. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Secret of `run` holding `token`, owned by the LoadTest.
pub fn run_secret(run: &RunRef, token: &Token) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(run.secret_name.clone()),
            namespace: Some(run.namespace.clone()),
            labels: Some(run.labels()),
            owner_references: Some(vec![run.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn tokens_are_random_hex_and_never_printed() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(format!("{a:?}"), "Token([redacted])");
        assert_eq!(format!("{a}"), "[redacted]");
        assert!(!format!("{:?}", Some(&a)).contains(a.expose()));
    }

    #[test]
    fn the_secret_is_owned_labelled_and_round_trips_the_token() {
        let run = RunRef::of(&fixtures::loadtest("web", 2)).unwrap();
        let token = Token::generate();
        let secret = run_secret(&run, &token);
        assert_eq!(secret.metadata.name.as_deref(), Some("web-run-token"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "LoadTest");
        assert_eq!(owner.uid, fixtures::UID);
        assert_eq!(owner.controller, Some(true));
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["volley.dev/run"], fixtures::UID);
        assert_eq!(Token::from_secret(&secret), Some(token.clone()));
        let json = serde_json::to_value(&secret).unwrap();
        assert_eq!(
            json["data"]["token"].as_str().map(str::len),
            Some(88),
            "base64 of 64 characters"
        );
        assert_eq!(Token::from_secret(&Secret::default()), None);
    }
}
