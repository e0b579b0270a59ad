//! A query-protocol request's parameters: the form body of a POST and/or the query string
//! of the URL (a presigned GET carries them there), minus the signature's own
//! `X-Amz-*` parameters. Lists are flattened as botocore sends them:
//! `Tags.member.1.Key=a&Tags.member.1.Value=b`, `PolicyArns.member.1.arn=...`.

use std::collections::BTreeMap;

use berth_iam::IamError;

const SIGNATURE_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    map: BTreeMap<String, String>,
}

/// `UserName` → `userName`, as query-protocol validation messages name members.
fn member(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl QueryParams {
    /// Parses the URL's query string and (for form bodies) the body; body values win.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut map = BTreeMap::new();
        if let Some(q) = query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if !SIGNATURE_PARAMS.contains(&k.as_ref()) {
                    map.insert(k.into_owned(), v.into_owned());
                }
            }
        }
        for (k, v) in form_urlencoded::parse(body) {
            map.insert(k.into_owned(), v.into_owned());
        }
        Self { map }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// A member that must be present (and, for strings, non-empty is not required).
    pub fn required(&self, name: &str) -> Result<&str, IamError> {
        self.get(name).ok_or_else(|| {
            IamError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                member(name)
            ))
        })
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, IamError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                IamError::validation(format!(
                    "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be a number",
                    member(name)
                ))
            }),
        }
    }

    /// The structures of a flattened list `<name>.member.<n>.<field>`, in index order.
    pub fn structs(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let prefix = format!("{name}.member.");
        let mut items: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in self.map.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(i) = index.parse::<u32>() {
                items
                    .entry(i)
                    .or_default()
                    .insert(field.to_string(), v.clone());
            }
        }
        items.into_values().collect()
    }

    /// The strings of a flattened list `<name>.member.<n>`, in index order.
    pub fn strings(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.member.");
        let mut items: BTreeMap<u32, String> = BTreeMap::new();
        for (k, v) in self.map.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            if let Ok(i) = rest.parse::<u32>() {
                items.insert(i, v.clone());
            }
        }
        items.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_lists_and_signature_params() {
        let p = QueryParams::parse(
            Some("Action=CreateUser&X-Amz-Signature=abc&Version=2010-05-08"),
            b"UserName=a%2Bb&Tags.member.2.Key=k2&Tags.member.1.Key=k1&Tags.member.1.Value=v1&Tags.member.2.Value=v+2&Ids.member.1=x",
        );
        assert_eq!(p.get("Action"), Some("CreateUser"));
        assert_eq!(p.get("X-Amz-Signature"), None);
        assert_eq!(p.get("UserName"), Some("a+b"));
        let tags = p.structs("Tags");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["Key"], "k1");
        assert_eq!(tags[1]["Value"], "v 2");
        assert_eq!(p.strings("Ids"), vec!["x"]);
        let e = p.required("PolicyArn").unwrap_err();
        assert!(e.message.contains("'policyArn'"));
        assert!(p.int("UserName").is_err());
    }
}
