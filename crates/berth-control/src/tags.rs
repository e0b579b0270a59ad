use berth_model::{
    ApiError, Arn, ErrorCode, ListTagsForResourceRequest, ListTagsForResourceResponse,
    ResourceKind, Tag, TagResourceRequest, UntagResourceRequest,
};
use berth_store::{StoreExt, Txn};

use crate::{keys, with_retries, CResult, ControlPlane};

const MAX_TAGS: usize = 50;

impl ControlPlane {
    pub(crate) fn validate_tags(&self, tags: &[Tag]) -> Result<(), ApiError> {
        if tags.len() > MAX_TAGS {
            return Err(ApiError::invalid(format!(
                "A resource can have at most {MAX_TAGS} tags."
            )));
        }
        for tag in tags {
            let key = tag.key.as_deref().unwrap_or_default();
            if key.is_empty() || key.chars().count() > 128 {
                return Err(ApiError::invalid(
                    "Tag keys must be 1 to 128 characters long.",
                ));
            }
            if key.to_ascii_lowercase().starts_with("aws:") {
                return Err(ApiError::invalid(
                    "Tag keys may not start with the reserved prefix 'aws:'.",
                ));
            }
            if tag.value.as_deref().unwrap_or_default().chars().count() > 256 {
                return Err(ApiError::invalid(
                    "Tag values must be at most 256 characters long.",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn tags_of(&self, arn: &str) -> Result<Vec<Tag>, ApiError> {
        Ok(self
            .store
            .get_json::<Vec<Tag>>(&keys::tags(arn))?
            .map(|(t, _)| t)
            .unwrap_or_default())
    }

    /// The store key of the resource an ARN names, failing if it does not exist.
    fn existing_resource(&self, arn: &str) -> CResult<()> {
        let parsed = Arn::parse(arn)?;
        let key = match parsed.kind {
            ResourceKind::Cluster => keys::cluster(&parsed.resource),
            ResourceKind::TaskDefinition => {
                let (family, rev) = parsed
                    .resource
                    .split_once(':')
                    .and_then(|(f, r)| Some((f, r.parse::<i64>().ok()?)))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("Invalid task definition ARN: {arn}"))
                    })?;
                keys::task_definition(family, rev)
            }
            ResourceKind::Task | ResourceKind::ContainerInstance => {
                let (cluster, id) = parsed
                    .resource
                    .split_once('/')
                    .ok_or_else(|| ApiError::invalid(format!("Invalid ARN: {arn}")))?;
                if parsed.kind == ResourceKind::Task {
                    keys::task(cluster, id)
                } else {
                    keys::instance(cluster, id)
                }
            }
            ResourceKind::Container => {
                return Err(ApiError::invalid("Containers cannot be tagged.").into())
            }
        };
        if self.store.get(&key)?.is_none() {
            let code = if parsed.kind == ResourceKind::Cluster {
                ErrorCode::ClusterNotFoundException
            } else {
                ErrorCode::ResourceNotFoundException
            };
            return Err(ApiError::new(code, "The specified resource could not be found.").into());
        }
        Ok(())
    }

    pub fn tag_resource(&self, req: TagResourceRequest) -> Result<serde_json::Value, ApiError> {
        let arn = ApiError::require(&req.resource_arn, "resourceArn")?;
        let new_tags = req
            .tags
            .as_ref()
            .ok_or_else(|| ApiError::invalid("tags is required."))?;
        self.validate_tags(new_tags)?;
        with_retries(|| {
            self.existing_resource(arn)?;
            let key = keys::tags(arn);
            let current = self.store.get_json::<Vec<Tag>>(&key)?;
            let mut tags = current.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
            for tag in new_tags {
                match tags.iter_mut().find(|t| t.key == tag.key) {
                    Some(existing) => existing.value = tag.value.clone(),
                    None => tags.push(tag.clone()),
                }
            }
            self.validate_tags(&tags)?;
            self.store.commit(
                Txn::new()
                    .require_unchanged(&key, current.map(|(_, r)| r))
                    .put_json(&key, &tags),
            )?;
            Ok(())
        })?;
        Ok(serde_json::json!({}))
    }

    pub fn untag_resource(&self, req: UntagResourceRequest) -> Result<serde_json::Value, ApiError> {
        let arn = ApiError::require(&req.resource_arn, "resourceArn")?;
        let remove = req
            .tag_keys
            .as_ref()
            .ok_or_else(|| ApiError::invalid("tagKeys is required."))?;
        with_retries(|| {
            self.existing_resource(arn)?;
            let key = keys::tags(arn);
            if let Some((mut tags, rev)) = self.store.get_json::<Vec<Tag>>(&key)? {
                tags.retain(|t| !remove.iter().any(|k| Some(k) == t.key.as_ref()));
                self.store
                    .commit(Txn::new().require_revision(&key, rev).put_json(&key, &tags))?;
            }
            Ok(())
        })?;
        Ok(serde_json::json!({}))
    }

    pub fn list_tags_for_resource(
        &self,
        req: ListTagsForResourceRequest,
    ) -> Result<ListTagsForResourceResponse, ApiError> {
        let arn = ApiError::require(&req.resource_arn, "resourceArn")?;
        with_retries(|| self.existing_resource(arn))?;
        Ok(ListTagsForResourceResponse {
            tags: self.tags_of(arn)?,
        })
    }
}
