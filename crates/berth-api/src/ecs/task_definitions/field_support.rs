//! What berth does with every member of the shapes a task is made of: the
//! RegisterTaskDefinition request, its container definitions, RunTask/StartTask overrides,
//! and the nested shapes those use. Each member is in exactly one of three lists:
//!
//! - [`APPLIED`]: the agent applies it to the containers (or the control plane to the task);
//!   the note says how, and which values are refused.
//! - [`REJECTED`]: registration (or the launch, for overrides) fails with an error naming the
//!   member when it is set; the note is the reason given.
//! - [`STORED_NO_EFFECT`]: kept and returned by Describe, with no effect, where ECS itself
//!   ignores the member for the EC2 launch type on Linux.
//!
//! The registration check ([`first_rejected`]), the README's field table
//! ([`readme_table`]) and the test that walks the botocore model (`berth_wire::ecs::STRUCTURES`)
//! all read these lists, so a member botocore adds cannot slip through unclassified.

use serde_json::Value;

/// One member of a model shape and what berth says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub shape: &'static str,
    pub member: &'static str,
    pub note: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Applied,
    Rejected,
    StoredNoEffect,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Rejected => "rejected",
            Self::StoredNoEffect => "stored, no effect",
        }
    }
}

const fn f(shape: &'static str, member: &'static str, note: &'static str) -> Field {
    Field {
        shape,
        member,
        note,
    }
}

/// Where the walk starts: the registration request and the launch overrides.
pub const ROOTS: &[&str] = &["RegisterTaskDefinitionRequest", "TaskOverride"];

/// Members whose value is a structure (or a list or map of them) that berth looks into:
/// (shape, member, the member's shape).
pub const NESTED: &[(&str, &str, &str)] = &[
    (
        "RegisterTaskDefinitionRequest",
        "containerDefinitions",
        "ContainerDefinition",
    ),
    ("RegisterTaskDefinitionRequest", "volumes", "Volume"),
    (
        "RegisterTaskDefinitionRequest",
        "placementConstraints",
        "TaskDefinitionPlacementConstraint",
    ),
    ("RegisterTaskDefinitionRequest", "tags", "Tag"),
    (
        "RegisterTaskDefinitionRequest",
        "runtimePlatform",
        "RuntimePlatform",
    ),
    ("ContainerDefinition", "portMappings", "PortMapping"),
    (
        "ContainerDefinition",
        "restartPolicy",
        "ContainerRestartPolicy",
    ),
    ("ContainerDefinition", "environment", "KeyValuePair"),
    ("ContainerDefinition", "secrets", "Secret"),
    ("ContainerDefinition", "environmentFiles", "EnvironmentFile"),
    ("ContainerDefinition", "mountPoints", "MountPoint"),
    ("ContainerDefinition", "volumesFrom", "VolumeFrom"),
    ("ContainerDefinition", "linuxParameters", "LinuxParameters"),
    ("ContainerDefinition", "dependsOn", "ContainerDependency"),
    ("ContainerDefinition", "extraHosts", "HostEntry"),
    ("ContainerDefinition", "ulimits", "Ulimit"),
    (
        "ContainerDefinition",
        "logConfiguration",
        "LogConfiguration",
    ),
    ("ContainerDefinition", "healthCheck", "HealthCheck"),
    ("ContainerDefinition", "systemControls", "SystemControl"),
    ("LinuxParameters", "capabilities", "KernelCapabilities"),
    ("LinuxParameters", "devices", "Device"),
    ("LinuxParameters", "tmpfs", "Tmpfs"),
    ("Volume", "host", "HostVolumeProperties"),
    (
        "Volume",
        "dockerVolumeConfiguration",
        "DockerVolumeConfiguration",
    ),
    ("TaskOverride", "containerOverrides", "ContainerOverride"),
    ("ContainerOverride", "environment", "KeyValuePair"),
    ("ContainerOverride", "environmentFiles", "EnvironmentFile"),
];

pub const APPLIED: &[Field] = &[
    // RegisterTaskDefinitionRequest
    f("RegisterTaskDefinitionRequest", "family", ""),
    f(
        "RegisterTaskDefinitionRequest",
        "networkMode",
        "`bridge` (default), `host`, `none`. `awsvpc` is refused at launch (UnsupportedFeatureException). `host` is host-level access: it needs an instance that opted in (`--allow-host-namespaces`) and `berth:RunPrivilegedTask`.",
    ),
    f("RegisterTaskDefinitionRequest", "containerDefinitions", "At most 10."),
    f(
        "RegisterTaskDefinitionRequest",
        "volumes",
        "Bind mounts, Docker-managed scratch volumes and Docker volumes; see `Volume`.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "placementConstraints",
        "`memberOf`, evaluated at placement.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "requiresCompatibilities",
        "EC2 and EXTERNAL run on container instances; FARGATE is refused at registration (after ECS's Fargate checks): berth has no Fargate capacity.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "cpu",
        "Reserved at placement and enforced as a CPU quota on the task's cgroup (all containers together).",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "memory",
        "Reserved at placement and enforced as a hard limit on the task's cgroup (all containers together); also the limit of each container without its own `memory`.",
    ),
    f("RegisterTaskDefinitionRequest", "tags", ""),
    f(
        "RegisterTaskDefinitionRequest",
        "pidMode",
        "`host` (host-level access: `--allow-host-namespaces` and `berth:RunPrivilegedTask`); `task`: the task's containers share one PID namespace, held by a pause container.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "ipcMode",
        "`host` (host-level access: `--allow-host-namespaces` and `berth:RunPrivilegedTask`), `none`; `task`: the task's containers share one IPC namespace, held by a pause container.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "runtimePlatform",
        "`operatingSystemFamily` must be `LINUX`; a task whose `cpuArchitecture` differs from the host's fails to start.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "taskRoleArn",
        "The role must trust `ecs-tasks.amazonaws.com`. The agent serves the role's temporary credentials to the containers (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN`), refreshed before they expire.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "executionRoleArn",
        "Resolves the containers' `secrets` (it must trust `ecs-tasks.amazonaws.com`). berth pulls images with the host's Docker credentials (berth has no private registry yet) and has no awslogs.",
    ),
    // ContainerDefinition
    f("ContainerDefinition", "name", ""),
    f(
        "ContainerDefinition",
        "image",
        "Used as is when present on the host, pulled otherwise.",
    ),
    f("ContainerDefinition", "cpu", "Docker CPU shares (at least 2)."),
    f(
        "ContainerDefinition",
        "memory",
        "Hard limit; at most the task's `memory`.",
    ),
    f(
        "ContainerDefinition",
        "memoryReservation",
        "Soft limit (Docker memory reservation).",
    ),
    f(
        "ContainerDefinition",
        "links",
        "`bridge` mode only. A linked container starts first.",
    ),
    f(
        "ContainerDefinition",
        "portMappings",
        "Refused with network mode `none` and with `disableNetworking`.",
    ),
    f("ContainerDefinition", "essential", ""),
    f(
        "ContainerDefinition",
        "restartPolicy",
        "The agent restarts the container in place; see `ContainerRestartPolicy`.",
    ),
    f("ContainerDefinition", "entryPoint", ""),
    f("ContainerDefinition", "command", ""),
    f("ContainerDefinition", "environment", ""),
    f(
        "ContainerDefinition",
        "secrets",
        "Resolved at launch with the execution role's permissions and put in the container's environment only (never in the task, a Describe* answer or a log); one that cannot be resolved stops the task with `ResourceInitializationError`. A secret wins over an `environment` variable of the same name.",
    ),
    f("Secret", "name", "The environment variable."),
    f(
        "Secret",
        "valueFrom",
        "A Secrets Manager secret (ARN, with optional `:json-key:version-stage:version-id`) or an SSM parameter (ARN or name).",
    ),
    f(
        "ContainerDefinition",
        "environmentFiles",
        "Files on the container instance, read by the agent when it creates the container; see `EnvironmentFile`. `environment` wins over them.",
    ),
    f("ContainerDefinition", "mountPoints", ""),
    f(
        "ContainerDefinition",
        "volumesFrom",
        "The source container is created first.",
    ),
    f("ContainerDefinition", "linuxParameters", ""),
    f(
        "ContainerDefinition",
        "dependsOn",
        "START, COMPLETE, SUCCESS, HEALTHY.",
    ),
    f(
        "ContainerDefinition",
        "startTimeout",
        "How long dependents wait for this container to reach their condition (default 180 s).",
    ),
    f(
        "ContainerDefinition",
        "stopTimeout",
        "SIGTERM, then SIGKILL after this many seconds (default 30, at most 120).",
    ),
    f(
        "ContainerDefinition",
        "versionConsistency",
        "`disabled`: the tag is resolved on each host when the task starts (berth's behaviour); `enabled` is refused, since berth does not pin digests across a deployment.",
    ),
    f("ContainerDefinition", "hostname", ""),
    f("ContainerDefinition", "user", ""),
    f("ContainerDefinition", "workingDirectory", ""),
    f(
        "ContainerDefinition",
        "disableNetworking",
        "No network; no task metadata endpoint.",
    ),
    f(
        "ContainerDefinition",
        "privileged",
        "Host-level access: needs an instance that opted in (`--allow-privileged`) and `berth:RunPrivilegedTask`.",
    ),
    f("ContainerDefinition", "readonlyRootFilesystem", ""),
    f("ContainerDefinition", "dnsServers", ""),
    f("ContainerDefinition", "dnsSearchDomains", ""),
    f("ContainerDefinition", "extraHosts", ""),
    f(
        "ContainerDefinition",
        "dockerSecurityOptions",
        "Passed to Docker (`no-new-privileges`, `apparmor:…`, `label:…`, `seccomp…`); `credentialspec:` (Windows) is refused.",
    ),
    f("ContainerDefinition", "interactive", ""),
    f("ContainerDefinition", "pseudoTerminal", ""),
    f(
        "ContainerDefinition",
        "dockerLabels",
        "berth's own `com.amazonaws.ecs.*`/`berth.*` labels win.",
    ),
    f("ContainerDefinition", "ulimits", ""),
    f(
        "ContainerDefinition",
        "logConfiguration",
        "Passed to Docker; see `LogConfiguration`.",
    ),
    f("ContainerDefinition", "healthCheck", ""),
    f(
        "ContainerDefinition",
        "systemControls",
        "Docker sysctls. `net.*` is refused with network mode `host`, IPC ones with `ipcMode: host`; with `ipcMode: task` IPC ones are set on the task's pause container.",
    ),
    // PortMapping
    f("PortMapping", "containerPort", ""),
    f(
        "PortMapping",
        "hostPort",
        "0 or absent: a dynamic host port (bridge).",
    ),
    f("PortMapping", "protocol", "`tcp`, `udp`."),
    // ContainerRestartPolicy
    f("ContainerRestartPolicy", "enabled", ""),
    f(
        "ContainerRestartPolicy",
        "ignoredExitCodes",
        "Exits with these codes are not restarted (at most 50).",
    ),
    f(
        "ContainerRestartPolicy",
        "restartAttemptPeriod",
        "60 to 1800 s (default 300): a container is restarted only if it ran that long since its last (re)start.",
    ),
    // KeyValuePair
    f("KeyValuePair", "name", ""),
    f("KeyValuePair", "value", ""),
    // EnvironmentFile
    f(
        "EnvironmentFile",
        "value",
        "Absolute path of a file on the container instance (`VAR=VALUE` lines, `#` comments).",
    ),
    f(
        "EnvironmentFile",
        "type",
        "`file` (a berth value); `s3` is refused (berth has no S3).",
    ),
    // MountPoint
    f("MountPoint", "sourceVolume", "A volume of the task definition."),
    f("MountPoint", "containerPath", ""),
    f("MountPoint", "readOnly", ""),
    // VolumeFrom
    f("VolumeFrom", "sourceContainer", ""),
    f("VolumeFrom", "readOnly", ""),
    // LinuxParameters
    f("LinuxParameters", "capabilities", ""),
    f("LinuxParameters", "devices", ""),
    f(
        "LinuxParameters",
        "initProcessEnabled",
        "Docker's init (`--init`); refused with `pidMode` `host` or `task` (Docker runs no init in a shared PID namespace).",
    ),
    f(
        "LinuxParameters",
        "sharedMemorySize",
        "`/dev/shm` size, MiB; refused with any `ipcMode` (the container does not own a `/dev/shm` then).",
    ),
    f("LinuxParameters", "tmpfs", ""),
    f(
        "LinuxParameters",
        "maxSwap",
        "Swap on top of the hard limit, MiB (0: none); needs a hard limit.",
    ),
    f(
        "LinuxParameters",
        "swappiness",
        "0 to 100 (default 60); needs `maxSwap`.",
    ),
    // KernelCapabilities
    f(
        "KernelCapabilities",
        "add",
        "Host-level access: needs an instance that opted in (`--allow-added-capabilities`) and `berth:RunPrivilegedTask`.",
    ),
    f("KernelCapabilities", "drop", ""),
    // Device
    f("Device", "hostPath", ""),
    f("Device", "containerPath", "Defaults to `hostPath`."),
    f("Device", "permissions", "`read`, `write`, `mknod` (default all)."),
    // Tmpfs
    f("Tmpfs", "containerPath", ""),
    f("Tmpfs", "size", "MiB."),
    f("Tmpfs", "mountOptions", ""),
    // ContainerDependency
    f("ContainerDependency", "containerName", ""),
    f("ContainerDependency", "condition", ""),
    // HostEntry
    f("HostEntry", "hostname", ""),
    f("HostEntry", "ipAddress", ""),
    // Ulimit
    f("Ulimit", "name", ""),
    f("Ulimit", "softLimit", ""),
    f("Ulimit", "hardLimit", ""),
    // LogConfiguration
    f(
        "LogConfiguration",
        "logDriver",
        "`json-file`, `syslog`, `journald`, `gelf`, `fluentd`, `splunk`, `none`, passed to Docker. `awslogs` and `awsfirelens` are refused (CloudWatch Logs and FireLens are not there yet); a driver the host's Docker lacks fails the container's creation.",
    ),
    f("LogConfiguration", "options", "Passed to Docker."),
    // HealthCheck
    f("HealthCheck", "command", ""),
    f("HealthCheck", "interval", ""),
    f("HealthCheck", "timeout", ""),
    f("HealthCheck", "retries", ""),
    f("HealthCheck", "startPeriod", ""),
    // SystemControl
    f("SystemControl", "namespace", ""),
    f("SystemControl", "value", ""),
    // Volume
    f("Volume", "name", ""),
    f(
        "Volume",
        "host",
        "With `sourcePath`: a bind mount of that host path. Without `host` and `dockerVolumeConfiguration`: a scratch Docker volume removed with the task's containers.",
    ),
    f("Volume", "dockerVolumeConfiguration", ""),
    // HostVolumeProperties
    f(
        "HostVolumeProperties",
        "sourcePath",
        "Absolute path. `/`, the Docker socket or a directory holding it is host-level access: it needs an instance that opted in (`--allow-host-root-mounts`) and `berth:RunPrivilegedTask`.",
    ),
    // DockerVolumeConfiguration
    f(
        "DockerVolumeConfiguration",
        "scope",
        "`task` (default): created for the task, removed with its containers. `shared`: outlives the task.",
    ),
    f(
        "DockerVolumeConfiguration",
        "autoprovision",
        "`shared` only: create the volume if it does not exist (else it must exist).",
    ),
    f(
        "DockerVolumeConfiguration",
        "driver",
        "Default `local`.",
    ),
    f("DockerVolumeConfiguration", "driverOpts", ""),
    f("DockerVolumeConfiguration", "labels", ""),
    // TaskDefinitionPlacementConstraint
    f("TaskDefinitionPlacementConstraint", "type", "`memberOf`."),
    f("TaskDefinitionPlacementConstraint", "expression", ""),
    // Tag
    f("Tag", "key", ""),
    f("Tag", "value", ""),
    // RuntimePlatform
    f(
        "RuntimePlatform",
        "cpuArchitecture",
        "Checked against the host by the agent.",
    ),
    f(
        "RuntimePlatform",
        "operatingSystemFamily",
        "`LINUX` only.",
    ),
    // TaskOverride
    f("TaskOverride", "containerOverrides", ""),
    f(
        "TaskOverride",
        "taskRoleArn",
        "Replaces the definition's `taskRoleArn`.",
    ),
    f(
        "TaskOverride",
        "executionRoleArn",
        "Replaces the definition's `executionRoleArn`.",
    ),
    f(
        "TaskOverride",
        "cpu",
        "Replaces the task-level `cpu` (placement and cgroup).",
    ),
    f(
        "TaskOverride",
        "memory",
        "Replaces the task-level `memory` (placement and cgroup).",
    ),
    // ContainerOverride
    f("ContainerOverride", "name", ""),
    f("ContainerOverride", "command", ""),
    f(
        "ContainerOverride",
        "environment",
        "Added to (and winning over) the definition's.",
    ),
    f(
        "ContainerOverride",
        "environmentFiles",
        "Read after the definition's files.",
    ),
    f("ContainerOverride", "cpu", ""),
    f("ContainerOverride", "memory", ""),
    f("ContainerOverride", "memoryReservation", ""),
];

pub const REJECTED: &[Field] = &[
    f(
        "RegisterTaskDefinitionRequest",
        "proxyConfiguration",
        "App Mesh proxy configuration needs the awsvpc network mode.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "enableFaultInjection",
        "berth has no fault injection endpoints.",
    ),
    f(
        "ContainerDefinition",
        "repositoryCredentials",
        "private registry credentials come from Secrets Manager, which berth does not serve yet; give the host's Docker the credentials instead.",
    ),
    f(
        "ContainerDefinition",
        "resourceRequirements",
        "berth cannot assign GPUs or inference accelerators to containers.",
    ),
    f(
        "ContainerDefinition",
        "firelensConfiguration",
        "FireLens log routing is not available.",
    ),
    f(
        "ContainerDefinition",
        "credentialSpecs",
        "gMSA (Active Directory) credentials are not available.",
    ),
    f(
        "PortMapping",
        "containerPortRange",
        "berth maps single ports only.",
    ),
    f(
        "LogConfiguration",
        "secretOptions",
        "berth does not pass secrets to log drivers (Docker log options are readable by anyone who can inspect the container); use `options` or the container's `secrets`.",
    ),
    f(
        "Volume",
        "efsVolumeConfiguration",
        "Amazon EFS volumes are not available.",
    ),
    f(
        "Volume",
        "s3filesVolumeConfiguration",
        "S3 Files volumes are not available.",
    ),
    f(
        "Volume",
        "fsxWindowsFileServerVolumeConfiguration",
        "FSx for Windows File Server volumes are not available.",
    ),
    f(
        "Volume",
        "configuredAtLaunch",
        "volumes configured at launch (Amazon EBS) are not available.",
    ),
    f(
        "ContainerOverride",
        "resourceRequirements",
        "berth cannot assign GPUs or inference accelerators to containers.",
    ),
];

pub const STORED_NO_EFFECT: &[Field] = &[
    f(
        "RegisterTaskDefinitionRequest",
        "inferenceAccelerators",
        "Elastic Inference is discontinued.",
    ),
    f(
        "RegisterTaskDefinitionRequest",
        "ephemeralStorage",
        "Fargate only; ECS ignores it for EC2.",
    ),
    f("PortMapping", "name", "Used by Service Connect only."),
    f(
        "PortMapping",
        "appProtocol",
        "Used by Service Connect only.",
    ),
    f(
        "TaskOverride",
        "inferenceAcceleratorOverrides",
        "Elastic Inference is discontinued.",
    ),
    f(
        "TaskOverride",
        "ephemeralStorage",
        "Fargate only; ECS ignores it for EC2.",
    ),
];

/// What berth does with `shape.member`, if it is classified.
pub fn support(shape: &str, member: &str) -> Option<(Support, &'static Field)> {
    let find =
        |list: &'static [Field]| list.iter().find(|f| f.shape == shape && f.member == member);
    find(APPLIED)
        .map(|f| (Support::Applied, f))
        .or_else(|| find(REJECTED).map(|f| (Support::Rejected, f)))
        .or_else(|| find(STORED_NO_EFFECT).map(|f| (Support::StoredNoEffect, f)))
}

fn nested(shape: &str, member: &str) -> Option<&'static str> {
    NESTED
        .iter()
        .find(|(s, m, _)| *s == shape && *m == member)
        .map(|(_, _, n)| *n)
}

/// Whether a member's value counts as set: `null`, `false`, `[]` and `{}` do not (clients
/// send empty defaults, e.g. Terraform's `secrets: []`).
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// The first rejected member set in `doc` (a document of shape `shape`), as its JSON path
/// (e.g. `containerDefinitions[0].secrets`) and its entry.
pub fn first_rejected(shape: &str, doc: &Value) -> Option<(String, &'static Field)> {
    walk(shape, doc, "")
}

fn walk(shape: &str, doc: &Value, prefix: &str) -> Option<(String, &'static Field)> {
    let Value::Object(members) = doc else {
        return None;
    };
    for (member, value) in members {
        if !is_set(value) {
            continue;
        }
        let path = if prefix.is_empty() {
            member.clone()
        } else {
            format!("{prefix}.{member}")
        };
        match support(shape, member) {
            Some((Support::Rejected, field)) => return Some((path, field)),
            Some((Support::Applied, _)) => {
                let Some(inner) = nested(shape, member) else {
                    continue;
                };
                let found = match value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .find_map(|(i, item)| walk(inner, item, &format!("{path}[{i}]"))),
                    other => walk(inner, other, &path),
                };
                if found.is_some() {
                    return found;
                }
            }
            _ => {}
        }
    }
    None
}

/// The error message for a rejected member.
pub fn rejection_message(path: &str, field: &Field) -> String {
    format!(
        "{path} is not supported by berth: {} Remove it from the request.",
        field.note
    )
}

/// The shapes the lists cover: the roots and every nested shape, in walk order.
pub fn covered_shapes() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = ROOTS.to_vec();
    let mut i = 0;
    while i < out.len() {
        let shape = out[i];
        for (s, _, n) in NESTED {
            if *s == shape && !out.contains(n) {
                out.push(n);
            }
        }
        i += 1;
    }
    out
}

/// The README's field table (markdown), generated from the lists in model order.
pub fn readme_table() -> String {
    let mut out = String::from("| Member | berth | Notes |\n|---|---|---|\n");
    for shape in covered_shapes() {
        let members = berth_wire::ecs::STRUCTURES
            .iter()
            .find(|(s, _)| *s == shape)
            .map_or(&[][..], |(_, m)| *m);
        for member in members {
            let Some((support, field)) = support(shape, member) else {
                continue;
            };
            let support = match support {
                Support::Rejected => "**rejected**".to_string(),
                other => other.as_str().to_string(),
            };
            let note = field.note.replace('|', "\\|");
            out.push_str(&format!("| `{shape}.{member}` | {support} | {note} |\n"));
        }
    }
    out
}

/// (applied, rejected, stored-no-effect) counts.
pub fn counts() -> (usize, usize, usize) {
    (APPLIED.len(), REJECTED.len(), STORED_NO_EFFECT.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn model_members(shape: &str) -> &'static [&'static str] {
        berth_wire::ecs::STRUCTURES
            .iter()
            .find(|(s, _)| *s == shape)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("shape {shape} is not in the botocore model"))
    }

    /// Every member of every covered shape is in exactly one list, and every list entry is
    /// a member of the model: a member botocore adds fails this test until it is classified.
    #[test]
    fn every_model_member_is_classified_exactly_once() {
        let mut problems = Vec::new();
        for shape in covered_shapes() {
            for member in model_members(shape) {
                let lists = [
                    ("APPLIED", APPLIED),
                    ("REJECTED", REJECTED),
                    ("STORED_NO_EFFECT", STORED_NO_EFFECT),
                ];
                let found: Vec<&str> = lists
                    .iter()
                    .filter(|(_, l)| l.iter().any(|f| f.shape == shape && f.member == *member))
                    .map(|(n, _)| *n)
                    .collect();
                if found.len() != 1 {
                    problems.push(format!(
                        "{shape}.{member} is in {found:?}: put it in exactly one of APPLIED, REJECTED, STORED_NO_EFFECT"
                    ));
                }
            }
        }
        let covered: BTreeSet<&str> = covered_shapes().into_iter().collect();
        for field in APPLIED.iter().chain(REJECTED).chain(STORED_NO_EFFECT) {
            if !covered.contains(field.shape) || !model_members(field.shape).contains(&field.member)
            {
                problems.push(format!(
                    "{}.{} is listed but not a member of a covered model shape",
                    field.shape, field.member
                ));
            }
        }
        for (shape, member, inner) in NESTED {
            if support(shape, member).map(|(s, _)| s) != Some(Support::Applied) {
                problems.push(format!(
                    "{shape}.{member} is walked into but is not APPLIED"
                ));
            }
            model_members(inner);
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// With botocore installed (as in CI), checks against the model itself that every
    /// applied member whose shape is a structure (or a list/map of one) is walked into, so a
    /// new nested shape is classified too.
    #[test]
    fn applied_structure_members_are_walked_into() {
        let script = r#"
import botocore, glob, gzip, json, os
d = os.path.dirname(botocore.__file__)
path = sorted(glob.glob(os.path.join(d, 'data', 'ecs', '*', 'service-2.json*')))[-1]
opener = gzip.open if path.endswith('.gz') else open
shapes = json.load(opener(path, 'rt'))['shapes']
def target(name):
    s = shapes[name]
    if s['type'] == 'list':
        return target(s['member']['shape'])
    if s['type'] == 'map':
        return target(s['value']['shape'])
    return name if s['type'] == 'structure' else None
out = {}
for name, s in shapes.items():
    if s['type'] == 'structure':
        out[name] = {m: target(v['shape']) for m, v in s.get('members', {}).items()}
print(json.dumps(out))
"#;
        let output = match std::process::Command::new("python3")
            .args(["-c", script])
            .output()
        {
            Ok(o) if o.status.success() => o,
            other => {
                eprintln!("SKIPPED: botocore is not installed for python3 ({other:?})");
                return;
            }
        };
        let model: Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut problems = Vec::new();
        for shape in covered_shapes() {
            for field in APPLIED.iter().filter(|f| f.shape == shape) {
                let target = &model[shape][field.member];
                match (target.as_str(), nested(shape, field.member)) {
                    (Some(t), Some(n)) if t == n => {}
                    (Some(t), _) => problems.push(format!(
                        "{shape}.{} is a {t}: add it to NESTED",
                        field.member
                    )),
                    (None, Some(n)) => problems.push(format!(
                        "{shape}.{} is not a structure but NESTED says {n}",
                        field.member
                    )),
                    (None, None) => {}
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The README's table is the generated one. `BERTH_UPDATE_README=1` rewrites it.
    #[test]
    fn readme_table_matches_the_lists() {
        const BEGIN: &str = "<!-- field-support:begin (generated from crates/berth-api/src/ecs/task_definitions/field_support.rs) -->\n";
        const END: &str = "<!-- field-support:end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let table = readme_table();
        let (start, end) = match (readme.find(BEGIN), readme.find(END)) {
            (Some(s), Some(e)) if s < e => (s + BEGIN.len(), e),
            _ => panic!("README.md has no field-support markers: {BEGIN:?} ... {END:?}"),
        };
        if readme[start..end] != table {
            if std::env::var_os("BERTH_UPDATE_README").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
                std::fs::write(&path, updated).unwrap();
                return;
            }
            panic!(
                "README.md's field table is out of date: run \
                 `BERTH_UPDATE_README=1 cargo test -p berth-api readme_table` to regenerate it"
            );
        }
        let (applied, rejected, stored) = counts();
        let summary =
            format!("{applied} applied, {rejected} rejected, {stored} stored with no effect");
        assert!(
            readme.contains(&summary),
            "README.md should say \"{summary}\""
        );
    }

    #[test]
    fn finds_rejected_members_anywhere_and_ignores_empty_values() {
        let doc = serde_json::json!({
            "family": "f",
            "containerDefinitions": [
                {"name": "a", "secrets": []},
                {"name": "b", "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"]}},
                 "logConfiguration": {"logDriver": "json-file", "secretOptions": [{"name": "x"}]}}
            ],
            "enableFaultInjection": false,
        });
        let (path, field) = first_rejected("RegisterTaskDefinitionRequest", &doc).unwrap();
        assert_eq!(
            path,
            "containerDefinitions[1].logConfiguration.secretOptions"
        );
        assert_eq!(field.member, "secretOptions");
        assert!(rejection_message(&path, field).contains("not supported"));
        let overrides = serde_json::json!({"containerOverrides": [{"name": "a",
            "resourceRequirements": [{"type": "GPU", "value": "1"}]}]});
        let (path, _) = first_rejected("TaskOverride", &overrides).unwrap();
        assert_eq!(path, "containerOverrides[0].resourceRequirements");
        assert!(first_rejected("TaskOverride", &serde_json::json!({"cpu": "256"})).is_none());
    }
}
