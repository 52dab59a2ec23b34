//! Fuzz targets for every input the driver, the provider and the Key Vault emulator take from
//! outside the process.
//!
//! Each target is a plain `fn(&[u8])` that panics when it finds a bug (a panic in the code under
//! test, or a broken invariant it checks). They run two ways:
//!
//! - `cargo test -p fuzz` (the smoke test, `tests/smoke.rs`): every target over its seed corpus
//!   (`corpus/<target>/`) plus a few thousand inputs from a small mutation loop ([`smoke`]), on
//!   the stable toolchain with no special flags;
//! - `scripts/fuzz.sh [seconds]`: the libFuzzer binary (`src/bin/fuzz.rs`, feature `libfuzzer`)
//!   built with the stable `-Cpasses=sancov-module` coverage flags, each target for a set time.
//!
//! The first byte of most inputs picks a mode (raw text for the parser, or a structured input
//! built with [`arbitrary::Unstructured`] that gets past the validation to the deeper code).

pub mod input;
pub mod targets;

/// One fuzz target.
pub struct Target {
    /// Name on the command line, the corpus folder and the crash folder.
    pub name: &'static str,
    /// Runs one input; panics on a bug.
    pub run: fn(&[u8]),
    /// libFuzzer's `-max_len` for it.
    pub max_len: usize,
    /// Inputs the smoke test generates for it (the slow targets get fewer).
    pub smoke_inputs: usize,
    /// What it covers.
    pub about: &'static str,
}

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "params",
        run: targets::params::run,
        max_len: 4096,
        smoke_inputs: 6000,
        about: "provider-azure MountParams::parse: attributes JSON with every parameter, the `objects` YAML, secrets JSON",
    },
    Target {
        name: "volume_context",
        run: targets::volume_context::run,
        max_len: 4096,
        smoke_inputs: 6000,
        about: "driver VolumeContext::parse, provider_attributes / provider_secrets JSON, then the provider's parse of them",
    },
    Target {
        name: "pfx",
        run: targets::pfx::run,
        max_len: 8192,
        smoke_inputs: 2000,
        about: "pfx::decode / decode_with_password, bags behind a valid MAC, provider PFX→PEM, encode round trip",
    },
    Target {
        name: "keyvault_json",
        run: targets::keyvault_json::run,
        max_len: 8192,
        smoke_inputs: 6000,
        about: "keyvault-client response models (secret, key, certificate, versions, error) and the provider's rendering",
    },
    Target {
        name: "entra_json",
        run: targets::entra_json::run,
        max_len: 4096,
        smoke_inputs: 6000,
        about: "entra-auth token / IMDS / NMI responses, error bodies, the Key Vault challenge, client assertions",
    },
    Target {
        name: "csi_publish",
        run: targets::csi_publish::run,
        max_len: 4096,
        smoke_inputs: 1500,
        about: "driver NodePublishVolume / NodeUnpublishVolume over gRPC metadata, a fake provider on a unix socket, a temp dir",
    },
    Target {
        name: "emulator_http",
        run: targets::emulator_http::run,
        max_len: 8192,
        smoke_inputs: 1000,
        about: "keyvault-emulator HTTP requests: data-plane routes and JSON bodies, Entra token, IMDS, NMI, admin",
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The seed corpus of a target: `crates/fuzz/corpus/<name>/*`, sorted by file name.
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect();
    out.sort();
    out
}

// === panics on other threads ===

/// The names of the threads that panicked, in order (see [`count_panics`]).
static PANICKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records the thread name of every panic of the process (then runs the previous hook), so a
/// target can tell that one of its own threads panicked where the panic is otherwise swallowed
/// (a tokio task, a `spawn_blocking` closure, a hyper connection). Idempotent.
pub fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            PANICKED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name);
            previous(info);
        }));
    });
}

/// Panics so far on threads whose name starts with `prefix` (see [`count_panics`]).
pub fn panics_on(prefix: &str) -> usize {
    PANICKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|n| n.starts_with(prefix))
        .count()
}

/// Runs `f` and panics if a thread named `<threads>…` (a target's runtime) panicked meanwhile.
pub(crate) fn no_panic_on<T>(threads: &str, f: impl FnOnce() -> T) -> T {
    count_panics();
    let before = panics_on(threads);
    let out = f();
    let after = panics_on(threads);
    assert_eq!(
        before, after,
        "a panic on a {threads} thread (see the panic message above)"
    );
    out
}

// === the smoke test's mutation loop ===

/// A small xorshift generator (deterministic, no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Interesting bytes and tokens the mutator splices in.
const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\"",
    b"\\",
    b"/",
    b"..",
    b"\n",
    b"- |\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"18446744073709551615",
    b"99999999999999999999",
    b"1e308",
    b"\\u0000",
    b"\xf0\x9f\x92\xa9",
    b"\xc3",
];

/// One mutation of `input`: bit flips, byte sets, token splices, truncation, duplication or a
/// crossover with `other`, up to `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(v.len() + 1);
                v.splice(i..i, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i + 1).min(16);
                v.drain(i..i + n);
            }
            4 if !v.is_empty() => {
                let cut = rng.below(v.len());
                v.truncate(cut);
            }
            5 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i + 1).min(64);
                let chunk = v[i..i + n].to_vec();
                let j = rng.below(v.len() + 1);
                v.splice(j..j, chunk);
            }
            6 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                let n = rng.below(other.len() - j + 1).min(128);
                v.splice(i..i, other[j..j + n].iter().copied());
            }
            _ => {
                let n = rng.below(32);
                v.extend((0..n).map(|_| rng.next_u64() as u8));
            }
        }
    }
    v.truncate(max_len);
    v
}

/// The smoke test of one target: its seeds, then `extra` inputs, half of them mutated seeds and
/// half random bytes. Returns how many inputs ran. Panics (with the input in hex) on the first
/// failure.
pub fn smoke(target: &Target, extra: usize, seed: u64) -> usize {
    let seeds: Vec<Vec<u8>> = seeds(target.name).into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng::new(seed);
    let mut ran = 0;
    let run_one = |input: &[u8], ran: &mut usize| {
        let outcome = std::panic::catch_unwind(|| (target.run)(input));
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "fuzz target {} failed on input {} ({} bytes): {msg}",
                target.name,
                hex(input),
                input.len()
            );
        }
        *ran += 1;
    };
    for s in &seeds {
        run_one(s, &mut ran);
    }
    for i in 0..extra {
        let input = if i % 2 == 0 && !seeds.is_empty() {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, a, b, target.max_len)
        } else {
            let n = rng.below(target.max_len.min(512));
            (0..n).map(|_| rng.next_u64() as u8).collect()
        };
        run_one(&input, &mut ran);
    }
    ran
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes the hex a failure message prints (for regression tests).
pub fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    s.chunks(2)
        .filter_map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}
