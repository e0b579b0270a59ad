//! Containers left behind by a lost agent identity (a wiped data dir, a host re-imaged
//! with its containers kept): they carry this control plane's label but another agent's
//! id, so no agent will ever stop them. The janitor asks the control plane which of their
//! tasks are no longer live and removes those containers, but only once two checks at
//! least the grace period apart agree, and never containers of live tasks (another agent
//! on the same engine owns them) nor containers without this control plane's label.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::{labels, InstanceCredential, OwnershipRequest};
use berth_runtime::{ContainerRuntime, ContainerStatus};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::channel::Channel;

/// The most task ARNs one ownership question may carry.
const MAX_PER_QUESTION: usize = 1000;
/// SIGTERM to SIGKILL for an orphan (its task definition is unknown).
const ORPHAN_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the janitor asks on behalf of: set once the agent has registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asker {
    pub control_plane_id: String,
    pub instance: InstanceCredential,
}

pub(crate) struct Janitor {
    runtime: Arc<dyn ContainerRuntime>,
    channel: Channel,
    agent_id: String,
    grace: Duration,
    /// Task ARN → when a check first found it orphaned (and every check since agreed).
    suspects: HashMap<String, Instant>,
}

impl Janitor {
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        channel: Channel,
        agent_id: String,
        grace: Duration,
    ) -> Self {
        Self {
            runtime,
            channel,
            agent_id,
            grace,
            suspects: HashMap::new(),
        }
    }

    /// Checks now and then every `interval`, for as long as the agent runs.
    pub async fn run(mut self, mut asker: watch::Receiver<Option<Asker>>, interval: Duration) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let current = asker.borrow_and_update().clone();
            match current {
                Some(a) => {
                    if let Err(e) = self.check(&a).await {
                        tracing::warn!(error = %e, "checking for orphaned containers failed");
                    }
                }
                None => {
                    if asker.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One check. A failed check leaves the suspects as they were: it is not a check that
    /// disagreed.
    pub async fn check(&mut self, asker: &Asker) -> anyhow::Result<()> {
        let mut foreign: BTreeMap<String, Vec<ContainerStatus>> = BTreeMap::new();
        for c in self
            .runtime
            .list_labelled(labels::CONTROL_PLANE, &asker.control_plane_id)
            .await?
        {
            if c.labels.get(labels::AGENT) == Some(&self.agent_id) {
                continue;
            }
            if let Some(task) = c.labels.get(labels::TASK_ARN).filter(|t| !t.is_empty()) {
                foreign.entry(task.clone()).or_default().push(c);
            }
        }
        let arns: Vec<String> = foreign.keys().cloned().collect();
        let mut orphaned = Vec::new();
        for chunk in arns.chunks(MAX_PER_QUESTION) {
            let answer = self
                .channel
                .ownership(&OwnershipRequest {
                    instance: asker.instance.clone(),
                    task_arns: chunk.to_vec(),
                })
                .await?;
            orphaned.extend(answer.orphaned);
        }
        let now = Instant::now();
        let mut suspects = HashMap::new();
        for arn in orphaned {
            let Some(containers) = foreign.get(&arn) else {
                continue;
            };
            let Some(&since) = self.suspects.get(&arn) else {
                suspects.insert(arn, now);
                continue;
            };
            if now.duration_since(since) < self.grace {
                suspects.insert(arn, since);
                continue;
            }
            for c in containers {
                tracing::warn!(task = %arn, container = %c.name,
                    agent = c.labels.get(labels::AGENT).map_or("", String::as_str),
                    "removing a container of a task that is no longer live, left by another agent identity");
                if let Err(e) = self.runtime.stop(&c.id, ORPHAN_STOP_TIMEOUT).await {
                    tracing::warn!(container = %c.name, error = %e, "stopping orphan failed");
                }
                if let Err(e) = self.runtime.remove(&c.id).await {
                    tracing::warn!(container = %c.name, error = %e, "removing orphan failed");
                    // Try again next time, without waiting out the grace again.
                    suspects.insert(arn.clone(), since);
                }
            }
        }
        self.suspects = suspects;
        Ok(())
    }
}
