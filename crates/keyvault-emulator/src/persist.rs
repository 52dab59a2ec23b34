//! Durable persistence of the store to the state file.
//!
//! A mutation takes a [`Snapshot`] while it still holds the store's write lock (serialising the
//! store and numbering the snapshot), releases the lock, then awaits [`Snapshot::write`]. Writes
//! to the file are serialised and always write the newest snapshot taken so far, so a later
//! snapshot is never overwritten by an earlier one, and writers queued behind one that already
//! wrote their change return at once (group commit). The file work (write, fsync, rename, fsync
//! of the directory) runs on tokio's blocking pool, and in a task of its own so that a request
//! that goes away mid-write does not leave its change unwritten.

use crate::error::Error;
use crate::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Writes snapshots of the store to one state file.
pub(crate) struct Persister {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The newest snapshot taken; its generation only grows (it is advanced under the store's
    /// write lock).
    latest: Mutex<Latest>,
    /// The generation on disk. Held for the whole file write: one writer at a time.
    on_disk: tokio::sync::Mutex<u64>,
}

#[derive(Default)]
struct Latest {
    generation: u64,
    bytes: Option<Arc<Zeroizing<Vec<u8>>>>,
}

/// A numbered, serialised copy of the store, to be written after the store's lock is released.
#[must_use = "a snapshot is only durable once written"]
pub(crate) struct Snapshot {
    inner: Arc<Inner>,
    generation: u64,
}

impl Persister {
    pub(crate) fn new(path: PathBuf) -> Persister {
        Persister {
            inner: Arc::new(Inner {
                path,
                latest: Mutex::new(Latest::default()),
                on_disk: tokio::sync::Mutex::new(0),
            }),
        }
    }

    fn error(&self, message: String) -> Error {
        state_error(&self.inner.path, message)
    }

    /// Serialises the store. Takes `&mut Store` so that it is called under the write lock: the
    /// snapshots' order is the mutations' order.
    pub(crate) fn snapshot(&self, store: &mut Store) -> Result<Snapshot, Error> {
        let bytes =
            Zeroizing::new(serde_json::to_vec(&*store).map_err(|e| self.error(e.to_string()))?);
        let mut latest = crate::lock(&self.inner.latest);
        latest.generation += 1;
        latest.bytes = Some(Arc::new(bytes));
        Ok(Snapshot {
            inner: self.inner.clone(),
            generation: latest.generation,
        })
    }
}

impl Snapshot {
    /// Returns once this snapshot, or a later one, is on disk.
    pub(crate) async fn write(self) -> Result<(), Error> {
        let Snapshot { inner, generation } = self;
        let path = inner.path.clone();
        tokio::spawn(async move {
            let mut on_disk = inner.on_disk.lock().await;
            if *on_disk >= generation {
                return Ok(());
            }
            let (newest, bytes) = {
                let latest = crate::lock(&inner.latest);
                (latest.generation, latest.bytes.clone())
            };
            let Some(bytes) = bytes else {
                return Err(state_error(&inner.path, "no snapshot to write".into()));
            };
            let file = inner.path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&file, &bytes))
                .await
                .map_err(|e| state_error(&inner.path, e.to_string()))??;
            *on_disk = newest;
            Ok(())
        })
        .await
        .map_err(|e| state_error(&path, e.to_string()))?
    }
}

fn state_error(path: &Path, message: String) -> Error {
    Error::State {
        path: path.display().to_string(),
        message,
    }
}

impl Store {
    pub(crate) fn load(path: &Path) -> Result<Option<Store>, Error> {
        let err = |message: String| state_error(path, message);
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| err(format!("not a state file written by this emulator ({e}); move it away to start fresh")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// Writes `bytes` to `path`: temp file in the same directory, fsync, rename, fsync the directory.
/// Blocking.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into())
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(state_error(path, e.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Vault;

    /// A persister on a fresh state file, and two snapshots of its store: the earlier with
    /// vault `first`, the later with `second` too.
    fn two_snapshots() -> (tempfile::TempDir, PathBuf, Snapshot, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let persister = Persister::new(path.clone());
        let mut store = Store::default();
        let mut snapshot_with = |name: &str| {
            store
                .vaults
                .insert(name.into(), Vault::new(name, "tenant", vec!["*".into()]));
            persister.snapshot(&mut store).expect("snapshot")
        };
        let earlier = snapshot_with("first");
        let later = snapshot_with("second");
        (dir, path, earlier, later)
    }

    fn newest_on_disk(path: &Path) -> bool {
        let on_disk = Store::load(path).expect("load").expect("file");
        on_disk.vault("second").is_some()
    }

    #[tokio::test]
    async fn an_earlier_snapshot_never_overwrites_a_later_one() {
        let (_dir, path, earlier, later) = two_snapshots();
        later.write().await.expect("write");
        earlier.write().await.expect("write");
        assert!(newest_on_disk(&path), "the later snapshot stays");
    }

    #[tokio::test]
    async fn a_writer_writes_the_newest_snapshot() {
        let (_dir, path, earlier, later) = two_snapshots();
        earlier.write().await.expect("write");
        assert!(newest_on_disk(&path), "group commit: newest written");
        // Each write renames a new file into place: the same inode means no second write.
        #[cfg(unix)]
        let inode = || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).expect("metadata").ino()
        };
        #[cfg(unix)]
        let before = inode();
        later.write().await.expect("write");
        #[cfg(unix)]
        assert_eq!(before, inode(), "already on disk: not written twice");
    }
}
