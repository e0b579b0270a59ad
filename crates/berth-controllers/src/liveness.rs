//! Agent liveness: an instance's agent holds a session (a leased key) while it polls. When
//! the session ends, the instance is marked disconnected; when it has been gone
//! `agent_lost_after`, its tasks are declared STOPPED so services can replace them.

use std::sync::Arc;

use berth_control::keys;
use berth_control::ControlPlane;
use berth_core::ids::{ClusterName, InstanceId};
use berth_store::Event;

use crate::{Action, ObjectKey, ReconcileError, Reconciler};

pub struct Liveness {
    control: Arc<ControlPlane>,
}

impl Liveness {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        Self { control }
    }
}

/// `<cluster>/<instance>` from `conn/<cluster>/<instance>` or `ci/<cluster>/<instance>`.
fn object_of(key: &str) -> Option<ObjectKey> {
    let rest = key
        .strip_prefix(keys::CONNECTIONS)
        .or_else(|| key.strip_prefix(keys::INSTANCES))?;
    let (cluster, id) = rest.split_once('/')?;
    (!cluster.is_empty() && !id.is_empty() && !id.contains('/'))
        .then(|| ObjectKey::new(format!("{cluster}/{id}")))
}

fn parse(key: &ObjectKey) -> Result<(ClusterName, InstanceId), ReconcileError> {
    let (cluster, id) = key
        .as_str()
        .split_once('/')
        .ok_or_else(|| ReconcileError::msg(format!("bad liveness key {key}")))?;
    Ok((ClusterName::new(cluster)?, InstanceId::new(id)?))
}

#[async_trait::async_trait]
impl Reconciler for Liveness {
    fn name(&self) -> &'static str {
        "agent-liveness"
    }

    fn watches(&self) -> Vec<String> {
        vec![keys::CONNECTIONS.to_string(), keys::INSTANCES.to_string()]
    }

    fn map_event(&self, event: &Event) -> Vec<ObjectKey> {
        object_of(event.key()).into_iter().collect()
    }

    async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError> {
        Ok(self
            .control
            .instances
            .all_registered()
            .await?
            .into_iter()
            .map(|(c, i)| ObjectKey::new(format!("{c}/{i}")))
            .collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let (cluster, id) = parse(key)?;
        let next = self
            .control
            .instances
            .reconcile_liveness(&cluster, &id, &self.control.tasks)
            .await?;
        Ok(match next {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_instances() {
        assert_eq!(object_of("conn/c/abc"), Some(ObjectKey::new("c/abc")));
        assert_eq!(object_of("ci/c/abc"), Some(ObjectKey::new("c/abc")));
        assert_eq!(object_of("cu/c/abc"), None);
        assert_eq!(object_of("ci/c/"), None);
    }
}
