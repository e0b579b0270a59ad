//! The service scheduler: one reconcile per service, run on every change to the service,
//! its tasks, or the instances of its cluster, and on a timer while something is pending.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use berth_control::keys;
use berth_control::ControlPlane;
use berth_core::ids::{ClusterName, ServiceName};
use berth_core::records::TaskRecord;
use berth_core::ErrorKind;
use berth_store::Event;

use crate::{Action, ObjectKey, ReconcileError, Reconciler};

pub struct ServiceScheduler {
    control: Arc<ControlPlane>,
    /// Services per cluster, so an instance change wakes its cluster's services.
    by_cluster: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl ServiceScheduler {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        Self {
            control,
            by_cluster: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, cluster: &str, service: &str) {
        self.by_cluster
            .lock()
            .expect("services index")
            .entry(cluster.to_string())
            .or_default()
            .insert(service.to_string());
    }

    fn of_cluster(&self, cluster: &str) -> Vec<ObjectKey> {
        self.by_cluster
            .lock()
            .expect("services index")
            .get(cluster)
            .into_iter()
            .flatten()
            .map(|s| ObjectKey::new(format!("{cluster}/{s}")))
            .collect()
    }
}

fn split(key: &str) -> Option<(&str, &str)> {
    let (cluster, rest) = key.split_once('/')?;
    let id = rest.split('/').next()?;
    (!cluster.is_empty() && !id.is_empty()).then_some((cluster, id))
}

#[async_trait::async_trait]
impl Reconciler for ServiceScheduler {
    fn name(&self) -> &'static str {
        "service-scheduler"
    }

    fn watches(&self) -> Vec<String> {
        vec![
            keys::SERVICES.to_string(),
            keys::TASKS.to_string(),
            keys::INSTANCES.to_string(),
            keys::CONNECTIONS.to_string(),
        ]
    }

    fn map_event(&self, event: &Event) -> Vec<ObjectKey> {
        let key = event.key();
        if let Some(rest) = key.strip_prefix(keys::SERVICES) {
            return split(rest)
                .map(|(c, s)| {
                    self.remember(c, s);
                    ObjectKey::new(format!("{c}/{s}"))
                })
                .into_iter()
                .collect();
        }
        if key.starts_with(keys::TASKS) {
            let Event::Put(kv) = event else {
                return vec![];
            };
            let Ok(task) = kv.decode::<TaskRecord>() else {
                return vec![];
            };
            return task
                .desired
                .group
                .strip_prefix("service:")
                .map(|s| ObjectKey::new(format!("{}/{s}", task.cluster)))
                .into_iter()
                .collect();
        }
        let rest = key
            .strip_prefix(keys::INSTANCES)
            .or_else(|| key.strip_prefix(keys::CONNECTIONS));
        match rest.and_then(split) {
            Some((cluster, _)) => self.of_cluster(cluster),
            None => vec![],
        }
    }

    async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError> {
        let all = self.control.services.all().await?;
        Ok(all
            .into_iter()
            .map(|(c, s)| {
                self.remember(c.as_str(), s.as_str());
                ObjectKey::new(format!("{c}/{s}"))
            })
            .collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let (cluster, service) = split(key.as_str())
            .ok_or_else(|| ReconcileError::msg(format!("bad service key {key}")))?;
        let (cluster, service) = (ClusterName::new(cluster)?, ServiceName::new(service)?);
        self.remember(cluster.as_str(), service.as_str());
        match self.control.services.reconcile(&cluster, &service).await {
            Ok(Some(after)) => Ok(Action::requeue(after)),
            Ok(None) => Ok(Action::await_change()),
            Err(e) if e.kind == ErrorKind::Conflict => Err(ReconcileError::conflict(e)),
            Err(e) => Err(e.into()),
        }
    }
}
