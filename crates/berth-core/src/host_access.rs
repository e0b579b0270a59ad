//! Host-level access a task definition asks for: what would let its containers act as
//! root on the container instance (privileged mode, the host's namespaces, a bind mount of
//! `/` or of the Docker socket, added kernel capabilities).
//!
//! Such a task runs only where two parties agree: the container instance opted in (its
//! agent was started with the matching `--allow-*` flag and advertises the attribute, which
//! the scheduler requires) and the caller who launches it holds `berth:RunPrivilegedTask`
//! on the cluster. This module is the one classification all three places read: the
//! scheduler's required attributes, the API's extra authorization, and the agent's refusal.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// The IAM action a caller needs, on the cluster, to launch a task that asks for any kind
/// of host-level access (RunTask, StartTask, CreateService, UpdateService).
pub const RUN_PRIVILEGED_TASK_ACTION: &str = "berth:RunPrivilegedTask";
/// Condition key with the kinds of access the task asks for ([`HostAccess::as_str`]).
pub const HOST_ACCESS_CONDITION_KEY: &str = "berth:HostAccess";

/// Docker's socket paths: a bind mount of either gives the container the Docker API, hence
/// root on the host.
pub const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// One kind of host-level access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostAccess {
    /// A container with `privileged: true`.
    Privileged,
    /// `networkMode`, `pidMode` or `ipcMode` `host`.
    HostNamespaces,
    /// A host volume whose `sourcePath` is `/`, the Docker socket, or a directory that holds
    /// the socket (`/var`, `/var/run`, `/run`).
    HostRootMounts,
    /// `linuxParameters.capabilities.add` on a container.
    AddedCapabilities,
}

impl HostAccess {
    pub const ALL: [HostAccess; 4] = [
        Self::Privileged,
        Self::HostNamespaces,
        Self::HostRootMounts,
        Self::AddedCapabilities,
    ];

    /// The value in the `berth:HostAccess` condition key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::HostNamespaces => "host-namespaces",
            Self::HostRootMounts => "host-root-mounts",
            Self::AddedCapabilities => "added-capabilities",
        }
    }

    /// The container instance attribute an opted-in agent advertises and a task needing
    /// this access requires. Privileged containers use ECS's own attribute.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::Privileged => "com.amazonaws.ecs.capability.privileged-container",
            Self::HostNamespaces => "berth.capability.host-namespaces",
            Self::HostRootMounts => "berth.capability.host-root-mounts",
            Self::AddedCapabilities => "berth.capability.added-capabilities",
        }
    }

    /// The `berth agent` (and `berth dev`) flag that opts an instance in.
    pub fn agent_flag(self) -> &'static str {
        match self {
            Self::Privileged => "--allow-privileged",
            Self::HostNamespaces => "--allow-host-namespaces",
            Self::HostRootMounts => "--allow-host-root-mounts",
            Self::AddedCapabilities => "--allow-added-capabilities",
        }
    }

    /// Whether an instance attribute is one only the agent may set (it says the host opted
    /// in): refused in PutAttributes and in RegisterContainerInstance through the ECS API.
    pub fn is_capability_attribute(name: &str) -> bool {
        Self::ALL.iter().any(|a| a.attribute() == name)
    }
}

impl fmt::Display for HostAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing in a task definition that asks for host-level access, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAccessUse {
    pub access: HostAccess,
    /// E.g. `container 'web' is privileged`.
    pub what: String,
}

/// Normalizes an absolute path lexically: no `.`, `..`, empty or trailing components.
/// Symbolic links are not followed (the control plane does not see the host; the agent
/// resolves them too).
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether a bind mount of this host path exposes the host's root: `/`, a Docker socket,
/// or a directory above one (mounting `/run` hands over the socket just as well).
pub fn is_host_root_path(path: &str) -> bool {
    let p = normalize_path(path);
    p == "/"
        || DOCKER_SOCKETS
            .iter()
            .any(|s| *s == p || s.starts_with(&format!("{p}/")))
}

/// Everything in a task definition document (ECS's `TaskDefinition` JSON) that asks for
/// host-level access, in document order. Overrides cannot add any of these.
pub fn uses(document: &Value) -> Vec<HostAccessUse> {
    let mut out = Vec::new();
    let mut push = |access, what: String| out.push(HostAccessUse { access, what });
    for member in ["networkMode", "pidMode", "ipcMode"] {
        if document[member].as_str() == Some("host") {
            push(HostAccess::HostNamespaces, format!("{member} is host"));
        }
    }
    for volume in document["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        if let Some(source) = volume["host"]["sourcePath"].as_str() {
            if is_host_root_path(source) {
                push(
                    HostAccess::HostRootMounts,
                    format!("volume '{name}' mounts the host path {source}"),
                );
            }
        }
        // The local driver's bind option is a host bind mount by another name.
        let opts = &volume["dockerVolumeConfiguration"]["driverOpts"];
        if let (Some(o), Some(device)) = (opts["o"].as_str(), opts["device"].as_str()) {
            if o.split(',')
                .any(|x| x.trim() == "bind" || x.trim() == "rbind")
                && is_host_root_path(device)
            {
                push(
                    HostAccess::HostRootMounts,
                    format!("volume '{name}' binds the host path {device}"),
                );
            }
        }
    }
    for container in document["containerDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = container["name"].as_str().unwrap_or_default();
        if container["privileged"].as_bool() == Some(true) {
            push(
                HostAccess::Privileged,
                format!("container '{name}' is privileged"),
            );
        }
        let added = &container["linuxParameters"]["capabilities"]["add"];
        if added.as_array().is_some_and(|a| !a.is_empty()) {
            push(
                HostAccess::AddedCapabilities,
                format!("container '{name}' adds kernel capabilities"),
            );
        }
    }
    out
}

/// The kinds of host-level access a task definition document asks for.
pub fn required(document: &Value) -> BTreeSet<HostAccess> {
    uses(document).into_iter().map(|u| u.access).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn root_paths() {
        for p in [
            "/",
            "//",
            "/.",
            "/var/..",
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run//docker.sock/",
            "/var/run",
            "/run",
            "/var",
            "/srv/../run/./docker.sock",
        ] {
            assert!(is_host_root_path(p), "{p}");
        }
        for p in [
            "/srv",
            "/var/lib/data",
            "/runner",
            "/var/run/docker.sockx",
            "/tmp",
        ] {
            assert!(!is_host_root_path(p), "{p}");
        }
    }

    #[test]
    fn classifies_a_document() {
        let doc = json!({
            "networkMode": "host",
            "pidMode": "task",
            "ipcMode": "host",
            "volumes": [
                {"name": "root", "host": {"sourcePath": "/"}},
                {"name": "data", "host": {"sourcePath": "/srv/data"}},
                {"name": "sneaky", "dockerVolumeConfiguration": {"driver": "local",
                    "driverOpts": {"type": "none", "o": "bind", "device": "/var/run"}}}
            ],
            "containerDefinitions": [
                {"name": "a", "privileged": true},
                {"name": "b", "privileged": false,
                 "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"], "drop": []}}},
                {"name": "c", "linuxParameters": {"capabilities": {"add": [], "drop": ["ALL"]}}}
            ]
        });
        let whats: Vec<String> = uses(&doc).into_iter().map(|u| u.what).collect();
        assert_eq!(
            whats,
            [
                "networkMode is host",
                "ipcMode is host",
                "volume 'root' mounts the host path /",
                "volume 'sneaky' binds the host path /var/run",
                "container 'a' is privileged",
                "container 'b' adds kernel capabilities",
            ]
        );
        assert_eq!(required(&doc).len(), 4);
        let plain = json!({"networkMode": "bridge", "containerDefinitions": [{"name": "x"}]});
        assert!(required(&plain).is_empty());
        assert!(required(&Value::Null).is_empty());
    }
}
