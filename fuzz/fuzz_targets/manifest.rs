//! Any bytes as a LoadTest manifest: parsing and validation must not panic or hang, and a
//! manifest that parses must read back the same after printing it as YAML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_crds::manifest::{parse_manifest, parse_manifest_bytes};
use volley_crds::validate::{undeclared_env, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(lt) = parse_manifest_bytes(data) else {
        return;
    };
    let _ = validate(&lt.spec);
    let _ = undeclared_env(&lt.spec);
    let yaml = serde_norway::to_string(&lt).expect("a parsed LoadTest prints");
    let again = parse_manifest(&yaml).expect("a printed LoadTest parses");
    assert_eq!(again.spec, lt.spec);
});
