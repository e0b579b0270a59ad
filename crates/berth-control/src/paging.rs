//! List paging by key continuation: a `nextToken` names the last store key a page consumed,
//! so the next page starts right after it, whatever was added or removed in between.

use berth_core::Error;
use berth_store::{KeyRange, KeyValue, ReadView};

use crate::store_failure;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_token: self.next_token,
        }
    }
}

const TOKEN_PREFIX: &str = "bk1.";

pub(crate) fn encode_token(key: &str) -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(key))
}

/// The key a token continues after; it must lie under `prefix` (tokens are not a way to
/// read other keys).
pub(crate) fn decode_token(token: &str, prefix: &str) -> Result<String, Error> {
    let bad = || Error::invalid("Invalid nextToken.");
    let key = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    if key.starts_with(prefix) {
        Ok(key)
    } else {
        Err(bad())
    }
}

/// The page size a request asks for, within ECS's bounds.
pub(crate) fn page_size(req: &PageRequest, max_allowed: i64) -> Result<usize, Error> {
    match req.max_results {
        None => Ok(max_allowed as usize),
        Some(n) if (1..=max_allowed).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::invalid(format!(
            "maxResults must be between 1 and {max_allowed}, got {n}."
        ))),
    }
}

/// One page of the keys under `prefix` that `keep` accepts, in key order.
pub(crate) async fn page_keys<V: ReadView + ?Sized>(
    view: &V,
    prefix: &str,
    req: &PageRequest,
    max_allowed: i64,
    mut keep: impl FnMut(&KeyValue) -> bool,
) -> Result<Page<KeyValue>, Error> {
    let limit = page_size(req, max_allowed)?;
    let mut range = KeyRange::prefix(prefix);
    if let Some(token) = req.next_token.as_deref().filter(|t| !t.is_empty()) {
        range = range.after(&decode_token(token, prefix)?);
    }
    // Read in chunks a bit larger than a page, since some keys may be filtered out.
    let chunk = (limit * 2).clamp(16, 1000);
    let mut items = Vec::new();
    loop {
        let page = view
            .range(range.clone().limit(chunk))
            .await
            .map_err(store_failure)?;
        let mut consumed_all = true;
        for kv in &page.kvs {
            if items.len() == limit {
                consumed_all = false;
                break;
            }
            if keep(kv) {
                items.push(kv.clone());
            }
        }
        if !consumed_all {
            let next_token = items.last().map(|kv: &KeyValue| encode_token(&kv.key));
            return Ok(Page { items, next_token });
        }
        match page.last_key() {
            Some(last) if page.more => {
                if items.len() == limit {
                    let next_token = Some(encode_token(last));
                    return Ok(Page { items, next_token });
                }
                range = range.after(last);
            }
            _ => {
                return Ok(Page {
                    items,
                    next_token: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_stay_under_their_prefix() {
        let t = encode_token("c/abc");
        assert_eq!(decode_token(&t, "c/").unwrap(), "c/abc");
        assert!(decode_token(&t, "t/").is_err());
        assert!(decode_token("garbage", "c/").is_err());
        assert!(page_size(
            &PageRequest {
                next_token: None,
                max_results: Some(0)
            },
            100
        )
        .is_err());
    }
}
