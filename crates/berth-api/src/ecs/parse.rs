//! Parsing ECS request members into berth's typed domain. Every string from the wire that
//! berth acts on is turned into an enum, id or number here, with ECS's error when it is bad.

use berth_control::PageRequest;
use berth_core::arn::{is_arn, Arn, ResourceKind};
use berth_core::ids::{ClusterName, Family, TaskDefinitionId, TaskDefinitionRef};
use berth_core::records::{NameValue, Tag};
use berth_core::Error;
use berth_wire::ecs;

/// A required string member: present and not blank.
pub fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, Error> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Error::invalid(format!(
            "{member} is required and may not be empty."
        ))),
    }
}

pub fn cluster(given: &Option<String>) -> Result<ClusterName, Error> {
    berth_control::cluster_name(given.as_deref())
}

pub fn tags(given: &Option<Vec<ecs::Tag>>) -> Result<Vec<Tag>, Error> {
    given
        .iter()
        .flatten()
        .map(|t| {
            Ok(Tag {
                key: t
                    .key
                    .clone()
                    .ok_or_else(|| Error::invalid("Tag keys must be 1 to 128 characters long."))?,
                value: t.value.clone().unwrap_or_default(),
            })
        })
        .collect()
}

pub fn page(next_token: &Option<String>, max_results: Option<i32>) -> PageRequest {
    PageRequest {
        next_token: next_token.clone(),
        max_results: max_results.map(i64::from),
    }
}

/// Whether a Describe call's `include` asks for `what` (e.g. "TAGS").
pub fn includes(include: &Option<Vec<String>>, what: &str) -> bool {
    include
        .as_ref()
        .is_some_and(|fields| fields.iter().any(|f| f == what))
}

/// A closed-vocabulary member, parsed with ECS's message for a bad value.
pub fn enum_member<T>(
    value: &str,
    member: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: impl Fn() -> String,
) -> Result<T, Error> {
    parse(value).ok_or_else(|| {
        Error::invalid(format!(
            "{member} '{value}' is not valid. Valid values: {}.",
            expected()
        ))
    })
}

/// A task definition reference as RunTask and friends accept it: `family`,
/// `family:revision` or an ARN.
pub fn task_definition_ref(given: &str) -> Result<TaskDefinitionRef, Error> {
    let bad = || {
        Error::client(format!(
            "Unable to describe task definition: invalid reference '{given}'."
        ))
    };
    let short = if is_arn(given) {
        let arn = Arn::parse(given).map_err(|_| bad())?;
        if arn.kind != ResourceKind::TaskDefinition {
            return Err(bad());
        }
        arn.resource
    } else {
        given.to_string()
    };
    match short.split_once(':') {
        None => Ok(TaskDefinitionRef::Latest(
            Family::new(short).map_err(|_| bad())?,
        )),
        Some((family, revision)) => {
            let revision: u32 = revision.parse().map_err(|_| bad())?;
            if revision < 1 {
                return Err(bad());
            }
            Ok(TaskDefinitionRef::Revision(TaskDefinitionId::new(
                Family::new(family).map_err(|_| bad())?,
                revision,
            )))
        }
    }
}

pub fn attributes(given: &Option<Vec<ecs::Attribute>>) -> Result<Vec<NameValue>, Error> {
    given
        .iter()
        .flatten()
        .map(|a| {
            let name = a.name.clone().unwrap_or_default();
            if name.is_empty() || name.len() > 128 {
                return Err(Error::invalid(
                    "Attribute names must be 1 to 128 characters long.",
                ));
            }
            if a.value.as_ref().is_some_and(|v| v.len() > 128) {
                return Err(Error::invalid(
                    "Attribute values must be at most 128 characters long.",
                ));
            }
            Ok(NameValue {
                name,
                value: a.value.clone(),
            })
        })
        .collect()
}

/// A list of identifiers for a Describe call: present, non-empty, at most `max`.
pub fn id_list<'a>(
    given: &'a Option<Vec<String>>,
    member: &str,
    max: usize,
) -> Result<&'a [String], Error> {
    let list = given
        .as_deref()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::invalid(format!("{member} is required and may not be empty.")))?;
    if list.len() > max {
        return Err(Error::invalid(format!(
            "At most {max} {member} can be given at once."
        )));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_definition_references() {
        assert!(
            matches!(task_definition_ref("web"), Ok(TaskDefinitionRef::Latest(f)) if f.as_str() == "web")
        );
        assert!(matches!(
            task_definition_ref("arn:aws:ecs:us-east-1:0:task-definition/web:3"),
            Ok(TaskDefinitionRef::Revision(id)) if id.revision == 3
        ));
        assert!(task_definition_ref("web:zero").is_err());
        assert!(task_definition_ref("web:0").is_err());
        assert!(task_definition_ref("we b").is_err());
        assert!(task_definition_ref("arn:aws:ecs:r:a:cluster/x").is_err());
    }
}
