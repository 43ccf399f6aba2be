//! Records the git commit the binary is built from, for `tern --version`
//! (`TERN_GIT_COMMIT`). Outside a git checkout (a source tarball, a vendored
//! copy) or without git installed, the commit is "unknown" and the build goes on.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TERN_GIT_COMMIT={commit}");
    // Run again when HEAD moves: HEAD itself (checkout), the branch it points to
    // (commit) and packed-refs (gc). With none of them known, only a change to
    // build.rs reruns this.
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        watch(&git_dir.join("HEAD"));
        // A worktree keeps its HEAD in its own git dir but branches in the common one.
        let common = git(&["rev-parse", "--git-common-dir"])
            .map(|dir| {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir().unwrap_or_default().join(dir)
                }
            })
            .unwrap_or(git_dir);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(&common.join(branch));
        }
        watch(&common.join("packed-refs"));
    }
}

/// Reruns this script when `path` changes; a path that does not exist is left
/// out, since Cargo would rerun the script at every build for it.
fn watch(path: &std::path::Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed output of a successful `git` command; None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}
