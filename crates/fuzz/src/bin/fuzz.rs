//! The libFuzzer binary: `FUZZ_TARGET=<name> fuzz [libFuzzer flags] <corpus dirs>`. Built by
//! `scripts/fuzz.sh` with the sanitizer-coverage flags (stable rustc, no nightly); see
//! `docs/testing.md`.

#![no_main]
// `fuzz_target!` exports `rust_fuzzer_test_input` with `#[no_mangle]`.
#![allow(unsafe_code)]

use std::sync::OnceLock;

fn target() -> &'static fuzz::Target {
    static T: OnceLock<&'static fuzz::Target> = OnceLock::new();
    T.get_or_init(|| {
        let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
        fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!("set FUZZ_TARGET to one of: {}", names.join(", "));
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (target().run)(data);
});
