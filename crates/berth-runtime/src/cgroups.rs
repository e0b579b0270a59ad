//! Task cgroups on the Docker host's cgroup filesystem: a parent cgroup with the task's
//! limits, under which the engine creates each container's cgroup (`--cgroup-parent`), so
//! the limits cap the task's containers together, as the ECS agent's task cgroups do.
//!
//! Only for an engine on this host with the `cgroupfs` cgroup driver (cgroup v1 or v2): with
//! the `systemd` driver the parent would have to be a systemd slice, and a remote engine's
//! cgroups are out of reach. The caller falls back to per-container limits then.

use std::io;
use std::path::{Path, PathBuf};

use crate::GroupLimits;

/// CFS period (µs) the quota is expressed in.
const CFS_PERIOD_US: u64 = 100_000;
/// The kernel's smallest CFS quota (µs).
const MIN_CFS_QUOTA_US: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupFs {
    /// One hierarchy per controller: `<root>/memory`, `<root>/cpu`, ...
    V1 { root: PathBuf },
    /// The unified hierarchy at `<root>`.
    V2 { root: PathBuf },
}

/// The CFS quota (µs per period) for CPU units (1024 per CPU).
pub(crate) fn cfs_quota_us(cpu_units: u64) -> u64 {
    (cpu_units.saturating_mul(CFS_PERIOD_US) / 1024).max(MIN_CFS_QUOTA_US)
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

fn mkdir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))
}

/// Adds controllers to a v2 cgroup's `cgroup.subtree_control` (those the kernel offers).
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["cpu", "memory"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
}

impl CgroupFs {
    /// `name` is a relative cgroup path such as `berth/<task id>`; the engine is given
    /// `/<name>` as the cgroup parent.
    pub(crate) fn create(&self, name: &str, limits: &GroupLimits) -> io::Result<()> {
        match self {
            Self::V1 { root } => {
                let memory = root.join("memory").join(name);
                mkdir(&memory)?;
                // Always on in recent kernels; older ones need it before children exist.
                let _ = write(&memory.join("memory.use_hierarchy"), "1");
                if let Some(mib) = limits.memory_mib {
                    let bytes = mib.saturating_mul(1024 * 1024);
                    write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
                }
                let cpu = root.join("cpu").join(name);
                mkdir(&cpu)?;
                if let Some(units) = limits.cpu_units {
                    write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    write(
                        &cpu.join("cpu.cfs_quota_us"),
                        &cfs_quota_us(units).to_string(),
                    )?;
                }
                Ok(())
            }
            Self::V2 { root } => {
                let mut dir = root.clone();
                enable_controllers(&dir)?;
                let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
                for part in &parts {
                    dir = dir.join(part);
                    mkdir(&dir)?;
                    // Children (the next level, and finally the containers) get them too.
                    enable_controllers(&dir)?;
                }
                if let Some(mib) = limits.memory_mib {
                    let bytes = mib.saturating_mul(1024 * 1024);
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                }
                if let Some(units) = limits.cpu_units {
                    write(
                        &dir.join("cpu.max"),
                        &format!("{} {CFS_PERIOD_US}", cfs_quota_us(units)),
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Removes the group in every hierarchy the engine may have created it in. Missing
    /// directories are fine; one still holding a container's cgroup is an error.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        let dirs: Vec<PathBuf> = match self {
            Self::V1 { root } => std::fs::read_dir(root)?
                .filter_map(|e| e.ok())
                .map(|e| e.path().join(name))
                .collect(),
            Self::V2 { root } => vec![root.join(name)],
        };
        let mut first_error = None;
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(io::Error::new(
                        e.kind(),
                        format!("removing {}: {e}", dir.display()),
                    ));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_follows_cpu_units() {
        assert_eq!(cfs_quota_us(1024), 100_000);
        assert_eq!(cfs_quota_us(512), 50_000);
        assert_eq!(cfs_quota_us(2048), 200_000);
        assert_eq!(cfs_quota_us(1), MIN_CFS_QUOTA_US);
    }

    #[test]
    fn v1_writes_limits_per_controller_and_removes_everywhere() {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir(root.path().join(c)).unwrap();
        }
        let fs = CgroupFs::V1 {
            root: root.path().to_path_buf(),
        };
        let limits = GroupLimits {
            cpu_units: Some(512),
            memory_mib: Some(256),
        };
        fs.create("berth/t1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("memory/berth/t1/memory.limit_in_bytes"), "268435456");
        assert_eq!(read("cpu/berth/t1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/berth/t1/cpu.cfs_period_us"), "100000");
        // The engine creates the group in other hierarchies too.
        std::fs::create_dir_all(root.path().join("pids/berth/t1")).unwrap();
        for f in ["memory.limit_in_bytes", "memory.use_hierarchy"] {
            std::fs::remove_file(root.path().join("memory/berth/t1").join(f)).unwrap();
        }
        for f in ["cpu.cfs_quota_us", "cpu.cfs_period_us"] {
            std::fs::remove_file(root.path().join("cpu/berth/t1").join(f)).unwrap();
        }
        fs.remove("berth/t1").unwrap();
        for c in ["memory", "cpu", "pids"] {
            assert!(!root.path().join(c).join("berth/t1").exists(), "{c}");
        }
        fs.remove("berth/t1").unwrap();
    }

    #[test]
    fn v2_enables_controllers_down_the_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu io memory pids").unwrap();
        let fs = CgroupFs::V2 {
            root: root.path().to_path_buf(),
        };
        // A real cgroupfs fills cgroup.controllers in new directories; emulate it.
        std::fs::create_dir_all(root.path().join("berth/t2")).unwrap();
        for d in ["berth", "berth/t2"] {
            std::fs::write(root.path().join(d).join("cgroup.controllers"), "cpu memory").unwrap();
        }
        fs.create(
            "berth/t2",
            &GroupLimits {
                cpu_units: Some(2048),
                memory_mib: Some(64),
            },
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read("berth/cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read("berth/t2/memory.max"), "67108864");
        assert_eq!(read("berth/t2/cpu.max"), "200000 100000");
    }
}
