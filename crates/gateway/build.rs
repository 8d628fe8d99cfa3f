//! Names the commit the gateway is built from, for `--version` (`unknown` outside a git
//! checkout, or without git).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STREAMFLIGHT_COMMIT={commit}");
    // A new commit, or a checkout of another: HEAD or the branch it names moved. In a linked
    // worktree HEAD is in its own git directory and the branches in the common one: both.
    let dirs = Command::new("git").args(["rev-parse", "--git-dir", "--git-common-dir"]).output();
    if let Ok(dirs) = dirs
        && dirs.status.success()
    {
        for git in String::from_utf8_lossy(&dirs.stdout).lines().map(str::trim) {
            // Only paths that exist: cargo would run this again on every build for a missing one.
            for path in ["HEAD", "refs/heads", "packed-refs"].map(|name| format!("{git}/{name}")) {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
}
