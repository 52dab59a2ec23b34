//! The container images `scripts/images.sh` writes to `target/images/` are what a node can run:
//! well-formed OCI archives (every digest and size recomputed), named as the charts expect by
//! default, labelled, and with a layer that is a self-sufficient root filesystem for the release
//! binary built here — its loader and exactly the libraries it needs, a CA bundle and
//! `nsswitch.conf` — proven by running the binary from the unpacked layer under chroot(2).
//!
//! Missing archives fail the test under `CI=true` (naming the command that builds them); outside
//! CI the test prints a notice and returns.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest, Sha256};

const BUILD_COMMAND: &str = "bash scripts/images.sh";
const REPOSITORY: &str = "ghcr.io/secrets-store-rs";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the image's dynamic loader looks without an ld.so.cache (glibc's trusted directories on
/// a multiarch system), and so where the layer's libraries must be.
const LIBRARY_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// One image: its name (binary, archive and repository) and whether it must run as non-root.
struct Image {
    name: &'static str,
    non_root: bool,
}

const DRIVER: Image = Image {
    name: "secrets-store-csi-driver",
    // mount(2) of the pods' tmpfs volumes needs root (the chart runs it privileged).
    non_root: false,
};
const PROVIDER: Image = Image {
    name: "secrets-store-provider-azure",
    non_root: true,
};
const EMULATOR: Image = Image {
    name: "keyvault-emulator",
    non_root: true,
};
const SYNC_CONTROLLER: Image = Image {
    name: "secrets-store-sync-controller",
    non_root: true,
};

#[test]
fn the_driver_image_is_a_self_sufficient_oci_archive() {
    check_image(&DRIVER);
}

#[test]
fn the_provider_image_is_a_self_sufficient_oci_archive_running_as_non_root() {
    check_image(&PROVIDER);
}

#[test]
fn the_emulator_image_is_a_self_sufficient_oci_archive_running_as_non_root() {
    check_image(&EMULATOR);
}

#[test]
fn the_sync_controller_image_is_a_self_sufficient_oci_archive_running_as_non_root() {
    check_image(&SYNC_CONTROLLER);
}

#[test]
fn the_charts_default_to_the_images_built_here() {
    for (chart, image) in [
        ("secrets-store-csi-driver", &DRIVER),
        ("csi-secrets-store-provider-azure", &PROVIDER),
    ] {
        let path = test_support::project_root().join(format!("charts/{chart}/values.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let values: serde_json::Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        // The driver image also runs the driver chart's CRD hook Job.
        let keys: &[&str] = if image.name == DRIVER.name {
            &["image", "crds.image"]
        } else {
            &["image"]
        };
        for key in keys {
            let image_values = key.split('.').fold(&values["linux"], |v, part| &v[part]);
            assert_eq!(
                image_values["repository"].as_str(),
                Some(format!("{REPOSITORY}/{}", image.name).as_str()),
                "{chart}: linux.{key}.repository"
            );
            assert_eq!(
                image_values["tag"].as_str(),
                Some(VERSION),
                "{chart}: linux.{key}.tag"
            );
        }
    }
}

#[test]
fn the_sync_controller_chart_value_defaults_to_the_image_built_here() {
    let path =
        test_support::project_root().join("charts/csi-secrets-store-provider-azure/values.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let values: serde_json::Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let image = &values["syncController"]["image"];
    assert_eq!(
        image["repository"].as_str(),
        Some(format!("{REPOSITORY}/{}", SYNC_CONTROLLER.name).as_str()),
        "syncController.image.repository"
    );
    assert_eq!(
        image["tag"].as_str(),
        Some(VERSION),
        "syncController.image.tag"
    );
}

#[test]
fn the_dockerfiles_build_the_same_layout() {
    for (file, image) in [
        ("driver.Dockerfile", &DRIVER),
        ("provider-azure.Dockerfile", &PROVIDER),
        ("sync-controller.Dockerfile", &SYNC_CONTROLLER),
    ] {
        let path = test_support::project_root().join("docker").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let has = |line: &str| lines.contains(&line);
        assert!(
            text.contains("rootfs_assemble"),
            "{file}: assembles the root filesystem with scripts/lib/rootfs.sh"
        );
        assert!(
            text.contains("--profile dist") && text.contains("target-feature=+crt-static"),
            "{file}: builds the binary as scripts/images.sh does (`--profile dist`, static glibc)"
        );
        assert!(
            has("FROM scratch"),
            "{file}: the final stage starts from scratch"
        );
        assert!(
            !text.contains("apt-get"),
            "{file}: installs no packages into the image"
        );
        assert!(
            has(&format!("ARG VERSION={VERSION}")),
            "{file}: ARG VERSION must default to the workspace version {VERSION}"
        );
        assert!(
            has(&format!("ENTRYPOINT [\"/usr/local/bin/{}\"]", image.name)),
            "{file}: entrypoint"
        );
        let user = if image.non_root {
            "USER 65532:65532"
        } else {
            "USER 0:0"
        };
        assert!(has(user), "{file}: {user}");
    }
}

// === the checks ===

fn check_image(image: &Image) {
    let Some(archive_path) = archive(image.name) else {
        return;
    };
    let archive = read_tar(
        std::fs::File::open(&archive_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", archive_path.display())),
    );
    let context = archive_path.display().to_string();

    // The layout: oci-layout, index.json naming the image as containerd and the charts expect.
    let layout: serde_json::Value =
        serde_json::from_slice(file(&archive, "oci-layout", &context)).expect("oci-layout JSON");
    assert_eq!(
        layout["imageLayoutVersion"], "1.0.0",
        "{context}: oci-layout"
    );
    let index: ImageIndex =
        serde_json::from_slice(file(&archive, "index.json", &context)).expect("index.json");
    assert_eq!(
        index.manifests().len(),
        1,
        "{context}: one manifest in index.json"
    );
    let manifest_descriptor = &index.manifests()[0];
    assert_eq!(
        manifest_descriptor.media_type(),
        &MediaType::ImageManifest,
        "{context}"
    );
    let reference = format!("{REPOSITORY}/{}:{VERSION}", image.name);
    let annotations = manifest_descriptor
        .annotations()
        .clone()
        .unwrap_or_default();
    assert_eq!(
        annotations.get("io.containerd.image.name"),
        Some(&reference),
        "{context}: the name `ctr images import` gives the image"
    );
    assert_eq!(
        annotations.get("org.opencontainers.image.ref.name"),
        Some(&VERSION.to_string()),
        "{context}: ref.name"
    );

    // Every blob: the digest and size its descriptor claims.
    let manifest: ImageManifest =
        serde_json::from_slice(blob(&archive, manifest_descriptor, &context)).expect("manifest");
    assert_eq!(manifest.schema_version(), 2, "{context}");
    assert_eq!(
        manifest.config().media_type(),
        &MediaType::ImageConfig,
        "{context}"
    );
    let config: ImageConfiguration =
        serde_json::from_slice(blob(&archive, manifest.config(), &context)).expect("config");
    assert_eq!(manifest.layers().len(), 1, "{context}: one layer");
    let layer_descriptor = &manifest.layers()[0];
    let layer_blob = blob(&archive, layer_descriptor, &context);
    let layer_tar = match layer_descriptor.media_type() {
        MediaType::ImageLayerGzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(layer_blob)
                .read_to_end(&mut out)
                .expect("gunzip the layer");
            out
        }
        MediaType::ImageLayer => layer_blob.to_vec(),
        other => panic!("{context}: unexpected layer media type {other}"),
    };
    assert_eq!(
        config.rootfs().diff_ids(),
        &vec![format!("sha256:{}", sha256_hex(&layer_tar))],
        "{context}: diff_ids must be the digest of the uncompressed layer"
    );

    // The configuration: platform, entrypoint, user, labels.
    assert_eq!(config.os().to_string(), "linux", "{context}");
    let expected_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(
        config.architecture().to_string(),
        expected_arch,
        "{context}"
    );
    let runtime = config
        .config()
        .clone()
        .expect("the image has a runtime config");
    let entrypoint = format!("/usr/local/bin/{}", image.name);
    assert_eq!(
        runtime.entrypoint().clone().unwrap_or_default(),
        vec![entrypoint.clone()],
        "{context}: entrypoint"
    );
    let user = runtime.user().clone().unwrap_or_default();
    let uid: u32 = if user.is_empty() {
        0
    } else {
        user.split(':')
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("{context}: the user {user:?} is not numeric"))
    };
    if image.non_root {
        assert_ne!(uid, 0, "{context}: must run as non-root, runs as {user:?}");
    } else {
        assert_eq!(uid, 0, "{context}: must run as root, runs as {user:?}");
    }
    let labels = runtime.labels().clone().unwrap_or_default();
    let label = |key: &str| -> &str {
        labels
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{context}: no label {key} in {labels:?}"))
    };
    assert_eq!(label("org.opencontainers.image.version"), VERSION);
    assert_eq!(label("org.opencontainers.image.title"), image.name);
    assert!(label("org.opencontainers.image.source").starts_with("https://"));
    let revision = label("org.opencontainers.image.revision");
    let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{context}: org.opencontainers.image.revision {revision:?} is not a git commit"
    );

    // The layer: unpacked into a temporary root filesystem.
    let rootfs = tempfile::tempdir().expect("temp dir");
    let mut layer = tar::Archive::new(layer_tar.as_slice());
    layer.set_preserve_permissions(true);
    layer.unpack(rootfs.path()).expect("unpack the layer");
    let root = rootfs.path();

    // The entrypoint is the binary scripts/images.sh built here, not an older one.
    let in_image = std::fs::read(root.join(entrypoint.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{context}: no {entrypoint} in the layer: {e}"));
    let built_path = shipped_binary(image.name);
    let built =
        std::fs::read(&built_path).unwrap_or_else(|e| panic!("read {}: {e}", built_path.display()));
    assert!(
        in_image == built,
        "{context}: {entrypoint} is not {} (stale archive? run `{BUILD_COMMAND}`)",
        built_path.display()
    );

    // Its loader and every library it needs, transitively, and no library it does not need.
    let needed = needed_libraries(root, &entrypoint, &context);
    let present = shared_objects_in(root);
    assert_eq!(
        present, needed,
        "{context}: the layer's shared objects must be exactly those the binary loads"
    );

    // What name resolution and TLS need.
    let ca = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt"))
        .unwrap_or_else(|e| panic!("{context}: no CA bundle: {e}"));
    assert!(
        ca.contains("-----BEGIN CERTIFICATE-----"),
        "{context}: the CA bundle has no certificate"
    );
    let nsswitch = std::fs::read_to_string(root.join("etc/nsswitch.conf"))
        .unwrap_or_else(|e| panic!("{context}: no /etc/nsswitch.conf: {e}"));
    assert!(
        nsswitch
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["hosts:", "files", "dns"]),
        "{context}: /etc/nsswitch.conf must say `hosts: files dns`:\n{nsswitch}"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap_or_else(|e| panic!("{context}: no /etc/passwd: {e}"));
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid.to_string().as_str())),
        "{context}: /etc/passwd has no user {uid}"
    );

    // The proof: the binary runs from the layer alone, with the layer's own loader and libraries,
    // as the image's user.
    run_in_rootfs(root, &entrypoint, &user, &context);
}

/// Runs `ENTRYPOINT --version` chrooted into `root` as `user` (needs root; skipped otherwise
/// outside CI).
fn run_in_rootfs(root: &Path, entrypoint: &str, user: &str, context: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        let message =
            format!("{context}: running the binary under chroot needs root (euid {euid}); not run");
        assert!(!test_support::in_ci(), "{message}");
        eprintln!("NOTICE: {message}");
        return;
    }
    let mut command = Command::new("chroot");
    if !user.is_empty() {
        command.arg(format!("--userspec={user}"));
    }
    let out = command
        .arg(root)
        .arg(entrypoint)
        .arg("--version")
        // Nothing of the test's environment reaches the binary; PATH only finds chroot itself.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("run chroot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{context}: `chroot {} {entrypoint} --version` failed ({}): {}{}",
        root.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(VERSION),
        "{context}: --version printed no {VERSION}: {stdout}"
    );
}

/// The layer path of every shared object `entrypoint` loads: its interpreter (PT_INTERP) and the
/// transitive closure of DT_NEEDED, each resolved in [`LIBRARY_DIRS`] of the layer. Panics on one
/// that is missing.
fn needed_libraries(root: &Path, entrypoint: &str, context: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut queue = vec![entrypoint.trim_start_matches('/').to_string()];
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let bytes = std::fs::read(root.join(&path))
            .unwrap_or_else(|e| panic!("{context}: read /{path} in the layer: {e}"));
        let elf = goblin::elf::Elf::parse(&bytes)
            .unwrap_or_else(|e| panic!("{context}: /{path} is not ELF: {e}"));
        if let Some(interpreter) = elf.interpreter {
            let interpreter = interpreter.trim_start_matches('/');
            assert!(
                root.join(interpreter).is_file(),
                "{context}: /{path} needs the loader /{interpreter}, which is not in the layer"
            );
            found.insert(canonical_in(root, interpreter));
            queue.push(interpreter.to_string());
        }
        for library in &elf.libraries {
            let resolved = LIBRARY_DIRS
                .iter()
                .map(|dir| format!("{dir}/{library}"))
                .find(|candidate| root.join(candidate).is_file())
                .unwrap_or_else(|| {
                    panic!(
                        "{context}: /{path} needs {library}, found in none of {LIBRARY_DIRS:?} of the layer"
                    )
                });
            found.insert(canonical_in(root, &resolved));
            queue.push(resolved);
        }
    }
    found
}

/// `path` (relative to `root`) with symbolic links inside the layer resolved, relative to `root`.
fn canonical_in(root: &Path, path: &str) -> String {
    let real = root
        .join(path)
        .canonicalize()
        .unwrap_or_else(|e| panic!("canonicalize {path}: {e}"));
    let root = root.canonicalize().expect("canonicalize the rootfs");
    real.strip_prefix(&root)
        .unwrap_or_else(|_| panic!("{path} leads out of the layer"))
        .to_string_lossy()
        .into_owned()
}

/// Every regular file of the layer whose name looks like a shared object (`*.so`, `*.so.N`),
/// relative to `root`.
fn shared_objects_in(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let file_type = entry.file_type().expect("file type");
            let path = entry.path();
            if file_type.is_dir() {
                walk(&path, root, out);
            } else if file_type.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".so") || name.contains(".so.") {
                    out.insert(canonical_in(
                        root,
                        &path.strip_prefix(root).expect("in root").to_string_lossy(),
                    ));
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

// === reading archives ===

/// The archive's path, or `None` (after a notice) when it is missing outside CI.
fn archive(name: &str) -> Option<PathBuf> {
    let path = target_dir().join(format!("images/{name}.tar"));
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "the image archive {} is missing — build it with `{BUILD_COMMAND}`",
        path.display()
    );
    assert!(!test_support::in_ci(), "{message}");
    eprintln!("\n!!!!!!!!\nSKIPPING TEST (not in CI): {message}\n!!!!!!!!\n");
    None
}

/// The cargo target folder this test was built in (`CARGO_TARGET_DIR` included), from the test
/// executable's path `<target>/<profile>/deps/<test>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()))
        .to_path_buf()
}

/// Where scripts/images.sh builds the binary: `--profile dist --target <host triple>`.
fn shipped_binary(name: &str) -> PathBuf {
    let triple = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .expect("rustc -vV names the host triple");
    target_dir().join(triple).join("dist").join(name)
}

/// Every regular file of a tar stream, by name without a leading `./`.
fn read_tar(reader: impl Read) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        files.insert(name.trim_start_matches("./").to_string(), bytes);
    }
    files
}

fn file<'a>(archive: &'a BTreeMap<String, Vec<u8>>, name: &str, context: &str) -> &'a [u8] {
    archive
        .get(name)
        .unwrap_or_else(|| panic!("{context}: no {name} in the archive"))
}

/// The blob a descriptor points at, after checking its size and sha256 digest.
fn blob<'a>(
    archive: &'a BTreeMap<String, Vec<u8>>,
    descriptor: &Descriptor,
    context: &str,
) -> &'a [u8] {
    let digest = descriptor.digest().to_string();
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{context}: digest {digest} is not sha256"));
    let bytes = file(archive, &format!("blobs/sha256/{hex}"), context);
    assert_eq!(
        bytes.len() as u64,
        descriptor.size(),
        "{context}: size of {digest}"
    );
    assert_eq!(sha256_hex(bytes), hex, "{context}: content of {digest}");
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
