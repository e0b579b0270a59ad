use berth_control::ControlPlane;
use berth_core::Error;
use berth_wire::ecs;

use super::{parse, render};

pub async fn tag(
    cp: &ControlPlane,
    req: ecs::TagResourceRequest,
) -> Result<ecs::TagResourceResponse, Error> {
    let arn = parse::required(&req.resource_arn, "resourceArn")?;
    let tags = req
        .tags
        .as_ref()
        .ok_or_else(|| Error::invalid("tags is required."))?;
    cp.tags.tag(arn, &parse::tags(&Some(tags.clone()))?).await?;
    Ok(ecs::TagResourceResponse {})
}

pub async fn untag(
    cp: &ControlPlane,
    req: ecs::UntagResourceRequest,
) -> Result<ecs::UntagResourceResponse, Error> {
    let arn = parse::required(&req.resource_arn, "resourceArn")?;
    let keys = req
        .tag_keys
        .as_ref()
        .ok_or_else(|| Error::invalid("tagKeys is required."))?;
    cp.tags.untag(arn, keys).await?;
    Ok(ecs::UntagResourceResponse {})
}

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListTagsForResourceRequest,
) -> Result<ecs::ListTagsForResourceResponse, Error> {
    let arn = parse::required(&req.resource_arn, "resourceArn")?;
    Ok(ecs::ListTagsForResourceResponse {
        tags: Some(render::tags(&cp.tags.list(arn).await?)),
    })
}
