//! What the agent remembers across restarts: its host identity and, per cluster, the
//! container instance it registered and that instance's credential.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_agent_proto::InstanceCredential;
use serde::{Deserialize, Serialize};

const FILE: &str = "identity.json";
/// The agent state of berth versions before the agent channel had credentials: only its
/// agent id is still useful (its containers carry it).
const LEGACY_FILE: &str = "agent-state.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedInstance {
    pub container_instance_arn: String,
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub agent_id: String,
    /// The control plane the instances are registered with.
    #[serde(default)]
    pub control_plane_id: Option<String>,
    /// Cluster name → its instance.
    #[serde(default)]
    pub instances: BTreeMap<String, SavedInstance>,
}

#[derive(Deserialize)]
struct Legacy {
    agent_id: String,
}

impl Identity {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Loads the saved identity, or makes (and saves) a new one.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading the agent identity {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        }
        let legacy = std::fs::read(dir.join(LEGACY_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Legacy>(&b).ok());
        let identity = Self {
            agent_id: legacy.map_or_else(new_agent_id, |l| l.agent_id),
            control_plane_id: None,
            instances: BTreeMap::new(),
        };
        identity.save(dir)?;
        Ok(identity)
    }

    /// Write-then-rename so a crash never leaves a torn file; owner-only, since it holds
    /// credentials.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                options.mode(0o600);
                // A leftover temp file keeps its old mode through `open`.
                let file = options.open(&tmp)?;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                write_all(file, self)?;
            }
            #[cfg(not(unix))]
            write_all(options.open(&tmp)?, self)?;
            std::fs::rename(&tmp, Self::path(dir))
        };
        write().with_context(|| format!("saving the agent identity in {}", dir.display()))
    }

    pub fn credential(&self, cluster: &str) -> Option<InstanceCredential> {
        self.instances.get(cluster).map(|i| InstanceCredential {
            cluster: cluster.to_string(),
            container_instance_arn: i.container_instance_arn.clone(),
            credential: i.credential.clone(),
        })
    }

    pub fn credentials(&self) -> Vec<InstanceCredential> {
        self.instances
            .keys()
            .filter_map(|c| self.credential(c))
            .collect()
    }

    /// The instance whose ARN this is.
    pub fn credential_for_instance(&self, arn: &str) -> Option<InstanceCredential> {
        self.credentials()
            .into_iter()
            .find(|c| c.container_instance_arn == arn)
    }
}

fn write_all(mut file: std::fs::File, identity: &Identity) -> std::io::Result<()> {
    file.write_all(&serde_json::to_vec_pretty(identity)?)?;
    file.sync_all()
}

/// An EC2-style instance id (`i-` and 17 hex digits), unique per host.
fn new_agent_id() -> String {
    format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = Identity::load_or_create(dir.path()).unwrap();
        assert!(id.agent_id.starts_with("i-") && id.agent_id.len() == 19);
        id.instances.insert(
            "default".into(),
            SavedInstance {
                container_instance_arn: "arn:ci".into(),
                credential: "secret".into(),
            },
        );
        id.save(dir.path()).unwrap();
        assert_eq!(Identity::load_or_create(dir.path()).unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Identity::path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn legacy_state_keeps_the_agent_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEGACY_FILE),
            r#"{"agent_id":"i-0123456789abcdef0","instances":{"default":"arn:old"}}"#,
        )
        .unwrap();
        let id = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(id.agent_id, "i-0123456789abcdef0");
        assert!(id.instances.is_empty());
    }
}
