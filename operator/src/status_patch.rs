//! The JSON merge patch that writes a status to the status subresource.
//!
//! `LoadTestStatus` leaves unset fields out when serialized, and a merge patch leaves out
//! fields alone, so a field the new status drops (e.g. the `message` of an earlier phase) must
//! be sent as `null` to be removed. [`status_patch`] does that for every top-level field.

use serde_json::{Map, Value};
use volley_crds::LoadTestStatus;

/// `{"status": NEW}`, with `null` for every top-level field of `old` that `new` lacks.
pub fn status_patch(old: Option<&LoadTestStatus>, new: &LoadTestStatus) -> Value {
    let mut fields = match serde_json::to_value(new) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if let Some(Ok(Value::Object(old))) = old.map(serde_json::to_value) {
        for key in old.keys() {
            if !fields.contains_key(key) {
                fields.insert(key.clone(), Value::Null);
            }
        }
    }
    serde_json::json!({ "status": fields })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use volley_crds::status::Phase;

    use super::*;

    #[test]
    fn dropped_fields_become_null() {
        let old = LoadTestStatus {
            phase: Some(Phase::Starting),
            reason: Some("WaitingForRunners".into()),
            message: Some("1/2 ready".into()),
            ..Default::default()
        };
        let new = LoadTestStatus {
            phase: Some(Phase::Running),
            reason: Some("LoadRunning".into()),
            ..Default::default()
        };
        assert_eq!(
            status_patch(Some(&old), &new),
            serde_json::json!({"status": {"phase": "Running", "reason": "LoadRunning", "message": null}})
        );
        assert_eq!(
            status_patch(None, &new),
            serde_json::json!({"status": {"phase": "Running", "reason": "LoadRunning"}})
        );
    }
}
