//! The agent's own check of host-level access (defense in depth): the scheduler places a
//! task that asks for it only on an instance that advertises the matching attribute, but a
//! task that reaches this agent anyway (an attribute set by other means, a stale plan, a
//! symbolic link on this host that points a harmless-looking path at `/`) is refused here
//! before anything is pulled or created.

use std::collections::BTreeSet;
use std::path::Path;

use berth_core::host_access::{self, HostAccess, HostAccessUse};
use serde_json::Value;

/// Why this host refuses the task, or `None` when it allows everything the task asks for.
pub fn refusal(document: &Value, allowed: &BTreeSet<HostAccess>) -> Option<String> {
    let mut uses = host_access::uses(document);
    uses.extend(resolved_root_mounts(document));
    let refused: Vec<&HostAccessUse> = uses
        .iter()
        .filter(|u| !allowed.contains(&u.access))
        .collect();
    if refused.is_empty() {
        return None;
    }
    let mut flags: Vec<&str> = refused.iter().map(|u| u.access.agent_flag()).collect();
    flags.sort_unstable();
    flags.dedup();
    let whats: Vec<&str> = refused.iter().map(|u| u.what.as_str()).collect();
    Some(format!(
        "this container instance does not allow the host-level access the task asks for ({}); \
         start its agent with {} to opt in",
        whats.join("; "),
        flags.join(" ")
    ))
}

/// Host volumes whose path, with symbolic links on this host followed, is `/` or the
/// Docker socket (the control plane classified the path as written).
fn resolved_root_mounts(document: &Value) -> Vec<HostAccessUse> {
    let mut out = Vec::new();
    for volume in document["volumes"].as_array().into_iter().flatten() {
        let Some(source) = volume["host"]["sourcePath"].as_str() else {
            continue;
        };
        if host_access::is_host_root_path(source) {
            continue; // already classified as written
        }
        let Ok(real) = std::fs::canonicalize(Path::new(source)) else {
            continue; // not there yet: Docker creates it as a plain directory
        };
        if host_access::is_host_root_path(&real.to_string_lossy()) {
            out.push(HostAccessUse {
                access: HostAccess::HostRootMounts,
                what: format!(
                    "volume '{}' mounts the host path {source}, which resolves to {}",
                    volume["name"].as_str().unwrap_or_default(),
                    real.display()
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_what_is_not_allowed_and_names_the_flag() {
        let doc = json!({
            "pidMode": "host",
            "containerDefinitions": [{"name": "a", "privileged": true}]
        });
        let reason = refusal(&doc, &BTreeSet::new()).unwrap();
        assert!(reason.contains("container 'a' is privileged"), "{reason}");
        assert!(reason.contains("pidMode is host"), "{reason}");
        assert!(
            reason.contains("--allow-host-namespaces --allow-privileged"),
            "{reason}"
        );
        let only_privileged = BTreeSet::from([HostAccess::Privileged]);
        let reason = refusal(&doc, &only_privileged).unwrap();
        assert!(!reason.contains("privileged"), "{reason}");
        let both = BTreeSet::from([HostAccess::Privileged, HostAccess::HostNamespaces]);
        assert_eq!(refusal(&doc, &both), None);
        assert_eq!(
            refusal(
                &json!({"containerDefinitions": [{"name": "x"}]}),
                &BTreeSet::new()
            ),
            None
        );
    }

    #[test]
    fn follows_symbolic_links_on_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let doc = json!({"volumes": [{"name": "v", "host": {"sourcePath": link}}]});
        let reason = refusal(&doc, &BTreeSet::new()).unwrap();
        assert!(reason.contains("which resolves to /"), "{reason}");
        assert_eq!(
            refusal(&doc, &BTreeSet::from([HostAccess::HostRootMounts])),
            None
        );
    }
}
