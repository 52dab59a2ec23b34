//! The CI smoke of every fuzz target: its seed corpus (`crates/fuzz/corpus/<target>/`) and a few
//! thousand mutated or random inputs, on stable with no special flags. The long runs are
//! `scripts/fuzz.sh` (docs/testing.md).

fn smoke(name: &str) {
    let target = fuzz::target(name).expect("target exists");
    let seeds = fuzz::seeds(name).len();
    assert!(seeds > 0, "{name}: no seed corpus");
    let ran = fuzz::smoke(target, target.smoke_inputs, 0x5eed_0000 + seeds as u64);
    assert_eq!(ran, seeds + target.smoke_inputs);
}

#[test]
fn every_target_has_a_smoke_test() {
    let here = include_str!("smoke.rs");
    for t in fuzz::TARGETS {
        assert!(
            here.contains(&format!("fn {}()", t.name)),
            "{} has no smoke test",
            t.name
        );
    }
}

#[test]
fn params() {
    smoke("params");
}

#[test]
fn volume_context() {
    smoke("volume_context");
}

#[test]
fn pfx() {
    smoke("pfx");
}

#[test]
fn keyvault_json() {
    smoke("keyvault_json");
}

#[test]
fn entra_json() {
    smoke("entra_json");
}

#[test]
fn csi_publish() {
    smoke("csi_publish");
}

#[test]
fn emulator_http() {
    smoke("emulator_http");
}

#[test]
fn the_fuzz_script_runs_every_target_with_its_max_len() {
    let script = include_str!("../../../scripts/fuzz.sh");
    for t in fuzz::TARGETS {
        let entry = format!("{}:{}", t.name, t.max_len);
        assert!(
            script.contains(&entry),
            "scripts/fuzz.sh does not list {entry}"
        );
    }
}
