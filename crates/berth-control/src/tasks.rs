//! Tasks: the record, its indexes, its agent assignment and its instance's usage, all
//! written together by [`TaskBatch`]; and the task operations (describe, list, stop,
//! state reports, forgetting old STOPPED tasks).

use std::collections::HashMap;
use std::sync::Arc;

use berth_core::arn::ResourceKind;
use berth_core::ids::{ClusterName, Family, InstanceId, TaskId};
use berth_core::records::{Tag, TaskRecord, TaskReport};
use berth_core::resources::InstanceUsage;
use berth_core::status::{DesiredStatus, LaunchType, StopCode};
use berth_core::Error;
use berth_store::{KeyRange, ReadExt, ReadView, Revision, Txn};
use serde::{Deserialize, Serialize};

use crate::keys::{self, TaskIndex};
use crate::paging::{decode_token, encode_token, page_size, Page, PageRequest};
use crate::{clusters, id_in_cluster, store_failure, tags, with_retries, CResult, Ctx};

/// ECS caps a stop reason at 255 characters.
pub const MAX_REASON_CHARS: usize = 255;

/// What an agent's poll sees of one of its tasks: enough to notice a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentMark {
    pub desired: DesiredStatus,
}

/// Resolves a task given by id or ARN within a cluster.
pub fn task_id(cluster: &ClusterName, given: &str) -> Result<TaskId, Error> {
    TaskId::new(id_in_cluster(cluster, given, ResourceKind::Task, "task")?)
}

/// The index entries a task has in its current state.
fn index_entries(task: &TaskRecord) -> Vec<String> {
    let d = &task.desired;
    let mut dims: Vec<(TaskIndex, String)> = vec![
        (TaskIndex::All, String::new()),
        (TaskIndex::Family, d.task_definition.family.to_string()),
        (TaskIndex::Group, d.group.clone()),
        (TaskIndex::Instance, d.instance.to_string()),
        (TaskIndex::LaunchType, d.launch_type.as_str().to_string()),
    ];
    if let Some(by) = &d.started_by {
        dims.push((TaskIndex::StartedBy, by.clone()));
    }
    dims.into_iter()
        .map(|(dim, value)| {
            keys::task_index_entry(
                &task.cluster,
                dim,
                &value,
                d.status,
                task.created_at,
                &task.id,
            )
        })
        .collect()
}

/// A batch of task writes that keeps each task's indexes, assignment and instance usage
/// in step with the record, in one transaction. Usage records are read once from `view`
/// and required unchanged at commit.
pub(crate) struct TaskBatch<'v, V: ReadView + ?Sized> {
    view: &'v V,
    txn: Txn,
    usages: HashMap<(ClusterName, InstanceId), (InstanceUsage, Option<Revision>)>,
}

impl<'v, V: ReadView + ?Sized> TaskBatch<'v, V> {
    pub fn new(view: &'v V, txn: Txn) -> Self {
        Self {
            view,
            txn,
            usages: HashMap::new(),
        }
    }

    async fn usage_mut(
        &mut self,
        cluster: &ClusterName,
        instance: &InstanceId,
    ) -> CResult<&mut InstanceUsage> {
        let key = (cluster.clone(), instance.clone());
        if !self.usages.contains_key(&key) {
            let read = self
                .view
                .get_json::<InstanceUsage>(&keys::usage(cluster, instance))
                .await?;
            let (usage, rev) = match read {
                Some((u, rev)) => (u, Some(rev)),
                None => (InstanceUsage::default(), None),
            };
            self.usages.insert(key.clone(), (usage, rev));
        }
        Ok(&mut self.usages.get_mut(&key).expect("just inserted").0)
    }

    /// A new task: record, indexes, assignment, and its reservation on the instance.
    pub async fn create(&mut self, task: &TaskRecord) -> CResult<()> {
        let key = keys::task(&task.cluster, &task.id);
        let mut txn = std::mem::take(&mut self.txn)
            .require_absent(&key)
            .put_json(&key, task)
            .put_json(
                keys::assignment(&task.cluster, &task.desired.instance, &task.id),
                &AssignmentMark {
                    desired: task.desired.status,
                },
            );
        for entry in index_entries(task) {
            txn = txn.put_raw(entry, Vec::new());
        }
        self.txn = txn;
        self.usage_mut(&task.cluster, &task.desired.instance)
            .await?
            .add(&task.desired.reservation, &task.desired.group);
        Ok(())
    }

    /// A changed task, last read at `rev`.
    pub async fn update(
        &mut self,
        before: &TaskRecord,
        rev: Revision,
        after: &TaskRecord,
    ) -> CResult<()> {
        let key = keys::task(&after.cluster, &after.id);
        let mut txn = std::mem::take(&mut self.txn)
            .require_revision(&key, rev)
            .put_json(&key, after);
        let old_entries = index_entries(before);
        let new_entries = index_entries(after);
        for entry in old_entries.iter().filter(|e| !new_entries.contains(e)) {
            txn = txn.delete(entry.clone());
        }
        for entry in new_entries.into_iter().filter(|e| !old_entries.contains(e)) {
            txn = txn.put_raw(entry, Vec::new());
        }
        let assignment = keys::assignment(&after.cluster, &after.desired.instance, &after.id);
        if after.observed.status.is_terminal() {
            if !before.observed.status.is_terminal() {
                txn = txn.delete(assignment);
            }
        } else if before.desired.status != after.desired.status {
            txn = txn.put_json(
                assignment,
                &AssignmentMark {
                    desired: after.desired.status,
                },
            );
        }
        self.txn = txn;
        let (from, to) = (before.observed.status, after.observed.status);
        if from != to {
            self.usage_mut(&after.cluster, &after.desired.instance)
                .await?
                .transition(&after.desired.reservation, &after.desired.group, from, to);
        }
        Ok(())
    }

    /// The transaction with every usage change, each conditioned on the usage as read.
    pub fn finish(self) -> Txn {
        let mut txn = self.txn;
        for ((cluster, instance), (usage, rev)) in self.usages {
            let key = keys::usage(&cluster, &instance);
            txn = txn.require_unchanged(&key, rev).put_json(&key, &usage);
        }
        txn
    }
}

/// A task with what DescribeTasks adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub record: TaskRecord,
    /// Only when asked for (`include=TAGS`).
    pub tags: Option<Vec<Tag>>,
}

/// ListTasks's filters, parsed.
#[derive(Debug, Clone)]
pub struct ListTasks {
    pub cluster: ClusterName,
    pub instance: Option<InstanceId>,
    pub family: Option<Family>,
    pub started_by: Option<String>,
    /// `service:<name>` for serviceName.
    pub group: Option<String>,
    pub desired: DesiredStatus,
    pub launch_type: Option<LaunchType>,
    pub page: PageRequest,
}

pub struct Tasks {
    ctx: Arc<Ctx>,
}

impl Tasks {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    pub async fn describe(
        &self,
        cluster: &ClusterName,
        ids: &[TaskId],
        include_tags: bool,
    ) -> Result<Vec<Result<TaskView, TaskId>>, Error> {
        with_retries(|| async {
            let snapshot = self.ctx.store.snapshot().await?;
            clusters::active(snapshot.as_ref(), cluster).await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in crate::dedup(ids) {
                let found = snapshot
                    .get_json::<TaskRecord>(&keys::task(cluster, &id))
                    .await?;
                out.push(match found {
                    Some((record, _)) => {
                        let tags = if include_tags {
                            let arn = self.ctx.arns.task(cluster, &id);
                            Some(tags::of(snapshot.as_ref(), &arn).await?)
                        } else {
                            None
                        };
                        Ok(TaskView { record, tags })
                    }
                    None => Err(id),
                });
            }
            Ok(out)
        })
        .await
    }

    /// One page of task ids, read from the most selective index (never a cluster scan
    /// unless no filter is given, and then from the index of all tasks).
    pub async fn list(&self, req: &ListTasks) -> Result<Page<TaskId>, Error> {
        let limit = page_size(&req.page, 100)?;
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let view = snapshot.as_ref();
        with_retries(|| async { clusters::active(view, &req.cluster).await }).await?;
        let (dim, value) = if let Some(i) = &req.instance {
            (TaskIndex::Instance, i.to_string())
        } else if let Some(s) = &req.started_by {
            (TaskIndex::StartedBy, s.clone())
        } else if let Some(g) = &req.group {
            (TaskIndex::Group, g.clone())
        } else if let Some(f) = &req.family {
            (TaskIndex::Family, f.to_string())
        } else if let Some(l) = req.launch_type {
            (TaskIndex::LaunchType, l.as_str().to_string())
        } else {
            (TaskIndex::All, String::new())
        };
        let prefix = keys::task_index_prefix(&req.cluster, dim, &value, req.desired);
        let mut range = KeyRange::prefix(&prefix);
        if let Some(token) = req.page.next_token.as_deref().filter(|t| !t.is_empty()) {
            range = range.after(&decode_token(token, &prefix)?);
        }
        // Only a combination of filters needs the records; one filter is the index itself.
        let filters = [
            req.instance.is_some(),
            req.started_by.is_some(),
            req.group.is_some(),
            req.family.is_some(),
            req.launch_type.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let mut items = Vec::new();
        let mut last_consumed: Option<String> = None;
        loop {
            let page = view
                .range(range.clone().limit(limit.max(16)))
                .await
                .map_err(store_failure)?;
            for kv in &page.kvs {
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next_token: last_consumed.map(|k| encode_token(&k)),
                    });
                }
                last_consumed = Some(kv.key.clone());
                let Some(id) = keys::task_from_index_entry(&kv.key) else {
                    continue;
                };
                if filters > 1 {
                    let Some((task, _)) = view
                        .get_json::<TaskRecord>(&keys::task(&req.cluster, &id))
                        .await
                        .map_err(store_failure)?
                    else {
                        continue;
                    };
                    if !matches_filters(&task, req) {
                        continue;
                    }
                }
                items.push(id);
            }
            match page.last_key() {
                Some(last) if page.more => range = range.after(last),
                _ => {
                    return Ok(Page {
                        items,
                        next_token: None,
                    })
                }
            }
        }
    }

    pub async fn stop(
        &self,
        cluster: &ClusterName,
        id: &TaskId,
        reason: Option<&str>,
    ) -> Result<TaskRecord, Error> {
        let reason = match reason.filter(|r| !r.is_empty()) {
            Some(r) if r.chars().count() > MAX_REASON_CHARS => {
                return Err(Error::invalid(format!(
                    "reason can be at most {MAX_REASON_CHARS} characters."
                )))
            }
            Some(r) => r.to_string(),
            None => "Task stopped by user".to_string(),
        };
        self.order_stop(cluster, id, &reason, StopCode::UserInitiated)
            .await
    }

    /// Orders a task stopped (idempotent: the first order's reason sticks).
    pub async fn order_stop(
        &self,
        cluster: &ClusterName,
        id: &TaskId,
        reason: &str,
        code: StopCode,
    ) -> Result<TaskRecord, Error> {
        with_retries(|| async {
            let store = self.ctx.store.as_ref();
            clusters::active(store, cluster).await?;
            let (before, rev) = store
                .get_json::<TaskRecord>(&keys::task(cluster, id))
                .await?
                .ok_or_else(|| Error::invalid("The referenced task was not found."))?;
            let mut after = before.clone();
            if !after.order_stop(reason, code, self.ctx.now()) {
                return Ok(after);
            }
            // A task that never started on an instance whose agent is not there will not
            // be stopped by anyone else: it is over now, and its reservation freed.
            let agent_there = store
                .get(&keys::connection(cluster, &after.desired.instance))
                .await?
                .is_some();
            if !agent_there && after.observed.status < berth_core::status::TaskStatus::Running {
                after.force_stopped(reason, code, self.ctx.now());
            }
            let mut batch = TaskBatch::new(store, Txn::new());
            batch.update(&before, rev, &after).await?;
            store.commit(batch.finish()).await?;
            Ok(after)
        })
        .await
    }

    /// Applies an agent's report about one task (the caller has checked who reports).
    pub(crate) async fn apply_report(
        &self,
        cluster: &ClusterName,
        id: &TaskId,
        report: &TaskReport,
    ) -> Result<TaskRecord, Error> {
        with_retries(|| async {
            let store = self.ctx.store.as_ref();
            let (before, rev) = store
                .get_json::<TaskRecord>(&keys::task(cluster, id))
                .await?
                .ok_or_else(|| Error::invalid("The referenced task was not found."))?;
            let mut after = before.clone();
            after.apply_report(report, self.ctx.now());
            if after == before {
                return Ok(after);
            }
            let mut batch = TaskBatch::new(store, Txn::new());
            batch.update(&before, rev, &after).await?;
            store.commit(batch.finish()).await?;
            if after.observed.status != before.observed.status {
                tracing::info!(
                    task = %self.ctx.arns.task(cluster, id),
                    status = %after.observed.status,
                    reason = after.stopped_reason().unwrap_or(""),
                    "task state changed"
                );
            }
            Ok(after)
        })
        .await
    }

    /// UpdateTaskProtection: protects (or unprotects) tasks from scale-in for
    /// `expires_in_minutes` (ECS: default 120, at most 2880). Unknown or stopped tasks are
    /// failures.
    pub async fn set_protection(
        &self,
        cluster: &ClusterName,
        ids: &[TaskId],
        enabled: bool,
        expires_in_minutes: Option<u32>,
    ) -> Result<Vec<Result<TaskRecord, (TaskId, &'static str)>>, Error> {
        let minutes = expires_in_minutes.unwrap_or(120);
        if enabled && !(1..=2880).contains(&minutes) {
            return Err(Error::invalid(
                "expiresInMinutes must be between 1 and 2880.",
            ));
        }
        let mut out = Vec::new();
        for id in crate::dedup(ids) {
            let result = with_retries(|| async {
                let store = self.ctx.store.as_ref();
                clusters::active(store, cluster).await?;
                let Some((before, rev)) = store
                    .get_json::<TaskRecord>(&keys::task(cluster, &id))
                    .await?
                else {
                    return Ok(Err((id.clone(), "MISSING")));
                };
                if !before.is_live() || before.wants_stop() {
                    return Ok(Err((id.clone(), "TASK_NOT_VALID")));
                }
                let mut after = before.clone();
                after.desired.protected_until = enabled.then(|| {
                    self.ctx
                        .now()
                        .plus(std::time::Duration::from_secs(u64::from(minutes) * 60))
                });
                if after != before {
                    after.version += 1;
                    let mut batch = TaskBatch::new(store, Txn::new());
                    batch.update(&before, rev, &after).await?;
                    store.commit(batch.finish()).await?;
                }
                Ok(Ok(after))
            })
            .await?;
            out.push(result);
        }
        Ok(out)
    }

    /// SubmitTaskStateChange through the ECS API: accepted only for tasks on instances that
    /// no berth agent owns (API-registered instances); an agent's tasks are reported over
    /// the agent channel, authenticated as that agent.
    pub async fn submit_state_change(
        &self,
        cluster: &ClusterName,
        id: &TaskId,
        report: &TaskReport,
    ) -> Result<TaskRecord, Error> {
        let store = self.ctx.store.as_ref();
        with_retries(|| async { clusters::active(store, cluster).await }).await?;
        let task = store
            .get_json::<TaskRecord>(&keys::task(cluster, id))
            .await
            .map_err(store_failure)?
            .map(|(t, _)| t)
            .ok_or_else(|| Error::invalid("The referenced task was not found."))?;
        let instance = store
            .get_json::<berth_core::records::InstanceRecord>(&keys::instance(
                cluster,
                &task.desired.instance,
            ))
            .await
            .map_err(store_failure)?
            .map(|(i, _)| i);
        if instance.is_some_and(|i| i.agent.is_some()) {
            return Err(Error::new(
                berth_core::ErrorKind::AccessDenied,
                format!(
                    "Task {id} runs on a container instance managed by a berth agent; its state is reported by that agent."
                ),
            ));
        }
        self.apply_report(cluster, id, report).await
    }

    /// Declares every live task on an instance STOPPED (its agent is gone for good) in
    /// `txn`, reading from `view`. Returns how many.
    pub(crate) async fn force_stop_on_instance<V: ReadView + ?Sized>(
        &self,
        view: &V,
        cluster: &ClusterName,
        instance: &InstanceId,
        reason: &str,
        txn: Txn,
    ) -> CResult<(Txn, usize)> {
        let now = self.ctx.now();
        let mut batch = TaskBatch::new(view, txn);
        let mut stopped = 0;
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let prefix =
                keys::task_index_prefix(cluster, TaskIndex::Instance, instance.as_str(), desired);
            for kv in view.range(KeyRange::prefix(prefix)).await?.kvs {
                let Some(id) = keys::task_from_index_entry(&kv.key) else {
                    continue;
                };
                let Some((before, rev)) = view
                    .get_json::<TaskRecord>(&keys::task(cluster, &id))
                    .await?
                else {
                    continue;
                };
                if !before.is_live() {
                    continue;
                }
                let mut after = before.clone();
                after.force_stopped(reason, StopCode::TaskFailedToStart, now);
                batch.update(&before, rev, &after).await?;
                stopped += 1;
            }
        }
        Ok((batch.finish(), stopped))
    }

    /// Forgets STOPPED tasks that stopped before `cutoff` in one cluster, at most `limit`
    /// per call. Returns how many were removed.
    pub async fn forget_stopped(
        &self,
        cluster: &ClusterName,
        cutoff: berth_core::Timestamp,
        limit: usize,
    ) -> Result<usize, Error> {
        let store = self.ctx.store.as_ref();
        let prefix = keys::task_index_prefix(cluster, TaskIndex::All, "", DesiredStatus::Stopped);
        let mut removed = 0;
        let mut range = KeyRange::prefix(&prefix).limit(500);
        loop {
            let page = store.range(range.clone()).await.map_err(store_failure)?;
            for kv in &page.kvs {
                if removed >= limit {
                    return Ok(removed);
                }
                let Some(id) = keys::task_from_index_entry(&kv.key) else {
                    continue;
                };
                let key = keys::task(cluster, &id);
                let Some((task, rev)) = store
                    .get_json::<TaskRecord>(&key)
                    .await
                    .map_err(store_failure)?
                else {
                    continue;
                };
                let old = task.observed.status.is_terminal()
                    && task.observed.stopped_at.is_some_and(|t| t < cutoff);
                if !old {
                    continue;
                }
                let mut txn = Txn::new().require_revision(&key, rev).delete(&key);
                for entry in index_entries(&task) {
                    txn = txn.delete(entry);
                }
                txn = txn.delete(keys::tags(&self.ctx.arns.task(cluster, &id)));
                match store.commit(txn).await {
                    Ok(_) => removed += 1,
                    Err(berth_store::StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(store_failure(e)),
                }
            }
            match page.last_key() {
                Some(last) if page.more => range = range.after(last),
                _ => return Ok(removed),
            }
        }
    }
}

impl Tasks {
    /// Forgets RunTask client tokens issued before `cutoff` in one cluster.
    pub async fn forget_client_tokens(
        &self,
        cluster: &ClusterName,
        cutoff: berth_core::Timestamp,
    ) -> Result<usize, Error> {
        let store = self.ctx.store.as_ref();
        let mut removed = 0;
        for kv in store
            .range(KeyRange::prefix(keys::client_tokens_of(cluster)))
            .await
            .map_err(store_failure)?
            .kvs
        {
            let old = kv
                .decode::<crate::launch::ClientToken>()
                .map_or(true, |t| t.at < cutoff);
            if !old {
                continue;
            }
            match store
                .commit(
                    Txn::new()
                        .require_revision(&kv.key, kv.mod_revision)
                        .delete(&kv.key),
                )
                .await
            {
                Ok(_) => removed += 1,
                Err(berth_store::StoreError::Conflict { .. }) => {}
                Err(e) => return Err(store_failure(e)),
            }
        }
        Ok(removed)
    }
}

fn matches_filters(task: &TaskRecord, req: &ListTasks) -> bool {
    let d = &task.desired;
    req.instance.as_ref().is_none_or(|i| *i == d.instance)
        && req
            .family
            .as_ref()
            .is_none_or(|f| *f == d.task_definition.family)
        && req
            .started_by
            .as_ref()
            .is_none_or(|s| d.started_by.as_ref() == Some(s))
        && req.group.as_ref().is_none_or(|g| *g == d.group)
        && req.launch_type.is_none_or(|l| l == d.launch_type)
}
