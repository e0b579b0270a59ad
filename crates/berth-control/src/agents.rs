//! The agent channel: a berth agent registers its host and receives a credential for the
//! instance; with it, it long-polls for its assignments (which doubles as its heartbeat:
//! each poll renews the instance's session lease) and reports on its own tasks only.
//!
//! A poll waits on the store's watch of that instance's assignment prefix alone, so a
//! commit elsewhere in the cluster wakes no other agent.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::ids::{ClusterName, InstanceId, TaskId};
use berth_core::records::{
    AgentBinding, InstanceRecord, TaskDefinitionRecord, TaskRecord, TaskReport,
};
use berth_core::Error;
use berth_store::{KeyRange, LeaseId, ReadExt, ReadView, StoreError, Txn, WatchStream};
use futures_util::future::select_all;
use futures_util::FutureExt;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::instances::{InstanceView, RegisterInstance};
use crate::join_tokens::{self, JoinTokenSecret};
use crate::{clusters, keys, store_failure, task_definitions::TaskDefinitions, Ctx};

/// A berth agent's registration of its host in one cluster.
#[derive(Debug, Clone)]
pub struct AgentRegistration {
    pub instance: RegisterInstance,
    pub agent_id: String,
    /// The credential from an earlier registration, to re-register the same instance.
    pub credential: Option<String>,
    /// Admits a new instance (needed unless re-registering with the instance's credential).
    pub join_token: Option<JoinTokenSecret>,
    pub follows_all_clusters: bool,
}

/// One instance an agent speaks for, with its credential.
#[derive(Debug, Clone)]
pub struct PolledInstance {
    pub cluster: ClusterName,
    pub id: InstanceId,
    pub credential: String,
}

#[derive(Debug, Clone)]
pub struct Poll {
    pub instances: Vec<PolledInstance>,
    pub follow_all_clusters: bool,
    pub known_digest: Option<String>,
    pub wait: Duration,
}

/// A task an agent must run (or stop), with its definition.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub task: TaskRecord,
    pub definition: Arc<TaskDefinitionRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct PollAnswer {
    pub digest: String,
    pub tasks: Vec<Assigned>,
    /// Which polled instances are still registered; the agent forgets the others.
    pub active_instances: Vec<(ClusterName, InstanceId)>,
    /// With `follow_all_clusters`: every ACTIVE cluster.
    pub clusters: Vec<ClusterName>,
}

/// Whether a task some container on a host claims to belong to is still live here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Live,
    Orphaned,
}

pub struct Agents {
    ctx: Arc<Ctx>,
    /// Session lease per instance (connection key → lease) held by this server.
    sessions: Mutex<HashMap<String, LeaseId>>,
}

pub fn credential_hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

fn new_credential() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Fails unless `credential` is the instance's agent credential.
fn check_credential(record: &InstanceRecord, credential: &str) -> Result<(), Error> {
    match &record.agent {
        Some(binding) if binding.credential_sha256 == credential_hash(credential) => Ok(()),
        _ => Err(Error::new(
            berth_core::ErrorKind::AccessDenied,
            "The agent credential is not valid for this container instance.",
        )),
    }
}

impl Agents {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Registers the agent's host; returns the instance and the credential to use from now on.
    pub async fn register(
        &self,
        instances: &crate::instances::Instances,
        reg: AgentRegistration,
    ) -> Result<(InstanceView, String), Error> {
        let ctx = &self.ctx;
        let mut request = reg.instance.clone();
        // Re-registration keeps the instance only with its own credential; a registered
        // instance named without it is refused (never rewritten, never silently replaced).
        // Anything else is a new instance and needs a join token for the cluster.
        let current = match &request.existing {
            Some(id) => instances
                .get(&request.cluster, id)
                .await?
                .filter(InstanceRecord::is_registered),
            None => None,
        };
        let (credential, existing) = match (current, &reg.credential) {
            (Some(record), Some(credential)) => {
                check_credential(&record, credential)?;
                (credential.clone(), Some(record.id))
            }
            (Some(record), None) => {
                return Err(Error::new(
                    berth_core::ErrorKind::AccessDenied,
                    format!(
                        "Container instance {} is registered; only its agent, with its credential, can re-register it.",
                        record.id
                    ),
                ))
            }
            (None, _) => {
                let token =
                    join_tokens::admit(ctx, reg.join_token.as_ref(), &request.cluster).await?;
                tracing::info!(cluster = %request.cluster, %token, agent = %reg.agent_id,
                    "join token admitted a new container instance");
                (new_credential(), None)
            }
        };
        request.existing = existing;
        // The session starts with the registration, in the same commit.
        let lease = ctx
            .store
            .grant_lease(ctx.config.agent_timeout)
            .await
            .map_err(store_failure)?;
        request.session = Some(lease);
        request.agent = Some(AgentBinding {
            agent_id: reg.agent_id.clone(),
            credential_sha256: credential_hash(&credential),
            follows_all_clusters: reg.follows_all_clusters,
        });
        let view = instances.register(request).await?;
        self.sessions.lock().expect("sessions").insert(
            keys::connection(&view.record.cluster, &view.record.id),
            lease,
        );
        Ok((view, credential))
    }

    /// Keeps (or opens) the instance's session: a leased key that exists while the agent
    /// polls. Renewals are in memory; only opening a session writes.
    async fn ensure_session(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.store;
        let key = keys::connection(cluster, id);
        let held = self.sessions.lock().expect("sessions").get(&key).copied();
        if let Some(lease) = held {
            match store.keep_alive(lease).await {
                Ok(_) => {
                    if let Some(kv) = store.get(&key).await? {
                        if kv.lease == Some(lease) {
                            return Ok(());
                        }
                    }
                }
                Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let lease = store.grant_lease(self.ctx.config.agent_timeout).await?;
        // Only while the instance is registered: a deregistered instance gets no session.
        let instance_key = keys::instance(cluster, id);
        let Some((record, rev)) = store.get_json::<InstanceRecord>(&instance_key).await? else {
            return Ok(());
        };
        if !record.is_registered() {
            return Ok(());
        }
        let txn = Txn::new()
            .require_revision(&instance_key, rev)
            .put_with_lease(&key, &"agent", lease);
        match store.commit(txn).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        self.sessions.lock().expect("sessions").insert(key, lease);
        Ok(())
    }

    /// The instances of `poll` whose credentials check out and that are registered; an
    /// unknown instance or a wrong credential fails the whole poll and leaves no trace.
    async fn verified<V: ReadView + ?Sized>(
        view: &V,
        poll: &Poll,
    ) -> Result<Vec<(ClusterName, InstanceId)>, Error> {
        let mut active = Vec::new();
        for p in &poll.instances {
            let record = view
                .get_json::<InstanceRecord>(&keys::instance(&p.cluster, &p.id))
                .await
                .map_err(store_failure)?;
            match record {
                Some((r, _)) => {
                    check_credential(&r, &p.credential)?;
                    if r.is_registered() {
                        active.push((p.cluster.clone(), p.id.clone()));
                    }
                }
                // A deleted cluster takes its instances with it; tell the agent to forget it.
                None if clusters::active(view, &p.cluster).await.is_err() => {}
                None => {
                    return Err(Error::invalid(format!(
                        "Container instance {} not found in cluster {}.",
                        p.id, p.cluster
                    )))
                }
            }
        }
        Ok(active)
    }

    async fn answer(
        &self,
        definitions: &TaskDefinitions,
        poll: &Poll,
    ) -> Result<(PollAnswer, berth_store::Revision), Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let view = snapshot.as_ref();
        let revision = view.read_revision().await.map_err(store_failure)?;
        let active = Self::verified(view, poll).await?;
        let mut answer = PollAnswer::default();
        let mut digest_input: Vec<String> = Vec::new();
        for (cluster, id) in &active {
            digest_input.push(format!("instance {cluster}/{id}"));
            let page = view
                .range(KeyRange::prefix(keys::assignments_of(cluster, id)))
                .await
                .map_err(store_failure)?;
            for kv in page.kvs {
                let Some(task_id) = kv.key.rsplit('/').next().and_then(|t| TaskId::new(t).ok())
                else {
                    continue;
                };
                let Some((task, _)) = view
                    .get_json::<TaskRecord>(&keys::task(cluster, &task_id))
                    .await
                    .map_err(store_failure)?
                else {
                    continue;
                };
                let definition = definitions.cached(&task.desired.task_definition).await?;
                digest_input.push(format!("task {task_id} {}", task.desired.status));
                answer.tasks.push(Assigned { task, definition });
            }
        }
        if poll.follow_all_clusters {
            answer.clusters = view
                .scan_json::<berth_core::records::ClusterRecord>(keys::CLUSTERS)
                .await
                .map_err(store_failure)?
                .into_iter()
                .filter(|(_, c, _)| c.is_active())
                .map(|(_, c, _)| c.name)
                .collect();
            for c in &answer.clusters {
                digest_input.push(format!("cluster {c}"));
            }
        }
        answer.active_instances = active;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        digest_input.hash(&mut hasher);
        answer.digest = format!("{:016x}", hasher.finish());
        Ok((answer, revision))
    }

    /// Long-poll: answers when the assignment differs from `known_digest`, or at the deadline.
    /// The wait is capped below the session lease's TTL, since each poll renews it.
    pub async fn poll(
        &self,
        definitions: &TaskDefinitions,
        poll: Poll,
    ) -> Result<PollAnswer, Error> {
        let cap = self
            .ctx
            .config
            .max_poll_wait
            .min(self.ctx.config.agent_timeout / 3);
        let deadline = tokio::time::Instant::now() + poll.wait.min(cap);
        let (mut current, mut revision) = self.answer(definitions, &poll).await?;
        for (cluster, id) in &current.active_instances {
            self.ensure_session(cluster, id)
                .await
                .map_err(store_failure)?;
        }
        loop {
            if poll.known_digest.as_deref() != Some(current.digest.as_str()) {
                return Ok(current);
            }
            let mut prefixes: Vec<String> = current
                .active_instances
                .iter()
                .flat_map(|(c, i)| [keys::assignments_of(c, i), keys::instance(c, i)])
                .collect();
            if poll.follow_all_clusters {
                prefixes.push(keys::CLUSTERS.to_string());
            }
            // Instances that went away (deleted clusters) are part of the answer too.
            if current.active_instances.len() < poll.instances.len() {
                return Ok(current);
            }
            let mut watches: Vec<WatchStream> = Vec::with_capacity(prefixes.len());
            for p in BTreeSet::<String>::from_iter(prefixes) {
                match self.ctx.store.watch(&p, revision + 1).await {
                    Ok(w) => watches.push(w),
                    // History gone (restart): just re-read.
                    Err(StoreError::Compacted { .. }) => {}
                    Err(e) => return Err(store_failure(e)),
                }
            }
            if watches.is_empty() {
                tokio::time::sleep_until(deadline).await;
                return Ok(current);
            }
            let woke = {
                let next = select_all(watches.iter_mut().map(|w| w.next().boxed()));
                tokio::time::timeout_at(deadline, next).await.is_ok()
            };
            if !woke {
                return Ok(current);
            }
            (current, revision) = self.answer(definitions, &poll).await?;
        }
    }

    /// Applies a report from the agent of `instance` about one of its own tasks.
    pub async fn report(
        &self,
        tasks: &crate::tasks::Tasks,
        cluster: &ClusterName,
        instance: &InstanceId,
        credential: &str,
        task: &TaskId,
        report: &TaskReport,
    ) -> Result<TaskRecord, Error> {
        let store = self.ctx.store.as_ref();
        let record = store
            .get_json::<InstanceRecord>(&keys::instance(cluster, instance))
            .await
            .map_err(store_failure)?
            .map(|(r, _)| r)
            .ok_or_else(|| Error::invalid("Container instance not found."))?;
        check_credential(&record, credential)?;
        let owned = store
            .get_json::<TaskRecord>(&keys::task(cluster, task))
            .await
            .map_err(store_failure)?
            .is_some_and(|(t, _)| t.desired.instance == *instance);
        if !owned {
            return Err(Error::new(
                berth_core::ErrorKind::AccessDenied,
                format!("Task {task} is not assigned to container instance {instance}."),
            ));
        }
        tasks.apply_report(cluster, task, report).await
    }

    /// The task, if it is live and assigned to `instance` whose agent `credential` checks
    /// out: what an agent may ask about its task (secrets, role credentials) is gated here.
    pub async fn live_task_of(
        &self,
        definitions: &TaskDefinitions,
        cluster: &ClusterName,
        instance: &InstanceId,
        credential: &str,
        task: &TaskId,
    ) -> Result<(TaskRecord, Arc<TaskDefinitionRecord>), Error> {
        self.authenticate(cluster, instance, credential).await?;
        let record = self
            .ctx
            .store
            .get_json::<TaskRecord>(&keys::task(cluster, task))
            .await
            .map_err(store_failure)?
            .map(|(t, _)| t)
            .filter(|t| t.desired.instance == *instance && t.is_live())
            .ok_or_else(|| {
                Error::new(
                    berth_core::ErrorKind::AccessDenied,
                    format!("Task {task} is not a live task of container instance {instance}."),
                )
            })?;
        let definition = definitions.cached(&record.desired.task_definition).await?;
        Ok((record, definition))
    }

    /// Checks that `credential` is the agent credential of a registered instance.
    pub async fn authenticate(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
        credential: &str,
    ) -> Result<(), Error> {
        let record = self
            .ctx
            .store
            .get_json::<InstanceRecord>(&keys::instance(cluster, id))
            .await
            .map_err(store_failure)?
            .map(|(r, _)| r)
            .ok_or_else(|| Error::invalid("Container instance not found."))?;
        check_credential(&record, credential)
    }

    /// For containers an agent found on its host that belong to no task it runs: is the
    /// task they claim still live anywhere?
    pub async fn ownership(
        &self,
        tasks: &[(ClusterName, TaskId)],
    ) -> Result<Vec<Ownership>, Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let mut out = Vec::with_capacity(tasks.len());
        for (cluster, id) in tasks {
            let live = snapshot
                .get_json::<TaskRecord>(&keys::task(cluster, id))
                .await
                .map_err(store_failure)?
                .is_some_and(|(t, _)| t.is_live());
            out.push(if live {
                Ownership::Live
            } else {
                Ownership::Orphaned
            });
        }
        Ok(out)
    }
}
