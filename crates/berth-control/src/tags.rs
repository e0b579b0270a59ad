//! Resource tags, stored per ARN beside the resource.

use std::sync::Arc;

use berth_core::arn::{Arn, ResourceKind};
use berth_core::ids::{ClusterName, Family, InstanceId, ServiceName, TaskDefinitionId, TaskId};
use berth_core::records::Tag;
use berth_core::{Error, ErrorKind};
use berth_store::{ReadExt, ReadView, Txn};

use crate::{keys, store_failure, with_retries, CResult, Ctx};

pub const MAX_TAGS: usize = 50;

/// ECS's tag rules: at most 50, keys 1–128 characters, values up to 256, no `aws:` prefix,
/// no duplicate keys.
pub fn validate(tags: &[Tag]) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!(
            "A resource can have at most {MAX_TAGS} tags."
        )));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(Error::invalid("Tag keys must be 1 to 128 characters long."));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(Error::invalid(
                "Tag keys may not start with the reserved prefix 'aws:'.",
            ));
        }
        if tag.value.chars().count() > 256 {
            return Err(Error::invalid(
                "Tag values must be at most 256 characters long.",
            ));
        }
        if tags[..i].iter().any(|t| t.key == tag.key) {
            return Err(Error::invalid(format!("Duplicate tag key '{}'.", tag.key)));
        }
    }
    Ok(())
}

/// Adds the tags of a new resource to `txn` (nothing for no tags).
pub fn put_new(txn: Txn, arn: &str, tags: &[Tag]) -> Txn {
    if tags.is_empty() {
        txn
    } else {
        txn.put_json(keys::tags(arn), tags)
    }
}

pub struct Tags {
    ctx: Arc<Ctx>,
}

impl Tags {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    pub async fn of(&self, arn: &str) -> Result<Vec<Tag>, Error> {
        of(self.ctx.store.as_ref(), arn).await
    }

    /// The store key of the resource an ARN names; fails if it does not exist.
    async fn existing_resource(&self, arn: &str) -> CResult<()> {
        let parsed = Arn::parse(arn)?;
        let segments = parsed.segments();
        let invalid = || Error::invalid(format!("Invalid ARN: {arn}"));
        let key = match (parsed.kind, segments.as_slice()) {
            (ResourceKind::Cluster, [name]) => keys::cluster(&ClusterName::new(*name)?),
            (ResourceKind::TaskDefinition, [family_revision]) => {
                let (family, revision) = family_revision.split_once(':').ok_or_else(invalid)?;
                let revision = revision.parse().map_err(|_| invalid())?;
                keys::task_definition(&TaskDefinitionId::new(Family::new(family)?, revision))
            }
            (ResourceKind::Task, [cluster, id]) => {
                keys::task(&ClusterName::new(*cluster)?, &TaskId::new(*id)?)
            }
            (ResourceKind::ContainerInstance, [cluster, id]) => {
                keys::instance(&ClusterName::new(*cluster)?, &InstanceId::new(*id)?)
            }
            (ResourceKind::Service, [cluster, name]) => {
                let key = keys::service(&ClusterName::new(*cluster)?, &ServiceName::new(*name)?);
                // An INACTIVE (deleted) service has no tags to read or change.
                let live = self
                    .ctx
                    .store
                    .get_json::<berth_core::records::ServiceRecord>(&key)
                    .await?
                    .is_some_and(|(s, _)| s.status != berth_core::status::ServiceStatus::Inactive);
                if !live {
                    return Err(Error::service_not_found().into());
                }
                key
            }
            (ResourceKind::Container, _) => {
                return Err(Error::invalid("Containers cannot be tagged.").into())
            }
            _ => return Err(invalid().into()),
        };
        if self.ctx.store.get(&key).await?.is_none() {
            let kind = if parsed.kind == ResourceKind::Cluster {
                ErrorKind::ClusterNotFound
            } else {
                ErrorKind::ResourceNotFound
            };
            return Err(Error::new(kind, "The specified resource could not be found.").into());
        }
        Ok(())
    }

    pub async fn tag(&self, arn: &str, new_tags: &[Tag]) -> Result<(), Error> {
        validate(new_tags)?;
        with_retries(|| async {
            self.existing_resource(arn).await?;
            let key = keys::tags(arn);
            let current = self.ctx.store.get_json::<Vec<Tag>>(&key).await?;
            let mut tags = current.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
            for tag in new_tags {
                match tags.iter_mut().find(|t| t.key == tag.key) {
                    Some(existing) => existing.value.clone_from(&tag.value),
                    None => tags.push(tag.clone()),
                }
            }
            validate(&tags)?;
            self.ctx
                .store
                .commit(
                    Txn::new()
                        .require_unchanged(&key, current.map(|(_, r)| r))
                        .put_json(&key, &tags),
                )
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn untag(&self, arn: &str, remove: &[String]) -> Result<(), Error> {
        with_retries(|| async {
            self.existing_resource(arn).await?;
            let key = keys::tags(arn);
            if let Some((mut tags, rev)) = self.ctx.store.get_json::<Vec<Tag>>(&key).await? {
                tags.retain(|t| !remove.contains(&t.key));
                self.ctx
                    .store
                    .commit(Txn::new().require_revision(&key, rev).put_json(&key, &tags))
                    .await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn list(&self, arn: &str) -> Result<Vec<Tag>, Error> {
        with_retries(|| self.existing_resource(arn)).await?;
        self.of(arn).await
    }
}

/// The tags of `arn` as `view` sees them.
pub async fn of<V: ReadView + ?Sized>(view: &V, arn: &str) -> Result<Vec<Tag>, Error> {
    Ok(view
        .get_json::<Vec<Tag>>(&keys::tags(arn))
        .await
        .map_err(store_failure)?
        .map(|(t, _)| t)
        .unwrap_or_default())
}
