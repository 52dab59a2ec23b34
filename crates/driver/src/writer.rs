//! Writing a provider's files into the target with kubelet's atomic-writer layout:
//!
//! ```text
//! <target>/..2026_11_23_10_00_00.123456789/<files>   the current payload
//! <target>/..data -> ..2026_11_23_10_00_00.123456789  swapped atomically by rename(2)
//! <target>/<top-level name> -> ..data/<top-level name>
//! ```
//!
//! Readers see either the old or the new payload, never a mix. Nothing is written when every
//! file has the same bytes and mode as the current payload and no file disappeared.
//!
//! A writer killed part way (the driver's process killed, the node's power kept) leaves the
//! visible payload whole, old or new: the top-level links of new names are created before the
//! `..data` swap and dangle until it, the links of names that went away are removed after it.
//! What it leaves behind (a half-filled timestamped directory, `..data_tmp`, the old payload
//! directory, dangling links) is removed by the next write of the same target, even one that
//! finds the contents unchanged. One writer per target at a time (the driver locks per target).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sensitive::SecretBytes;

use crate::notify;

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file from a provider: relative path, mode (applied literally), contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub mode: i32,
    pub contents: SecretBytes,
}

/// Why a payload was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid file path {path:?} from the provider: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error(
        "invalid mode {mode} for file {path:?} from the provider: it must be between 0 and 0o7777"
    )]
    InvalidMode { path: String, mode: i32 },
    #[error("duplicate file path {0:?} from the provider")]
    Duplicate(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError + use<> {
    let path = path.display().to_string();
    move |source| WriteError::Io { op, path, source }
}

/// The checks kubelet and upstream apply to each path, so a provider cannot write outside the
/// target or over the writer's own `..` entries.
pub fn validate_path(p: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::InvalidPath {
            path: p.to_string(),
            reason,
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.len() > 4096 {
        return bad("must not be longer than 4096 characters");
    }
    if Path::new(p).is_absolute() {
        return bad("must be relative");
    }
    if p.contains('\0') {
        return bad("must not contain NUL");
    }
    let parts: Vec<&str> = p.split('/').collect();
    if parts.contains(&"..") {
        return bad("must not contain '..'");
    }
    if parts.iter().any(|c| c.len() > 255) {
        return bad("must not have a path element longer than 255 characters");
    }
    if parts[0].starts_with("..") {
        return bad("must not start with '..'");
    }
    // filepath.Clean(p) == p: no empty elements, no '.', no trailing slash.
    if parts.iter().any(|c| c.is_empty() || *c == ".") {
        return bad("must be clean (no '//', '.', or trailing '/')");
    }
    Ok(())
}

fn validate(files: &[PayloadFile]) -> Result<(), WriteError> {
    let mut seen = BTreeSet::new();
    for f in files {
        validate_path(&f.path)?;
        if !(0..=0o7777).contains(&f.mode) {
            return Err(WriteError::InvalidMode {
                path: f.path.clone(),
                mode: f.mode,
            });
        }
        if !seen.insert(f.path.as_str()) {
            return Err(WriteError::Duplicate(f.path.clone()));
        }
    }
    Ok(())
}

/// Write `files` into `target`; returns whether anything changed on disk.
pub fn write_payload(target: &Path, files: &[PayloadFile]) -> Result<bool, WriteError> {
    write_payload_as(target, files, None)
}

/// [`write_payload`], with every file and folder of the payload group-owned by `group` when
/// given (the pod's `fsGroup`): the files' modes still come from the provider, so a class's
/// `filePermission: "0640"` makes them readable by the pod's group and no one else. The owner
/// stays the driver's (root). A payload already on disk with another group counts as changed.
pub fn write_payload_as(
    target: &Path,
    files: &[PayloadFile],
    group: Option<u32>,
) -> Result<bool, WriteError> {
    write_payload_with(target, files, group, None)
}

/// [`write_payload_as`], and with `notice` (the object versions the provider reported) the
/// change notice [`notify::NOTICE_PATH`] inside the same payload, so it is swapped together with
/// the files it describes. A payload is also rewritten when only the versions moved, or when the
/// notice is missing (turned on) or present but not asked for (turned off).
pub fn write_payload_with(
    target: &Path,
    files: &[PayloadFile],
    group: Option<u32>,
    notice: Option<&[(String, String)]>,
) -> Result<bool, WriteError> {
    validate(files)?;
    legacy_cleanup(target, files)?;

    let old_dir = match std::fs::read_link(target.join(DATA_DIR)) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("readlink", &target.join(DATA_DIR))(e)),
    };
    let mut new_top: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    if notice.is_some() {
        new_top.insert(notify::NOTICE_DIR);
    }
    remove_leftovers(target, old_dir.as_deref(), &new_top)?;
    let old_files = match &old_dir {
        Some(d) => list_files(&target.join(d))?,
        None => BTreeMap::new(),
    };
    let mut new_paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    if notice.is_some() {
        new_paths.insert(notify::NOTICE_PATH);
    }
    let removed: Vec<&String> = old_files
        .keys()
        .filter(|p| !new_paths.contains(p.as_str()))
        .collect();
    // The notice on disk (the one the current payload carries), when asked for.
    let previous_notice = match (&old_dir, notice) {
        (Some(d), Some(_)) => {
            let p = target.join(d).join(notify::NOTICE_PATH);
            match std::fs::read(&p) {
                Ok(b) => notify::Notice::parse(&b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err("read", &p)(e)),
            }
        }
        _ => None,
    };
    let notice_current = match notice {
        None => true,
        Some(objects) => previous_notice
            .as_ref()
            .is_some_and(|p| p.same_objects(objects)),
    };
    let content_changed = old_dir.is_none()
        || !removed.iter().all(|p| p.as_str() == notify::NOTICE_PATH)
        || changed(target, old_dir.as_deref(), files, group)?;

    if old_dir.is_some() && removed.is_empty() && !content_changed && notice_current {
        // Unchanged; a writer killed before creating every link cannot have swapped `..data`,
        // but a link removed by hand (or by a legacy cleanup) is put back.
        create_links(target, &new_top)?;
        return Ok(false);
    }

    // New timestamped directory, filled, then published by swapping ..data.
    let ts_name = timestamped_name();
    let ts_dir = target.join(&ts_name);
    std::fs::create_dir(&ts_dir).map_err(io_err("mkdir", &ts_dir))?;
    let result = (|| {
        std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &ts_dir))?;
        if group.is_some() {
            std::os::unix::fs::lchown(&ts_dir, None, group).map_err(io_err("chown", &ts_dir))?;
        }
        for f in files {
            let path = ts_dir.join(&f.path);
            if let Some(parent) = path.parent() {
                create_dirs(&ts_dir, parent, group)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("create", &path))?;
            file.write_all(f.contents.expose())
                .map_err(io_err("write", &path))?;
            if group.is_some() {
                // Before the chmod: a chown may clear set-ID bits.
                std::os::unix::fs::fchown(&file, None, group).map_err(io_err("chown", &path))?;
            }
            #[allow(clippy::cast_sign_loss)] // validated 0..=0o7777 above
            let mode = f.mode as u32;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &path))?;
        }
        if let Some(objects) = notice {
            let n = notify::Notice::next(
                previous_notice.as_ref(),
                objects,
                content_changed,
                time::OffsetDateTime::now_utc(),
            );
            write_notice(&ts_dir, &n, group)?;
        }
        // User-visible top-level symlinks: a new name dangles until the swap below.
        create_links(target, &new_top)?;
        let tmp = target.join(DATA_DIR_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ts_name, &tmp).map_err(io_err("symlink", &tmp))?;
        std::fs::rename(&tmp, target.join(DATA_DIR)).map_err(io_err("rename", &tmp))
    })();
    if let Err(e) = result {
        // Nothing half-written stays behind (the new directory, `..data_tmp`, links of new
        // names); the old payload is still the visible one.
        let _ = std::fs::remove_dir_all(&ts_dir);
        let _ = remove_leftovers(target, old_dir.as_deref(), &BTreeSet::new());
        return Err(e);
    }

    // Old top-level names no longer present.
    let old_top: BTreeSet<&str> = old_files
        .keys()
        .filter_map(|p| p.split('/').next())
        .collect();
    for name in old_top.into_iter().filter(|n| !new_top.contains(*n)) {
        let link = target.join(name);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&link).map_err(io_err("remove", &link))?;
        }
    }
    if let Some(old) = old_dir {
        let old = target.join(old);
        std::fs::remove_dir_all(&old).map_err(io_err("remove", &old))?;
    }
    Ok(true)
}

/// The notice into the payload folder `ts_dir`: readable by everyone (it holds object IDs and
/// versions, no contents), group-owned like the files.
fn write_notice(ts_dir: &Path, n: &notify::Notice, group: Option<u32>) -> Result<(), WriteError> {
    let dir = ts_dir.join(notify::NOTICE_DIR);
    create_dirs(ts_dir, &dir, group)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &dir))?;
    let path = dir.join(notify::NOTICE_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(io_err("create", &path))?;
    file.write_all(&n.to_json())
        .map_err(io_err("write", &path))?;
    if group.is_some() {
        std::os::unix::fs::fchown(&file, None, group).map_err(io_err("chown", &path))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err("chmod", &path))
}

/// `<target>/<name> -> ..data/<name>` for each top-level name that has no entry yet.
fn create_links(target: &Path, top: &BTreeSet<&str>) -> Result<(), WriteError> {
    for name in top {
        let link = target.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)
                    .map_err(io_err("symlink", &link))?;
            }
            Err(e) => return Err(io_err("lstat", &link)(e)),
        }
    }
    Ok(())
}

/// What a writer killed part way left in `target`: `..data_tmp`, timestamped directories other
/// than the one `..data` names (half filled, or the previous payload not yet removed), and our
/// links that dangle and are not part of the payload being written. Links that still resolve
/// are left for after the swap, so the visible payload stays whole.
fn remove_leftovers(
    target: &Path,
    current: Option<&Path>,
    new_top: &BTreeSet<&str>,
) -> Result<(), WriteError> {
    let entries = match std::fs::read_dir(target) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("readdir", target)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("readdir", target))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err("lstat", &path))?;
        if name == DATA_DIR_TMP {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        } else if name.starts_with("..20") && ft.is_dir() {
            if current != Some(Path::new(name)) {
                std::fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            }
        } else if (!name.starts_with("..") || name == notify::NOTICE_DIR)
            && ft.is_symlink()
            && !new_top.contains(name)
        {
            let ours = std::fs::read_link(&path).is_ok_and(|l| l == Path::new(DATA_DIR).join(name));
            if ours && std::fs::metadata(&path).is_err() {
                std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
    }
    Ok(())
}

/// `create_dir_all(dir)` inside the payload folder `root`, each folder it creates group-owned by
/// `group` when given.
fn create_dirs(root: &Path, dir: &Path, group: Option<u32>) -> Result<(), WriteError> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(root, parent, group)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("mkdir", dir)(e)),
    }
    if group.is_some() {
        std::os::unix::fs::lchown(dir, None, group).map_err(io_err("chown", dir))?;
    }
    Ok(())
}

fn changed(
    target: &Path,
    old_dir: Option<&Path>,
    files: &[PayloadFile],
    group: Option<u32>,
) -> Result<bool, WriteError> {
    let Some(old_dir) = old_dir else {
        return Ok(true);
    };
    for f in files {
        let path = target.join(old_dir).join(&f.path);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err("lstat", &path)(e)),
        };
        #[allow(clippy::cast_sign_loss)]
        let want_mode = f.mode as u32;
        if meta.permissions().mode() & 0o7777 != want_mode
            || meta.len() != f.contents.len() as u64
            || group.is_some_and(|g| meta.gid() != g)
        {
            return Ok(true);
        }
        let old = SecretBytes::new(std::fs::read(&path).map_err(io_err("read", &path))?);
        if old.expose() != f.contents.expose() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Files written directly by a legacy provider (not our symlinks) are removed before writing.
fn legacy_cleanup(target: &Path, files: &[PayloadFile]) -> Result<(), WriteError> {
    let top: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    for name in top {
        let p = target.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).map_err(io_err("remove", &p))?,
            Ok(_) => std::fs::remove_file(&p).map_err(io_err("remove", &p))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("lstat", &p)(e)),
        }
    }
    Ok(())
}

/// Relative path → absolute path of every regular file under `dir` (no symlinks followed).
fn list_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, WriteError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("readdir", &abs)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("readdir", &abs))?;
            let ft = entry.file_type().map_err(io_err("lstat", &entry.path()))?;
            let child = rel.join(entry.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else {
                out.insert(child.to_string_lossy().into_owned(), entry.path());
            }
        }
    }
    Ok(out)
}

/// The files currently visible in a target (what a legacy provider wrote itself, or what the
/// writer published), as relative path → contents. Entries starting with `..` are skipped.
pub fn read_mounted_files(target: &Path) -> Result<BTreeMap<String, SecretBytes>, WriteError> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(target).map_err(io_err("readdir", target))?;
    for entry in entries {
        let entry = entry.map_err(io_err("readdir", target))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        // Follow the top-level symlink (it points inside the target), then walk.
        let resolved =
            std::fs::canonicalize(entry.path()).map_err(io_err("resolve", &entry.path()))?;
        let canonical_target = std::fs::canonicalize(target).map_err(io_err("resolve", target))?;
        if !resolved.starts_with(&canonical_target) {
            continue;
        }
        if resolved.is_dir() {
            for (rel, abs) in list_files(&resolved)? {
                let data = std::fs::read(&abs).map_err(io_err("read", &abs))?;
                out.insert(format!("{name}/{rel}"), SecretBytes::new(data));
            }
        } else {
            let data = std::fs::read(&resolved).map_err(io_err("read", &resolved))?;
            out.insert(name, SecretBytes::new(data));
        }
    }
    Ok(out)
}

/// `..YYYY_MM_DD_HH_MM_SS.<random>` in UTC, like kubelet's timestamped directories.
fn timestamped_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn file(path: &str, mode: i32, contents: &str) -> PayloadFile {
        PayloadFile {
            path: path.into(),
            mode,
            contents: SecretBytes::new(contents.as_bytes().to_vec()),
        }
    }

    /// The pod's fsGroup: every file and folder of the payload group-owned by it, modes as
    /// given; the same group again changes nothing, another group rewrites.
    #[test]
    fn files_and_folders_are_owned_by_the_mount_group() -> Result<(), WriteError> {
        // A group this process may hand files to: any as root (the driver runs as root), else
        // its own.
        let (group, other) = if rustix::process::geteuid().is_root() {
            (4242, 4343)
        } else {
            let own = rustix::process::getegid().as_raw();
            (own, own)
        };
        let dir = tempfile::tempdir().map_err(io_err("tempdir", Path::new("/tmp")))?;
        let t = dir.path();
        let files = vec![file("a", 0o640, "x"), file("d/e/b", 0o440, "y")];
        assert!(write_payload_as(t, &files, Some(group))?);
        for (p, mode) in [("a", 0o640), ("d/e/b", 0o440)] {
            let m = std::fs::metadata(t.join(p)).map_err(io_err("stat", &t.join(p)))?;
            assert_eq!(m.gid(), group, "{p}: group");
            assert_eq!(m.mode() & 0o7777, mode, "{p}: mode as given");
        }
        let data = std::fs::canonicalize(t.join(DATA_DIR)).map_err(io_err("canon", t))?;
        for d in [data.clone(), data.join("d"), data.join("d/e")] {
            let m = std::fs::metadata(&d).map_err(io_err("stat", &d))?;
            assert_eq!(m.gid(), group, "{}: group", d.display());
        }
        assert!(
            !write_payload_as(t, &files, Some(group))?,
            "same group: unchanged"
        );
        if other != group {
            assert!(
                write_payload_as(t, &files, Some(other))?,
                "new group: rewritten"
            );
            let m = std::fs::metadata(t.join("a")).map_err(io_err("stat", t))?;
            assert_eq!(m.gid(), other);
        }
        Ok(())
    }

    fn notice_at(t: &Path) -> anyhow::Result<notify::Notice> {
        let bytes = std::fs::read(t.join(notify::NOTICE_PATH))?;
        notify::Notice::parse(&bytes).ok_or_else(|| anyhow::anyhow!("unreadable notice"))
    }

    fn versions(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    }

    /// The change notice lives in the payload folder, so `..data` swaps it with the files; it
    /// is rewritten when the versions move even if the bytes did not, and goes when turned off.
    #[test]
    fn notice_is_swapped_with_the_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        let v1 = versions(&[("secret/a", "1")]);
        assert!(write_payload_with(
            t,
            &[file("a", 0o644, "one")],
            None,
            Some(&v1)
        )?);
        assert_eq!(
            std::fs::read_link(t.join(notify::NOTICE_DIR))?,
            Path::new("..data").join(notify::NOTICE_DIR)
        );
        let n = notice_at(t)?;
        assert_eq!((n.sequence, n.content_changed), (1, true));
        assert_eq!(n.objects.get("secret/a").map(String::as_str), Some("1"));
        assert_eq!(
            std::fs::metadata(t.join(notify::NOTICE_PATH))?.mode() & 0o7777,
            0o644
        );
        let data = std::fs::read_link(t.join("..data"))?;
        // The notice sits next to the files it describes, in the one payload folder.
        assert!(t.join(&data).join(notify::NOTICE_PATH).is_file());

        // Same bytes, same versions: nothing written.
        assert!(!write_payload_with(
            t,
            &[file("a", 0o644, "one")],
            None,
            Some(&v1)
        )?);
        assert_eq!(std::fs::read_link(t.join("..data"))?, data);

        // Same bytes, a new version: a new payload whose notice names the change.
        let v2 = versions(&[("secret/a", "2")]);
        assert!(write_payload_with(
            t,
            &[file("a", 0o644, "one")],
            None,
            Some(&v2)
        )?);
        let n = notice_at(t)?;
        assert_eq!((n.sequence, n.content_changed), (2, false));
        assert_eq!(n.changes.len(), 1);
        assert_eq!(n.changes[0].previous_version.as_deref(), Some("1"));
        assert_eq!(n.changes[0].version.as_deref(), Some("2"));

        // New bytes and version: content_changed, and the old payload folder is gone.
        let v3 = versions(&[("secret/a", "3")]);
        let before = std::fs::read_link(t.join("..data"))?;
        assert!(write_payload_with(
            t,
            &[file("a", 0o644, "two")],
            None,
            Some(&v3)
        )?);
        let n = notice_at(t)?;
        assert_eq!((n.sequence, n.content_changed), (3, true));
        assert_eq!(std::fs::read_to_string(t.join("a"))?, "two");
        assert!(!t.join(before).exists());
        // Not an object: secret sync and readers of the mounted files never see it.
        assert_eq!(
            read_mounted_files(t)?.keys().collect::<Vec<_>>(),
            ["a"],
            "the notice is not a mounted object"
        );

        // Turned off: rewritten without it, and its link goes.
        assert!(write_payload_with(
            t,
            &[file("a", 0o644, "two")],
            None,
            None
        )?);
        assert!(std::fs::symlink_metadata(t.join(notify::NOTICE_DIR)).is_err());
        assert!(!t.join(notify::NOTICE_PATH).exists());
        assert!(!write_payload_with(
            t,
            &[file("a", 0o644, "two")],
            None,
            None
        )?);

        // Turned on again: a fresh sequence.
        assert!(write_payload_with(
            t,
            &[file("a", 0o644, "two")],
            None,
            Some(&v3)
        )?);
        assert_eq!(notice_at(t)?.sequence, 1);
        // A provider can never write into the notice's folder.
        let err = write_payload_with(
            t,
            &[file("..secrets-store/changes.json", 0o644, "x")],
            None,
            Some(&v3),
        );
        assert!(matches!(err, Err(WriteError::InvalidPath { .. })));
        assert_eq!(notice_at(t)?.sequence, 1);
        Ok(())
    }

    #[test]
    fn rejects_traversal_and_unclean_paths() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "..data/x",
            "..foo",
            "a//b",
            "./a",
            "a/",
            &"x".repeat(256),
        ] {
            assert!(validate_path(p).is_err(), "{p:?} should be refused");
        }
        for p in ["a", "a/b", "a..b", "dir/.hidden"] {
            assert!(validate_path(p).is_ok(), "{p:?} should be accepted");
        }
    }

    #[test]
    fn writes_layout_modes_and_skips_unchanged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        let files = vec![
            file("foo", 0o644, "secret"),
            file("nested/bar", 0o400, "b"),
            file("zero", 0, "z"),
        ];
        assert!(write_payload(t, &files)?);
        assert_eq!(std::fs::read_to_string(t.join("foo"))?, "secret");
        assert_eq!(std::fs::read_to_string(t.join("nested/bar"))?, "b");
        assert!(
            std::fs::symlink_metadata(t.join("foo"))?
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_link(t.join("foo"))?, Path::new("..data/foo"));
        let data = std::fs::read_link(t.join("..data"))?;
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(
            std::fs::metadata(t.join("nested/bar"))?.mode() & 0o7777,
            0o400
        );
        assert_eq!(
            std::fs::metadata(t.join("zero"))?.mode() & 0o7777,
            0,
            "mode 0 is applied literally"
        );

        // Same content: no write, same timestamped dir.
        assert!(!write_payload(t, &files)?);
        assert_eq!(std::fs::read_link(t.join("..data"))?, data);

        // Changed content and a removed file.
        let files2 = vec![file("foo", 0o644, "rotated")];
        assert!(write_payload(t, &files2)?);
        assert_eq!(std::fs::read_to_string(t.join("foo"))?, "rotated");
        assert!(std::fs::symlink_metadata(t.join("nested")).is_err());
        assert!(!t.join(&data).exists(), "old payload directory removed");
        let entries: Vec<_> = std::fs::read_dir(t)?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            entries.len(),
            3,
            "foo, ..data, one timestamped dir: {entries:?}"
        );

        let read = read_mounted_files(t)?;
        assert_eq!(read.keys().collect::<Vec<_>>(), ["foo"]);
        Ok(())
    }

    #[test]
    fn debris_of_a_killed_writer_goes_at_the_next_write_even_if_unchanged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        let files = vec![file("foo", 0o644, "x")];
        assert!(write_payload(t, &files)?);
        let data = std::fs::read_link(t.join("..data"))?;
        // A writer killed before its swap: a half-filled directory, `..data_tmp`, the link of a
        // new name (dangling); and a link removed by hand.
        std::fs::create_dir(t.join("..2026_01_01_00_00_00.7"))?;
        std::fs::write(t.join("..2026_01_01_00_00_00.7/foo"), "half")?;
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.7", t.join("..data_tmp"))?;
        std::os::unix::fs::symlink("..data/new", t.join("new"))?;
        std::fs::remove_file(t.join("foo"))?;
        // A file of the user's (not our link) is not touched.
        std::os::unix::fs::symlink("elsewhere", t.join("mine"))?;

        assert!(!write_payload(t, &files)?, "contents unchanged");
        let mut names: Vec<String> = std::fs::read_dir(t)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut want = vec![
            "..data".to_string(),
            data.display().to_string(),
            "foo".into(),
            "mine".into(),
        ];
        want.sort();
        assert_eq!(names, want);
        assert_eq!(std::fs::read_to_string(t.join("foo"))?, "x");
        Ok(())
    }

    #[test]
    fn mode_change_alone_rewrites() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(write_payload(dir.path(), &[file("a", 0o644, "x")])?);
        assert!(write_payload(dir.path(), &[file("a", 0o600, "x")])?);
        assert_eq!(
            std::fs::metadata(dir.path().join("a"))?.mode() & 0o7777,
            0o600
        );
        Ok(())
    }

    #[test]
    fn legacy_files_are_replaced_and_bad_input_leaves_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("foo"), "written by provider")?;
        assert!(write_payload(dir.path(), &[file("foo", 0o644, "new")])?);
        assert_eq!(std::fs::read_to_string(dir.path().join("foo"))?, "new");

        let other = tempfile::tempdir()?;
        let err = write_payload(
            other.path(),
            &[file("ok", 0o644, "x"), file("../escape", 0o644, "x")],
        );
        assert!(err.is_err());
        assert_eq!(
            std::fs::read_dir(other.path())?.count(),
            0,
            "nothing half-written"
        );
        let err = write_payload(other.path(), &[file("a", -1, "x")])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mode")));
        Ok(())
    }
}
