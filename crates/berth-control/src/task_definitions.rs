//! Task definitions: register revisions, resolve references, list, deregister.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_core::ids::{Family, TaskDefinitionId, TaskDefinitionRef};
use berth_core::records::{Tag, TaskDefinitionRecord, TaskSpec};
use berth_core::status::TaskDefinitionStatus;
use berth_core::Error;
use berth_store::{KeyRange, ReadExt, ReadView, Txn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::paging::{decode_token, encode_token, page_keys, page_size, Page, PageRequest};
use crate::{keys, store_failure, tags, with_retries, CResult, Ctx};

/// ECS caps a registered task definition's document at 64 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Per-family bookkeeping: the last revision handed out (revisions are never reused).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FamilyRecord {
    latest_revision: u32,
}

/// What RegisterTaskDefinition stores, parsed and validated at the API edge.
#[derive(Debug, Clone)]
pub struct RegisterTaskDefinition {
    pub family: Family,
    pub spec: TaskSpec,
    pub document: Value,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyStatusFilter {
    Active,
    Inactive,
    All,
}

pub struct TaskDefinitions {
    ctx: Arc<Ctx>,
    /// Documents and specs never change after registration; only status does. Agents'
    /// polls read them for every assigned task, so keep them in memory.
    cache: Mutex<HashMap<TaskDefinitionId, Arc<TaskDefinitionRecord>>>,
}

/// Reads one revision.
pub(crate) async fn get<V: ReadView + ?Sized>(
    view: &V,
    id: &TaskDefinitionId,
) -> CResult<Option<TaskDefinitionRecord>> {
    Ok(view
        .get_json::<TaskDefinitionRecord>(&keys::task_definition(id))
        .await?
        .map(|(d, _)| d))
}

/// The latest ACTIVE revision of a family, if any.
pub(crate) async fn latest_active<V: ReadView + ?Sized>(
    view: &V,
    family: &Family,
) -> CResult<Option<TaskDefinitionId>> {
    let page = view
        .range(KeyRange::prefix(keys::task_definitions_by_status_of(
            TaskDefinitionStatus::Active,
            family,
        )))
        .await?;
    Ok(page
        .last_key()
        .and_then(keys::parse_task_definition_status_key))
}

/// Resolves a reference as ECS does: a family means its latest ACTIVE revision; a revision
/// is returned whatever its status.
pub(crate) async fn resolve<V: ReadView + ?Sized>(
    view: &V,
    reference: &TaskDefinitionRef,
) -> CResult<TaskDefinitionRecord> {
    let not_found = || Error::client("Unable to describe task definition.");
    let id = match reference {
        TaskDefinitionRef::Revision(id) => id.clone(),
        TaskDefinitionRef::Latest(family) => {
            latest_active(view, family).await?.ok_or_else(not_found)?
        }
    };
    Ok(get(view, &id).await?.ok_or_else(not_found)?)
}

impl TaskDefinitions {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn register(
        &self,
        req: RegisterTaskDefinition,
    ) -> Result<TaskDefinitionRecord, Error> {
        tags::validate(&req.tags)?;
        let size = serde_json::to_vec(&req.document).map_or(0, |v| v.len());
        if size > MAX_DOCUMENT_BYTES {
            return Err(Error::client(format!(
                "Task definition is {size} bytes; the maximum size is {MAX_DOCUMENT_BYTES} bytes."
            )));
        }
        with_retries(|| async {
            let family_key = keys::family(&req.family);
            let existing = self.ctx.store.get_json::<FamilyRecord>(&family_key).await?;
            let revision = existing.as_ref().map_or(0, |(r, _)| r.latest_revision) + 1;
            let id = TaskDefinitionId::new(req.family.clone(), revision);
            let record = TaskDefinitionRecord {
                id: id.clone(),
                status: TaskDefinitionStatus::Active,
                registered_at: self.ctx.now(),
                deregistered_at: None,
                registered_by: self.ctx.arns.account_root(),
                spec: req.spec.clone(),
                document: req.document.clone(),
            };
            let txn = Txn::new()
                .require_unchanged(&family_key, existing.as_ref().map(|(_, rev)| *rev))
                .put_json(
                    &family_key,
                    &FamilyRecord {
                        latest_revision: revision,
                    },
                )
                .put_json(keys::task_definition(&id), &record)
                .put_raw(
                    keys::task_definition_status(TaskDefinitionStatus::Active, &id),
                    Vec::new(),
                );
            let arn = self.ctx.arns.task_definition(&id);
            self.ctx
                .store
                .commit(tags::put_new(txn, &arn, &req.tags))
                .await?;
            Ok(record)
        })
        .await
    }

    /// Resolves a reference (family → latest ACTIVE revision).
    pub async fn resolve(
        &self,
        reference: &TaskDefinitionRef,
    ) -> Result<TaskDefinitionRecord, Error> {
        with_retries(|| resolve(self.ctx.store.as_ref(), reference)).await
    }

    /// One revision, from memory when possible. The status in a cached record may be stale;
    /// callers that care about status use [`resolve`](Self::resolve).
    pub async fn cached(&self, id: &TaskDefinitionId) -> Result<Arc<TaskDefinitionRecord>, Error> {
        if let Some(found) = self.cache.lock().expect("cache").get(id) {
            return Ok(Arc::clone(found));
        }
        let record = get(self.ctx.store.as_ref(), id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::client(format!("Task definition {id} does not exist.")))?;
        let record = Arc::new(record);
        let mut cache = self.cache.lock().expect("cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.clone(), Arc::clone(&record));
        Ok(record)
    }

    pub async fn list(
        &self,
        family: Option<&Family>,
        status: TaskDefinitionStatus,
        descending: bool,
        req: &PageRequest,
    ) -> Result<Page<TaskDefinitionId>, Error> {
        // ECS matches familyPrefix as a whole family name.
        let prefix = match family {
            Some(f) => keys::task_definitions_by_status_of(status, f),
            None => keys::task_definitions_by_status(status),
        };
        if !descending {
            let page = page_keys(self.ctx.store.as_ref(), &prefix, req, 100, |_| true).await?;
            return Ok(page.map(|kv| {
                keys::parse_task_definition_status_key(&kv.key).expect("index keys parse")
            }));
        }
        // Newest first: the store reads forward only, and index values are empty, so read
        // the keys and walk them backwards.
        let limit = page_size(req, 100)?;
        let keys_desc: Vec<String> = self
            .ctx
            .store
            .range(KeyRange::prefix(&prefix))
            .await
            .map_err(store_failure)?
            .kvs
            .into_iter()
            .rev()
            .map(|kv| kv.key)
            .collect();
        let start = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => {
                let after = decode_token(token, &prefix)?;
                keys_desc
                    .iter()
                    .position(|k| *k < after)
                    .unwrap_or(keys_desc.len())
            }
            None => 0,
        };
        let items: Vec<&String> = keys_desc.iter().skip(start).take(limit).collect();
        let next_token = (start + items.len() < keys_desc.len())
            .then(|| items.last().map(|k| encode_token(k)))
            .flatten();
        Ok(Page {
            items: items
                .into_iter()
                .filter_map(|k| keys::parse_task_definition_status_key(k))
                .collect(),
            next_token,
        })
    }

    pub async fn families(
        &self,
        prefix: &str,
        status: FamilyStatusFilter,
        req: &PageRequest,
    ) -> Result<Page<Family>, Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let active_families: std::collections::BTreeSet<String> = snapshot
            .range(KeyRange::prefix(keys::task_definitions_by_status(
                TaskDefinitionStatus::Active,
            )))
            .await
            .map_err(store_failure)?
            .kvs
            .iter()
            .filter_map(|kv| keys::parse_task_definition_status_key(&kv.key))
            .map(|id| id.family.as_str().to_string())
            .collect();
        let key_prefix = format!("{}{prefix}", keys::FAMILIES);
        let page = page_keys(snapshot.as_ref(), &key_prefix, req, 100, |kv| {
            let name = &kv.key[keys::FAMILIES.len()..];
            match status {
                FamilyStatusFilter::Active => active_families.contains(name),
                FamilyStatusFilter::Inactive => !active_families.contains(name),
                FamilyStatusFilter::All => true,
            }
        })
        .await?;
        let families = page
            .items
            .iter()
            .filter_map(|kv| Family::new(&kv.key[keys::FAMILIES.len()..]).ok())
            .collect();
        Ok(Page {
            items: families,
            next_token: page.next_token,
        })
    }

    /// DeleteTaskDefinitions: an INACTIVE revision moves to DELETE_IN_PROGRESS (ECS deletes
    /// it once nothing uses it); an ACTIVE one is a failure.
    pub async fn delete(
        &self,
        ids: &[TaskDefinitionId],
    ) -> Result<Vec<Result<TaskDefinitionRecord, (TaskDefinitionId, String)>>, Error> {
        let mut out = Vec::new();
        for id in crate::dedup(ids) {
            let result = with_retries(|| async {
                let key = keys::task_definition(&id);
                let Some((mut record, rev)) =
                    self.ctx.store.get_json::<TaskDefinitionRecord>(&key).await?
                else {
                    return Ok(Err((id.clone(), "The specified task definition does not exist.".to_string())));
                };
                match record.status {
                    TaskDefinitionStatus::Active => Ok(Err((
                        id.clone(),
                        "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".to_string(),
                    ))),
                    TaskDefinitionStatus::DeleteInProgress => Ok(Ok(record)),
                    TaskDefinitionStatus::Inactive => {
                        record.status = TaskDefinitionStatus::DeleteInProgress;
                        self.ctx
                            .store
                            .commit(
                                Txn::new()
                                    .require_revision(&key, rev)
                                    .put_json(&key, &record)
                                    .delete(keys::task_definition_status(
                                        TaskDefinitionStatus::Inactive,
                                        &id,
                                    ))
                                    .put_raw(
                                        keys::task_definition_status(
                                            TaskDefinitionStatus::DeleteInProgress,
                                            &id,
                                        ),
                                        Vec::new(),
                                    ),
                            )
                            .await?;
                        Ok(Ok(record))
                    }
                }
            })
            .await?;
            out.push(result);
        }
        Ok(out)
    }

    pub async fn deregister(&self, id: &TaskDefinitionId) -> Result<TaskDefinitionRecord, Error> {
        with_retries(|| async {
            let key = keys::task_definition(id);
            let (mut record, rev) = self
                .ctx
                .store
                .get_json::<TaskDefinitionRecord>(&key)
                .await?
                .ok_or_else(|| Error::client("The specified task definition does not exist."))?;
            if record.status == TaskDefinitionStatus::Active {
                record.status = TaskDefinitionStatus::Inactive;
                record.deregistered_at = Some(self.ctx.now());
                self.ctx
                    .store
                    .commit(
                        Txn::new()
                            .require_revision(&key, rev)
                            .put_json(&key, &record)
                            .delete(keys::task_definition_status(
                                TaskDefinitionStatus::Active,
                                id,
                            ))
                            .put_raw(
                                keys::task_definition_status(TaskDefinitionStatus::Inactive, id),
                                Vec::new(),
                            ),
                    )
                    .await?;
            }
            Ok(record)
        })
        .await
    }
}
