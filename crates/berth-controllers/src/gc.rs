//! Forgets what ECS forgets: STOPPED tasks an hour (the retention) after they stopped, and
//! RunTask client tokens as old. One object per cluster; requeued on a timer.

use std::sync::Arc;
use std::time::Duration;

use berth_control::keys;
use berth_control::ControlPlane;
use berth_core::ids::ClusterName;
use berth_store::Event;

use crate::{Action, ObjectKey, ReconcileError, Reconciler};

/// Deletions per reconcile, so one big cluster does not hold the controller for long.
const BATCH: usize = 1000;

pub struct StoppedTaskGc {
    control: Arc<ControlPlane>,
    retention: Duration,
    interval: Duration,
}

impl StoppedTaskGc {
    pub fn new(control: Arc<ControlPlane>, retention: Duration) -> Self {
        Self {
            control,
            retention,
            interval: (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for StoppedTaskGc {
    fn name(&self) -> &'static str {
        "stopped-task-gc"
    }

    fn watches(&self) -> Vec<String> {
        vec![keys::CLUSTERS.to_string()]
    }

    fn map_event(&self, event: &Event) -> Vec<ObjectKey> {
        event
            .key()
            .strip_prefix(keys::CLUSTERS)
            .map(ObjectKey::from)
            .into_iter()
            .collect()
    }

    async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError> {
        Ok(self
            .control
            .clusters
            .active_names()
            .await?
            .into_iter()
            .map(|c| ObjectKey::new(c.to_string()))
            .collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let cluster = ClusterName::new(key.as_str())?;
        if self.control.clusters.get_active(&cluster).await.is_err() {
            return Ok(Action::await_change());
        }
        let now = self.control.ctx.now();
        let cutoff = berth_core::Timestamp::from_millis(
            now.millis() - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX),
        );
        let removed = self
            .control
            .tasks
            .forget_stopped(&cluster, cutoff, BATCH)
            .await?;
        let tokens = self
            .control
            .tasks
            .forget_client_tokens(&cluster, cutoff)
            .await?;
        if removed > 0 || tokens > 0 {
            tracing::info!(%cluster, removed, tokens, "forgot old STOPPED tasks and client tokens");
        }
        // A full batch means more may be waiting.
        Ok(Action::requeue(if removed == BATCH {
            Duration::ZERO
        } else {
            self.interval
        }))
    }
}
