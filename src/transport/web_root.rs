//! The static files of `web.root`, confined to it.
//!
//! hyper-staticfile keeps `..` from leaving the root, but opens whatever a
//! path names: a symlink `root/etc -> /etc` would serve `/etc/passwd`. Here a
//! file is served only when its canonical path (every symlink resolved) lies
//! under the canonical root; symlinks that stay inside the root still work.
//! Anything else is "not found" (404), so a client learns nothing about the
//! rest of the disk. A path with a NUL byte (`%00`) is a bad request (400).

use std::fs::OpenOptions;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_staticfile::vfs::{FileOpener, FileWithMetadata};
use tokio::fs::File;
use tokio::task::JoinHandle;

/// Opens files below `root` only, by their canonical path.
pub(crate) struct ConfinedOpener {
    root: PathBuf,
}

impl ConfinedOpener {
    pub(crate) fn new(root: &Path) -> Self {
        ConfinedOpener {
            root: root.to_path_buf(),
        }
    }
}

/// The error of a path holding a NUL byte; the caller answers 400 to it.
pub(crate) fn is_bad_path(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::InvalidInput
}

/// `path` (already stripped of `..` by hyper-staticfile) below `root`, resolved:
/// its canonical form when that lies under the canonical root, else NotFound.
fn confine(root: &Path, path: &Path) -> io::Result<PathBuf> {
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in the path",
        ));
    }
    // Canonicalised per request: the root may itself be a symlink, or be replaced.
    let root = root.canonicalize()?;
    let full = root.join(path).canonicalize()?;
    if !full.starts_with(&root) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the path leaves web.root through a symlink",
        ));
    }
    Ok(full)
}

impl FileOpener for ConfinedOpener {
    type File = File;
    type Future = ConfinedFuture;

    fn open(&self, path: &Path) -> Self::Future {
        let root = self.root.clone();
        let path = path.to_path_buf();
        // Open and metadata in one blocking task, as hyper-staticfile's own opener does.
        let inner = tokio::task::spawn_blocking(move || {
            let full = confine(&root, &path)?;
            let handle = OpenOptions::new().read(true).open(full)?;
            let metadata = handle.metadata()?;
            Ok(FileWithMetadata {
                handle: File::from_std(handle),
                size: metadata.len(),
                modified: metadata.modified().ok(),
                is_dir: metadata.is_dir(),
            })
        });
        ConfinedFuture { inner }
    }
}

/// Future of [`ConfinedOpener::open`] (a named type, as the trait wants).
pub(crate) struct ConfinedFuture {
    inner: JoinHandle<io::Result<FileWithMetadata<File>>>,
}

impl Future for ConfinedFuture {
    type Output = io::Result<FileWithMetadata<File>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::other("file task failed"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_inside_the_root_resolve_and_those_leaving_it_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("js")).unwrap();
        std::fs::write(root.join("js/app.js"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(root.join("js"), root.join("scripts")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        assert!(confine(&root, Path::new("scripts/app.js")).is_ok());
        let left = confine(&root, Path::new("up/secret")).unwrap_err();
        assert_eq!(left.kind(), io::ErrorKind::NotFound);
        let nul = confine(&root, Path::new("a\0b")).unwrap_err();
        assert!(is_bad_path(&nul));
    }
}
