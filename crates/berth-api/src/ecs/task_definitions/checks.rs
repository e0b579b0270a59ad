//! Value checks for the members berth applies (see `field_support`): a value the agent
//! could not apply as asked is refused at registration (or launch), naming the member.

use std::collections::{BTreeMap, BTreeSet};

use berth_core::status::NetworkMode;
use berth_core::Error;
use berth_wire::ecs;

/// ECS's bounds on the restart policy.
pub const RESTART_ATTEMPT_PERIOD: std::ops::RangeInclusive<i32> = 60..=1800;
pub const MAX_IGNORED_EXIT_CODES: usize = 50;
pub const MAX_ENVIRONMENT_FILES: usize = 10;
/// Log drivers berth passes to Docker.
pub const LOG_DRIVERS: &[&str] = &[
    "json-file",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "splunk",
    "none",
];
/// The `type` berth reads environment files with: a path on the container instance.
pub const ENVIRONMENT_FILE_TYPE: &str = "file";
/// ECS's tmpfs mount options.
const TMPFS_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

fn container_error(name: &str, message: impl std::fmt::Display) -> Error {
    Error::client(format!("Invalid setting for container '{name}'. {message}"))
}

fn absolute(path: &str) -> bool {
    path.starts_with('/')
}

/// A Docker volume or ECS volume name: letters, digits, `_`, `-` (ECS's rule).
fn volume_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a sysctl lives in the IPC namespace (runc's list).
pub fn is_ipc_sysctl(name: &str) -> bool {
    matches!(
        name,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || name.starts_with("fs.mqueue.")
}

/// What the task-level checks need to know.
pub struct TaskContext<'a> {
    pub network_mode: NetworkMode,
    pub pid_mode: Option<&'a str>,
    pub ipc_mode: Option<&'a str>,
    pub memory: Option<u64>,
    pub volumes: &'a BTreeSet<String>,
    pub names: &'a BTreeSet<String>,
}

/// The task-level members: volumes, PID/IPC modes, runtime platform, the execution role
/// that secrets need.
pub fn task(req: &ecs::RegisterTaskDefinitionRequest) -> Result<BTreeSet<String>, Error> {
    let has_secrets = req
        .container_definitions
        .iter()
        .flatten()
        .any(|c| c.secrets.as_ref().is_some_and(|s| !s.is_empty()));
    if has_secrets && req.execution_role_arn.as_deref().is_none_or(str::is_empty) {
        // ECS's words: secrets are fetched with the execution role, so one is required.
        return Err(Error::client(
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.",
        ));
    }
    for c in req.container_definitions.iter().flatten() {
        for s in c.secrets.iter().flatten() {
            let (Some(name), Some(from)) = (s.name.as_deref(), s.value_from.as_deref()) else {
                return Err(container_error(
                    c.name.as_deref().unwrap_or_default(),
                    "Each secret needs a name and a valueFrom.",
                ));
            };
            if let Err(e) = berth_iam::resolve::parse_value_from(from) {
                return Err(container_error(
                    c.name.as_deref().unwrap_or_default(),
                    format!("secret {name}: {e}"),
                ));
            }
        }
    }
    if let Some(mode) = req.pid_mode.as_deref() {
        if !ecs::enums::PID_MODE.contains(&mode) {
            return Err(Error::client(format!(
                "pidMode '{mode}' must be one of host, task."
            )));
        }
    }
    if let Some(mode) = req.ipc_mode.as_deref() {
        if !ecs::enums::IPC_MODE.contains(&mode) {
            return Err(Error::client(format!(
                "ipcMode '{mode}' must be one of host, task, none."
            )));
        }
    }
    if let Some(p) = &req.runtime_platform {
        if let Some(os) = p.operating_system_family.as_deref() {
            if os != "LINUX" {
                return Err(Error::client(format!(
                    "runtimePlatform.operatingSystemFamily '{os}' is not supported by berth: it runs Linux containers only (LINUX)."
                )));
            }
        }
        if let Some(arch) = p.cpu_architecture.as_deref() {
            if !ecs::enums::CPU_ARCHITECTURE.contains(&arch) {
                return Err(Error::client(format!(
                    "runtimePlatform.cpuArchitecture '{arch}' must be X86_64 or ARM64."
                )));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, v) in req.volumes.iter().flatten().enumerate() {
        let name = v.name.clone().unwrap_or_default();
        if !volume_name_ok(&name) {
            return Err(Error::client(format!(
                "volumes[{i}].name '{name}' is invalid: up to 255 letters, numbers, hyphens and underscores are allowed."
            )));
        }
        if !names.insert(name.clone()) {
            return Err(Error::client(format!("Duplicate volume name '{name}'.")));
        }
        let source = v.host.as_ref().and_then(|h| h.source_path.as_deref());
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            return Err(Error::client(format!(
                "Volume '{name}' sets both host and dockerVolumeConfiguration; choose one."
            )));
        }
        if let Some(path) = source.filter(|p| !p.is_empty()) {
            if !absolute(path) {
                return Err(Error::client(format!(
                    "Volume '{name}': host.sourcePath '{path}' must be an absolute path."
                )));
            }
        }
        if let Some(d) = &v.docker_volume_configuration {
            let scope = d.scope.as_deref().unwrap_or("task");
            if !ecs::enums::SCOPE.contains(&scope) {
                return Err(Error::client(format!(
                    "Volume '{name}': dockerVolumeConfiguration.scope '{scope}' must be task or shared."
                )));
            }
            if d.autoprovision == Some(true) && scope != "shared" {
                return Err(Error::client(format!(
                    "Volume '{name}': dockerVolumeConfiguration.autoprovision is only valid with scope shared."
                )));
            }
            if d.driver.as_deref().is_some_and(str::is_empty) {
                return Err(Error::client(format!(
                    "Volume '{name}': dockerVolumeConfiguration.driver must not be empty."
                )));
            }
        }
    }
    Ok(names)
}

/// The containers a container needs before it: dependsOn targets, link targets (started
/// first) and volumesFrom sources (created first), for cycle detection.
pub fn prerequisites(def: &ecs::ContainerDefinition) -> Vec<String> {
    let mut out: Vec<String> = def
        .depends_on
        .iter()
        .flatten()
        .filter_map(|d| d.container_name.clone())
        .collect();
    out.extend(
        def.links
            .iter()
            .flatten()
            .map(|l| link_target(l).to_string()),
    );
    out.extend(
        def.volumes_from
            .iter()
            .flatten()
            .filter_map(|v| v.source_container.clone()),
    );
    out
}

/// `name` or `name:alias` → `name`.
pub fn link_target(link: &str) -> &str {
    link.split_once(':').map_or(link, |(n, _)| n)
}

/// One container's applied members.
pub fn container(def: &ecs::ContainerDefinition, ctx: &TaskContext<'_>) -> Result<(), Error> {
    let name = def.name.clone().unwrap_or_default();
    let err = |m: String| container_error(&name, m);
    let other_container = |target: &str| ctx.names.contains(target) && target != name;

    if let (Some(limit), Some(m)) = (ctx.memory, def.memory) {
        if m as u64 > limit {
            return Err(err(format!(
                "'memory' ({m} MiB) must not exceed the task's memory ({limit} MiB)."
            )));
        }
    }
    if let (Some(limit), Some(r)) = (ctx.memory, def.memory_reservation) {
        if r as u64 > limit {
            return Err(err(format!(
                "'memoryReservation' ({r} MiB) must not exceed the task's memory ({limit} MiB)."
            )));
        }
    }
    let ports = def.port_mappings.as_ref().is_some_and(|p| !p.is_empty());
    if ports && ctx.network_mode == NetworkMode::None {
        return Err(err(
            "portMappings cannot be used with network mode none.".into()
        ));
    }
    if def.disable_networking == Some(true) {
        if ports {
            return Err(err(
                "portMappings cannot be used with disableNetworking.".into()
            ));
        }
        if def.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(err("links cannot be used with disableNetworking.".into()));
        }
    }
    for link in def.links.iter().flatten() {
        if ctx.network_mode != NetworkMode::Bridge {
            return Err(err(format!(
                "links are only supported in the bridge network mode, not {}.",
                ctx.network_mode
            )));
        }
        let target = link_target(link);
        let alias_ok = link
            .split_once(':')
            .is_none_or(|(_, a)| !a.is_empty() && !a.contains(':'));
        if !other_container(target) || !alias_ok {
            return Err(err(format!(
                "link '{link}' must be 'name' or 'name:alias' naming another container of this task definition."
            )));
        }
    }
    if def.version_consistency.as_deref() == Some("enabled") {
        return Err(err(
            "versionConsistency 'enabled' is not supported by berth: it does not pin image digests across a deployment. Use 'disabled' (each host resolves the tag when the task starts) or leave it out.".into(),
        ));
    }
    if let Some(v) = def.version_consistency.as_deref() {
        if v != "disabled" && v != "enabled" {
            return Err(err(format!(
                "versionConsistency '{v}' must be enabled or disabled."
            )));
        }
    }
    for opt in def.docker_security_options.iter().flatten() {
        if opt.starts_with("credentialspec") {
            return Err(err(format!(
                "dockerSecurityOptions '{opt}' is not supported by berth: credential specs are for Windows containers."
            )));
        }
        if opt.trim().is_empty() {
            return Err(err("dockerSecurityOptions must not be empty.".into()));
        }
    }
    restart_policy(def.restart_policy.as_ref()).map_err(err)?;
    environment_files(def.environment_files.as_deref()).map_err(err)?;
    mount_points(def, ctx).map_err(err)?;
    for v in def.volumes_from.iter().flatten() {
        let source = v.source_container.as_deref().unwrap_or_default();
        if !other_container(source) {
            return Err(err(format!(
                "volumesFrom sourceContainer '{source}' is not another container of this task definition."
            )));
        }
    }
    linux_parameters(def, ctx).map_err(err)?;
    for u in def.ulimits.iter().flatten() {
        let uname = u.name.as_deref().unwrap_or_default();
        if !ecs::enums::ULIMIT_NAME.contains(&uname) {
            return Err(err(format!(
                "ulimit name '{uname}' must be one of {}.",
                ecs::enums::ULIMIT_NAME.join(", ")
            )));
        }
    }
    for s in def.system_controls.iter().flatten() {
        let ns = s.namespace.as_deref().unwrap_or_default();
        if ns.is_empty() || s.value.is_none() {
            return Err(err("systemControls need both namespace and value.".into()));
        }
        if ns.starts_with("net.") && ctx.network_mode == NetworkMode::Host {
            return Err(err(format!(
                "systemControls '{ns}' cannot be set with network mode host (it would change the host's network namespace)."
            )));
        }
        if is_ipc_sysctl(ns) && ctx.ipc_mode == Some("host") {
            return Err(err(format!(
                "systemControls '{ns}' cannot be set with ipcMode host (it would change the host's IPC namespace)."
            )));
        }
    }
    if let Some(log) = &def.log_configuration {
        let driver = log.log_driver.as_deref().unwrap_or_default();
        match driver {
            "awslogs" => {
                return Err(err(
                    "logConfiguration.logDriver 'awslogs' is not supported by berth yet: CloudWatch Logs delivery is not available. Use json-file (the default), syslog, journald, gelf, fluentd or splunk.".into(),
                ))
            }
            "awsfirelens" => {
                return Err(err(
                    "logConfiguration.logDriver 'awsfirelens' is not supported by berth: FireLens is not available.".into(),
                ))
            }
            d if LOG_DRIVERS.contains(&d) => {}
            d => {
                return Err(err(format!(
                    "logConfiguration.logDriver '{d}' is not supported by berth; use one of {}.",
                    LOG_DRIVERS.join(", ")
                )))
            }
        }
    }
    for e in def.extra_hosts.iter().flatten() {
        if e.hostname.as_deref().unwrap_or_default().is_empty()
            || e.ip_address.as_deref().unwrap_or_default().is_empty()
        {
            return Err(err("extraHosts need hostname and ipAddress.".into()));
        }
    }
    Ok(())
}

fn restart_policy(p: Option<&ecs::ContainerRestartPolicy>) -> Result<(), String> {
    let Some(p) = p else { return Ok(()) };
    if p.enabled.is_none() {
        return Err("restartPolicy.enabled is required.".into());
    }
    if p.ignored_exit_codes
        .as_ref()
        .is_some_and(|c| c.len() > MAX_IGNORED_EXIT_CODES)
    {
        return Err(format!(
            "restartPolicy.ignoredExitCodes can have at most {MAX_IGNORED_EXIT_CODES} codes."
        ));
    }
    if let Some(period) = p.restart_attempt_period {
        if !RESTART_ATTEMPT_PERIOD.contains(&period) {
            return Err(format!(
                "restartPolicy.restartAttemptPeriod must be between {} and {} seconds.",
                RESTART_ATTEMPT_PERIOD.start(),
                RESTART_ATTEMPT_PERIOD.end()
            ));
        }
    }
    Ok(())
}

/// Environment files: type `file` (or absent) with an absolute host path.
pub fn environment_files(files: Option<&[ecs::EnvironmentFile]>) -> Result<(), String> {
    let files = files.unwrap_or_default();
    if files.len() > MAX_ENVIRONMENT_FILES {
        return Err(format!(
            "environmentFiles can list at most {MAX_ENVIRONMENT_FILES} files."
        ));
    }
    for file in files {
        let value = file.value.as_deref().unwrap_or_default();
        match file.r#type.as_deref() {
            None | Some(ENVIRONMENT_FILE_TYPE) => {}
            Some("s3") => {
                return Err(format!(
                    "environmentFiles type 's3' is not supported by berth: it has no S3. Give the file's absolute path on the container instance with type '{ENVIRONMENT_FILE_TYPE}'."
                ))
            }
            Some(other) => {
                return Err(format!(
                    "environmentFiles type '{other}' is not supported; use '{ENVIRONMENT_FILE_TYPE}' with the file's absolute path on the container instance."
                ))
            }
        }
        if !absolute(value) {
            return Err(format!(
                "environmentFiles value '{value}' must be an absolute path of a file on the container instance."
            ));
        }
    }
    Ok(())
}

fn mount_points(def: &ecs::ContainerDefinition, ctx: &TaskContext<'_>) -> Result<(), String> {
    let mut paths = BTreeSet::new();
    for m in def.mount_points.iter().flatten() {
        let source = m.source_volume.as_deref().unwrap_or_default();
        let path = m.container_path.as_deref().unwrap_or_default();
        if !ctx.volumes.contains(source) {
            return Err(format!(
                "mountPoints sourceVolume '{source}' is not a volume of this task definition."
            ));
        }
        if !absolute(path) {
            return Err(format!(
                "mountPoints containerPath '{path}' must be an absolute path."
            ));
        }
        if !paths.insert(path.to_string()) {
            return Err(format!("mountPoints mount '{path}' twice."));
        }
    }
    for t in def
        .linux_parameters
        .iter()
        .flat_map(|l| l.tmpfs.iter().flatten())
    {
        let path = t.container_path.as_deref().unwrap_or_default();
        if !paths.insert(path.to_string()) {
            return Err(format!("'{path}' is both a mount point and a tmpfs."));
        }
    }
    Ok(())
}

fn capability_ok(cap: &str) -> bool {
    let cap = cap.strip_prefix("CAP_").unwrap_or(cap);
    !cap.is_empty() && cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

fn linux_parameters(def: &ecs::ContainerDefinition, ctx: &TaskContext<'_>) -> Result<(), String> {
    let Some(l) = &def.linux_parameters else {
        return Ok(());
    };
    if let Some(caps) = &l.capabilities {
        for cap in caps.add.iter().chain(caps.drop.iter()).flatten() {
            if !capability_ok(cap) {
                return Err(format!(
                    "linuxParameters.capabilities '{cap}' is not a capability name (e.g. NET_ADMIN, SYS_PTRACE or ALL)."
                ));
            }
        }
    }
    for d in l.devices.iter().flatten() {
        let host = d.host_path.as_deref().unwrap_or_default();
        if !absolute(host) {
            return Err(format!(
                "linuxParameters.devices hostPath '{host}' must be an absolute path."
            ));
        }
        if let Some(c) = d.container_path.as_deref() {
            if !absolute(c) {
                return Err(format!(
                    "linuxParameters.devices containerPath '{c}' must be an absolute path."
                ));
            }
        }
        for p in d.permissions.iter().flatten() {
            if !ecs::enums::DEVICE_CGROUP_PERMISSION.contains(&p.as_str()) {
                return Err(format!(
                    "linuxParameters.devices permission '{p}' must be read, write or mknod."
                ));
            }
        }
    }
    if l.init_process_enabled == Some(true) {
        if let Some(mode @ ("host" | "task")) = ctx.pid_mode {
            return Err(format!(
                "linuxParameters.initProcessEnabled cannot be used with pidMode {mode}: Docker runs an init process only in a container's own PID namespace."
            ));
        }
    }
    if let Some(size) = l.shared_memory_size {
        if size <= 0 {
            return Err("linuxParameters.sharedMemorySize must be positive.".into());
        }
        if let Some(mode @ ("host" | "task" | "none")) = ctx.ipc_mode {
            return Err(format!(
                "linuxParameters.sharedMemorySize cannot be used with ipcMode {mode}: the container does not own a /dev/shm."
            ));
        }
    }
    for t in l.tmpfs.iter().flatten() {
        let path = t.container_path.as_deref().unwrap_or_default();
        if !absolute(path) {
            return Err(format!(
                "linuxParameters.tmpfs containerPath '{path}' must be an absolute path."
            ));
        }
        if t.size.is_none_or(|s| s <= 0) {
            return Err(format!(
                "linuxParameters.tmpfs '{path}' needs a positive size (MiB)."
            ));
        }
        for o in t.mount_options.iter().flatten() {
            let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
            if !TMPFS_OPTIONS.contains(&key) {
                return Err(format!(
                    "linuxParameters.tmpfs mount option '{o}' is not valid."
                ));
            }
        }
    }
    if let Some(swap) = l.max_swap {
        if swap < 0 {
            return Err("linuxParameters.maxSwap must not be negative.".into());
        }
        if def.memory.is_none() && ctx.memory.is_none() {
            return Err(
                "linuxParameters.maxSwap needs a hard memory limit ('memory' on the container or the task)."
                    .into(),
            );
        }
    }
    if let Some(s) = l.swappiness {
        if !(0..=100).contains(&s) {
            return Err("linuxParameters.swappiness must be between 0 and 100.".into());
        }
        if l.max_swap.is_none() {
            return Err(
                "linuxParameters.swappiness has no effect without maxSwap; set maxSwap too.".into(),
            );
        }
    }
    Ok(())
}

/// The task's containers together: CPU units within the task's, and, with `ipcMode: task`,
/// IPC sysctls that agree (they are set once, on the pause container).
pub fn containers_together(
    defs: &[ecs::ContainerDefinition],
    task_cpu: Option<u64>,
    ipc_mode: Option<&str>,
) -> Result<(), Error> {
    if let Some(limit) = task_cpu {
        let total: u64 = defs
            .iter()
            .map(|d| u64::try_from(d.cpu.unwrap_or(0)).unwrap_or(0))
            .sum();
        if total > limit {
            return Err(Error::client(format!(
                "The containers' cpu ({total} units together) must not exceed the task's cpu ({limit} units)."
            )));
        }
    }
    if ipc_mode == Some("task") {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for s in defs.iter().flat_map(|d| d.system_controls.iter().flatten()) {
            let (Some(ns), Some(v)) = (s.namespace.as_deref(), s.value.as_deref()) else {
                continue;
            };
            if !is_ipc_sysctl(ns) {
                continue;
            }
            if seen.insert(ns, v).is_some_and(|old| old != v) {
                return Err(Error::client(format!(
                    "systemControls '{ns}' is set to different values, but with ipcMode task the containers share one IPC namespace."
                )));
            }
        }
    }
    Ok(())
}
