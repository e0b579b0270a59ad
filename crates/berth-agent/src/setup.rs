//! What a task needs before its containers are created, and what goes with it afterwards:
//! its volumes, its cgroup (task-level CPU and memory limits on all its containers
//! together), and the pause container holding a shared PID/IPC namespace.

use std::collections::BTreeMap;

use berth_agent_proto::labels;
use berth_runtime::{ContainerRuntime, ContainerSpec, GroupLimits, MountSource, VolumeSpec};
use berth_wire::ecs::{ContainerDefinition, TaskDefinition, Volume};

use crate::spec::{self, Share, SpecContext};

/// Label on the volumes berth makes for one task (removed with the task's containers).
pub const TASK_VOLUME_LABEL: &str = "berth.task-volume";

/// How a task definition volume is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// A host path, bind-mounted.
    Bind(String),
    /// A Docker volume made for the task and removed with it.
    Task {
        driver: Option<String>,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    },
    /// A Docker volume named like the task definition volume, outliving the task.
    Shared {
        autoprovision: bool,
        driver: Option<String>,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    },
}

/// The task-level members the agent acts on, read from the task definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPlan {
    pub volumes: Vec<(String, VolumeKind)>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub cpu_architecture: Option<String>,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
}

fn volume_kind(v: &Volume) -> Result<VolumeKind, String> {
    let name = v.name.as_deref().unwrap_or_default();
    let unsupported = v.efs_volume_configuration.is_some()
        || v.fsx_windows_file_server_volume_configuration.is_some()
        || v.s3_files_volume_configuration.is_some()
        || v.configured_at_launch == Some(true);
    if unsupported {
        return Err(format!(
            "volume {name}: EFS, FSx, S3 Files and launch-time volumes are not supported by berth"
        ));
    }
    if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.clone()) {
        if !path.is_empty() {
            return Ok(VolumeKind::Bind(path));
        }
    }
    match &v.docker_volume_configuration {
        None => Ok(VolumeKind::Task {
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
        }),
        Some(d) => {
            let driver = d.driver.clone().filter(|d| !d.is_empty());
            let driver_opts = d.driver_opts.clone().unwrap_or_default();
            let labels = d.labels.clone().unwrap_or_default();
            match d.scope.as_deref().unwrap_or("task") {
                "task" => Ok(VolumeKind::Task {
                    driver,
                    driver_opts,
                    labels,
                }),
                "shared" => Ok(VolumeKind::Shared {
                    autoprovision: d.autoprovision.unwrap_or(false),
                    driver,
                    driver_opts,
                    labels,
                }),
                other => Err(format!("volume {name}: unknown scope {other}")),
            }
        }
    }
}

impl TaskPlan {
    pub fn of(td: &TaskDefinition, cpu: Option<u64>, memory: Option<u64>) -> Result<Self, String> {
        let volumes = td
            .volumes
            .iter()
            .flatten()
            .map(|v| Ok((v.name.clone().unwrap_or_default(), volume_kind(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        if td.proxy_configuration.is_some() {
            return Err("proxyConfiguration is not supported by berth".into());
        }
        Ok(Self {
            volumes,
            pid_mode: td.pid_mode.clone(),
            ipc_mode: td.ipc_mode.clone(),
            cpu_architecture: td
                .runtime_platform
                .as_ref()
                .and_then(|p| p.cpu_architecture.clone()),
            cpu,
            memory,
        })
    }

    /// Whether the task needs a pause container for shared namespaces.
    pub fn needs_pause(&self) -> bool {
        self.pid_mode.as_deref() == Some("task") || self.ipc_mode.as_deref() == Some("task")
    }
}

/// The Docker volume name of a task-scoped volume.
pub fn task_volume_name(ctx: &SpecContext<'_>, volume: &str) -> String {
    let task_id = ctx.task_arn.rsplit('/').next().unwrap_or_default();
    format!("ecs-{}-{}-{volume}-{task_id}", ctx.family, ctx.revision)
}

/// The Docker volumes berth makes for the task (task-scoped), by name.
pub fn owned_volume_names(ctx: &SpecContext<'_>, plan: &TaskPlan) -> Vec<String> {
    plan.volumes
        .iter()
        .filter(|(_, kind)| matches!(kind, VolumeKind::Task { .. }))
        .map(|(name, _)| task_volume_name(ctx, name))
        .collect()
}

/// The task's cgroup name.
pub fn group_name(task_arn: &str) -> String {
    format!("berth/{}", task_arn.rsplit('/').next().unwrap_or_default())
}

/// Labels that tie something berth makes for a task to it (and to this agent).
fn task_labels(ctx: &SpecContext<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::TASK_ARN.to_string(), ctx.task_arn.to_string()),
        (labels::CLUSTER.to_string(), ctx.cluster.to_string()),
        (labels::FAMILY.to_string(), ctx.family.to_string()),
        (labels::REVISION.to_string(), ctx.revision.to_string()),
        (labels::AGENT.to_string(), ctx.agent_id.to_string()),
        (
            labels::CONTROL_PLANE.to_string(),
            ctx.control_plane_id.to_string(),
        ),
    ])
}

/// Makes (or finds) the task's volumes. Returns where each one's data is, and the names of
/// the task-scoped Docker volumes (to remove with the task).
pub async fn volumes(
    rt: &dyn ContainerRuntime,
    ctx: &SpecContext<'_>,
    plan: &TaskPlan,
) -> Result<(BTreeMap<String, MountSource>, Vec<String>), String> {
    let mut sources = BTreeMap::new();
    let mut owned = Vec::new();
    for (name, kind) in &plan.volumes {
        let source = match kind {
            VolumeKind::Bind(path) => MountSource::Bind(path.clone()),
            VolumeKind::Task {
                driver,
                driver_opts,
                labels,
            } => {
                let docker_name = task_volume_name(ctx, name);
                let mut labels = labels.clone();
                labels.extend(task_labels(ctx));
                labels.insert(TASK_VOLUME_LABEL.to_string(), name.clone());
                rt.create_volume(&VolumeSpec {
                    name: docker_name.clone(),
                    driver: driver.clone(),
                    driver_opts: driver_opts.clone(),
                    labels,
                })
                .await
                .map_err(|e| format!("volume {name}: {e}"))?;
                owned.push(docker_name.clone());
                MountSource::Volume(docker_name)
            }
            VolumeKind::Shared {
                autoprovision,
                driver,
                driver_opts,
                labels,
            } => {
                let existing = rt
                    .inspect_volume(name)
                    .await
                    .map_err(|e| format!("volume {name}: {e}"))?;
                match existing {
                    Some(v) => {
                        let want = driver.as_deref().unwrap_or("local");
                        if *autoprovision && v.driver != want {
                            return Err(format!(
                                "shared volume {name} exists with driver {}, not {want}",
                                v.driver
                            ));
                        }
                    }
                    None if *autoprovision => {
                        rt.create_volume(&VolumeSpec {
                            name: name.clone(),
                            driver: driver.clone(),
                            driver_opts: driver_opts.clone(),
                            labels: labels.clone(),
                        })
                        .await
                        .map_err(|e| format!("volume {name}: {e}"))?;
                    }
                    None => {
                        return Err(format!(
                            "shared volume {name} does not exist and autoprovision is off"
                        ))
                    }
                }
                MountSource::Volume(name.clone())
            }
        };
        sources.insert(name.clone(), source);
    }
    Ok((sources, owned))
}

/// Each container's share of the task-level limits, for an engine without task cgroups.
pub fn shares(plan: &TaskPlan, defs: &[&ContainerDefinition]) -> BTreeMap<String, Share> {
    let names: Vec<String> = defs
        .iter()
        .map(|d| d.name.clone().unwrap_or_default())
        .collect();
    let memory = plan.memory.map(|total| {
        let asks: Vec<Option<u64>> = defs
            .iter()
            .map(|d| d.memory.and_then(|m| u64::try_from(m).ok()))
            .collect();
        spec::partition(total, &asks, 6)
    });
    let cpu = plan.cpu.map(|total| {
        let asks: Vec<Option<u64>> = defs
            .iter()
            .map(|d| d.cpu.and_then(|c| u64::try_from(c).ok()).filter(|c| *c > 0))
            .collect();
        spec::partition(total, &asks, 2)
    });
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name,
                Share {
                    memory_mib: memory.as_ref().map(|m| m[i]),
                    cpu_units: cpu.as_ref().map(|c| c[i]),
                },
            )
        })
        .collect()
}

/// The group limits for the task, if it has task-level limits.
pub fn group_limits(plan: &TaskPlan) -> Option<GroupLimits> {
    (plan.cpu.is_some() || plan.memory.is_some()).then_some(GroupLimits {
        cpu_units: plan.cpu,
        memory_mib: plan.memory,
    })
}

/// The spec of the task's pause container: it holds the shared namespaces (and, with a
/// shared IPC namespace, the containers' IPC sysctls).
pub fn pause_spec(
    ctx: &SpecContext<'_>,
    plan: &TaskPlan,
    image: &str,
    defs: &[&ContainerDefinition],
) -> ContainerSpec {
    let mut labels = task_labels(ctx);
    labels.insert(
        labels::CONTAINER_NAME.to_string(),
        spec::PAUSE_CONTAINER_NAME.to_string(),
    );
    let ipc_task = plan.ipc_mode.as_deref() == Some("task");
    let sysctls = if ipc_task {
        defs.iter()
            .flat_map(|d| d.system_controls.iter().flatten())
            .filter_map(|s| Some((s.namespace.clone()?, s.value.clone()?)))
            .filter(|(ns, _)| spec::is_ipc_sysctl(ns))
            .collect()
    } else {
        BTreeMap::new()
    };
    ContainerSpec {
        name: spec::container_name(ctx, spec::PAUSE_CONTAINER_NAME),
        image: image.to_string(),
        labels,
        cpu_shares: 2,
        memory_limit_mib: None,
        network_mode: "none".into(),
        ipc_mode: ipc_task.then(|| "shareable".to_string()),
        sysctls,
        cgroup_parent: ctx.setup.cgroup_parent.clone(),
        ..ContainerSpec::default()
    }
}

/// The containers' namespace modes, given the pause container (if any).
pub fn namespace_modes(plan: &TaskPlan, pause: Option<&str>) -> (Option<String>, Option<String>) {
    let mode = |m: Option<&str>| match m {
        Some("host") => Some("host".to_string()),
        Some("none") => Some("none".to_string()),
        Some("task") => pause.map(|p| format!("container:{p}")),
        _ => None,
    };
    (
        mode(plan.pid_mode.as_deref()),
        mode(plan.ipc_mode.as_deref()),
    )
}

/// Whether the host can run a task built for `wanted` (ECS's `X86_64`, `ARM64`).
pub fn architecture_matches(wanted: Option<&str>, host: &str) -> Result<(), String> {
    match wanted {
        Some(w) if !host.is_empty() && w != host => Err(format!(
            "the task definition's runtimePlatform.cpuArchitecture is {w}, but this container instance is {host}"
        )),
        _ => Ok(()),
    }
}

/// Reads a container's environment files on this host.
pub async fn read_environment_files(paths: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for path in paths {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("environment file {path}: {e}"))?;
        vars.extend(spec::parse_environment_file(path, &text)?);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_kinds_follow_ecs() {
        let td: TaskDefinition = serde_json::from_value(serde_json::json!({
            "volumes": [
                {"name": "bind", "host": {"sourcePath": "/srv"}},
                {"name": "scratch"},
                {"name": "empty-host", "host": {}},
                {"name": "task", "dockerVolumeConfiguration": {"driver": "local", "labels": {"a": "b"}}},
                {"name": "shared", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}}
            ],
            "pidMode": "task"
        }))
        .unwrap();
        let plan = TaskPlan::of(&td, Some(512), None).unwrap();
        assert_eq!(plan.volumes[0].1, VolumeKind::Bind("/srv".into()));
        assert!(matches!(plan.volumes[1].1, VolumeKind::Task { .. }));
        assert!(matches!(plan.volumes[2].1, VolumeKind::Task { .. }));
        assert!(
            matches!(&plan.volumes[3].1, VolumeKind::Task { driver: Some(d), labels, .. } if d == "local" && labels["a"] == "b")
        );
        assert!(matches!(
            plan.volumes[4].1,
            VolumeKind::Shared {
                autoprovision: true,
                ..
            }
        ));
        assert!(plan.needs_pause());
        assert_eq!(
            namespace_modes(&plan, Some("p1")),
            (Some("container:p1".into()), None)
        );
        let efs: TaskDefinition = serde_json::from_value(serde_json::json!({
            "volumes": [{"name": "e", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]
        }))
        .unwrap();
        assert!(TaskPlan::of(&efs, None, None).is_err());
    }

    #[test]
    fn shares_split_task_limits() {
        let a: ContainerDefinition =
            serde_json::from_value(serde_json::json!({"name": "a", "memory": 100, "cpu": 256}))
                .unwrap();
        let b: ContainerDefinition =
            serde_json::from_value(serde_json::json!({"name": "b"})).unwrap();
        let plan = TaskPlan {
            cpu: Some(1024),
            memory: Some(300),
            ..TaskPlan::default()
        };
        let shares = shares(&plan, &[&a, &b]);
        assert_eq!(shares["a"].memory_mib, Some(100));
        assert_eq!(shares["b"].memory_mib, Some(200));
        assert_eq!(shares["a"].cpu_units, Some(256));
        assert_eq!(shares["b"].cpu_units, Some(768));
    }

    #[test]
    fn architecture_is_checked() {
        assert!(architecture_matches(None, "X86_64").is_ok());
        assert!(architecture_matches(Some("X86_64"), "X86_64").is_ok());
        assert!(architecture_matches(Some("ARM64"), "X86_64")
            .unwrap_err()
            .contains("ARM64"));
    }
}
