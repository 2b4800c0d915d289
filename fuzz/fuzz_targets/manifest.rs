//! Any bytes as a LoadTest manifest: parsing and validation must not panic or hang, both
//! validation views must list at most `MAX_ERRORS` + 1 errors, and a manifest that parses must
//! read back the same after printing it as YAML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_core::manifest::{parse_manifest, parse_manifest_bytes};
use volley_core::validate::{MAX_ERRORS, validate, validate_for_cluster};

fuzz_target!(|data: &[u8]| {
    let Ok(lt) = parse_manifest_bytes(data) else {
        return;
    };
    if let Err(errors) = validate(&lt.spec) {
        assert!(
            errors.len() <= MAX_ERRORS + 1,
            "validate: {} errors",
            errors.len()
        );
    }
    if let Err(errors) = validate_for_cluster(&lt.spec) {
        assert!(
            errors.len() <= MAX_ERRORS + 1,
            "validate_for_cluster: {} errors",
            errors.len()
        );
    }
    let yaml = serde_norway::to_string(&lt).expect("a parsed LoadTest prints");
    let again = parse_manifest(&yaml).expect("a printed LoadTest parses");
    assert_eq!(again.spec, lt.spec);
});
