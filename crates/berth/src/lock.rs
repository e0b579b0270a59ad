//! One berth per data directory: an exclusive lock on `<dir>/berth.pid`, taken before
//! anything else is created there.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context};

/// Held for the life of the process; the kernel releases it when the process ends, even
/// after `kill -9`.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("berth.pid");
        // A running berth holds the lock: say so before creating anything.
        if let Some(pid) = holder(&path) {
            bail!(
                "another berth is running with the data directory {} (pid {pid})",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            bail!(
                "another berth is running with the data directory {} (pid {})",
                dir.display(),
                if pid.is_empty() { "unknown" } else { pid }
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}

/// The pid of the process holding the lock on `path`, if one does.
fn holder(path: &Path) -> Option<String> {
    let file = std::fs::OpenOptions::new().read(true).open(path).ok()?;
    // SAFETY: flock on a descriptor we own; a shared probe fails while anyone holds it.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        // SAFETY: releases the probe we just took.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    let mut pid = String::new();
    let mut file = file;
    let _ = file.read_to_string(&mut pid);
    Some(if pid.trim().is_empty() {
        "unknown".into()
    } else {
        pid.trim().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open conflicts even
        // within one process.
        let err = DataDirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another berth is running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
