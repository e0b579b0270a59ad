//! The agent-facing side: agents long-poll for the tasks assigned to their instances.
//! The answer comes as soon as the assignment differs from what the agent already has
//! (a store commit wakes every waiting poll), so agents never busy-poll.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use berth_model::{
    ApiError, AssignedTask, ContainerInstance, PollRequest, PollResponse, TaskDefinition,
};
use berth_store::StoreExt;

use crate::instances::INACTIVE;
use crate::tasks::TaskRecord;
use crate::{keys, ControlPlane};

impl ControlPlane {
    /// What the agent's instances must run now, with a digest of it.
    fn assignments(&self, req: &PollRequest) -> Result<PollResponse, ApiError> {
        let err = |e: berth_store::StoreError| ApiError::server(e.to_string());
        let mut out = PollResponse::default();
        let mut digest_input: Vec<String> = Vec::new();
        for polled in &req.instances {
            let cluster = crate::cluster_name(Some(&polled.cluster))?;
            let instance_id = Self::instance_id(&cluster, &polled.container_instance_arn)?;
            let active = self
                .store
                .get_json::<ContainerInstance>(&keys::instance(&cluster, &instance_id))
                .map_err(err)?
                .is_some_and(|(i, _)| i.status.as_deref() != Some(INACTIVE));
            if !active {
                continue;
            }
            out.active_instances
                .push(polled.container_instance_arn.clone());
            digest_input.push(format!("instance {}", polled.container_instance_arn));
            for (key, _) in self
                .store
                .scan_prefix(&keys::assignments_of(&cluster, &instance_id))
                .map_err(err)?
            {
                let task_id = key.rsplit('/').next().unwrap_or_default();
                let Some((record, _)) = self
                    .store
                    .get_json::<TaskRecord>(&keys::task(&cluster, task_id))
                    .map_err(err)?
                else {
                    continue;
                };
                let task_definition = self
                    .find_task_definition(
                        record
                            .task
                            .task_definition_arn
                            .as_deref()
                            .unwrap_or_default(),
                    )
                    .map_err(ApiError::from)?;
                digest_input.push(format!(
                    "task {} {}",
                    record.task.task_arn.as_deref().unwrap_or_default(),
                    record.task.desired_status.as_deref().unwrap_or_default()
                ));
                out.tasks.push(AssignedTask {
                    task: record.task,
                    task_definition: TaskDefinition { ..task_definition },
                });
            }
        }
        if req.follow_all_clusters {
            out.clusters = self.active_cluster_names()?;
            for c in &out.clusters {
                digest_input.push(format!("cluster {c}"));
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        digest_input.hash(&mut hasher);
        out.digest = format!("{:016x}", hasher.finish());
        Ok(out)
    }

    /// Long-poll: answers when the assignment differs from `known_digest`, or at the deadline.
    /// The wait is capped well below the agent timeout, since each poll is also a heartbeat.
    pub async fn poll_assignments(
        self: Arc<Self>,
        req: PollRequest,
    ) -> Result<PollResponse, ApiError> {
        let cap = self.config.max_poll_wait.min(self.config.agent_timeout / 3);
        let wait = Duration::from_secs(req.wait_seconds.unwrap_or(20)).min(cap);
        let deadline = tokio::time::Instant::now() + wait;
        let req = Arc::new(req);
        let mut changes = self.store.watch();
        self.off_reactor(&req, Self::heartbeat_all).await?;
        loop {
            // Mark what we have seen before reading, so a commit after the read still wakes us.
            changes.borrow_and_update();
            let current = self.off_reactor(&req, Self::assignments).await?;
            if req.known_digest.as_deref() != Some(current.digest.as_str()) {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(current),
            }
        }
    }

    fn heartbeat_all(&self, req: &PollRequest) -> Result<(), ApiError> {
        for polled in &req.instances {
            let cluster = crate::cluster_name(Some(&polled.cluster))?;
            self.heartbeat(&cluster, &polled.container_instance_arn)?;
        }
        Ok(())
    }

    /// Store I/O is synchronous: run it on a blocking thread, not the reactor.
    async fn off_reactor<T: Send + 'static>(
        self: &Arc<Self>,
        req: &Arc<PollRequest>,
        f: fn(&ControlPlane, &PollRequest) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let this = Arc::clone(self);
        let req = Arc::clone(req);
        tokio::task::spawn_blocking(move || f(&this, &req))
            .await
            .unwrap_or_else(|e| Err(ApiError::server(e.to_string())))
    }
}
