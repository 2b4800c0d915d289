//! The per-run Secret: the run's token, and each runner's credential derived from it.
//!
//! The token is 32 random bytes written as 64 hex digits. It lives in the Secret and in the
//! aggregator's memory; [`Token`] never prints it. Runner pods get only their own credential
//! (key [`runner_key`], see [`volley_aggregator::server::runner_credential`]) in their
//! environment, so a runner can speak to the aggregator only for itself.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::RngCore;

use crate::names::RunRef;

/// Key of the token in the run's Secret.
pub const TOKEN_KEY: &str = "token";

/// Key of runner `index`'s credential in the run's Secret: `runner-INDEX`.
pub fn runner_key(index: u32) -> String {
    format!("runner-{index}")
}

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

/// The Secret of `run` holding `token` and the credentials of its `runners` runners, owned by
/// the LoadTest.
pub fn run_secret(run: &RunRef, token: &Token, runners: u32) -> Secret {
    let mut data = BTreeMap::from([(
        TOKEN_KEY.to_string(),
        ByteString(token.expose().as_bytes().to_vec()),
    )]);
    for index in 0..runners {
        let credential = volley_aggregator::server::runner_credential(token.expose(), index);
        data.insert(runner_key(index), ByteString(credential.into_bytes()));
    }
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
        data: Some(data),
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
        let secret = run_secret(&run, &token, 2);
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
        // One credential per runner, derived from the token, and not the token.
        let data = secret.data.as_ref().unwrap();
        let runner_1 = std::str::from_utf8(&data["runner-1"].0).unwrap();
        assert_eq!(
            runner_1,
            volley_aggregator::server::runner_credential(token.expose(), 1)
        );
        assert_ne!(runner_1, token.expose());
        assert!(!data.contains_key("runner-2"));
    }
}
