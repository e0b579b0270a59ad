use berth_model::ApiError;

/// One page of `items` as ECS's List* actions return them. The token is the offset of the
/// next page; like ECS's, it is opaque to clients.
pub fn page<T>(
    items: Vec<T>,
    next_token: Option<&str>,
    max_results: Option<i64>,
    max_allowed: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = match max_results {
        None => max_allowed,
        Some(n) if (1..=max_allowed).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "maxResults must be between 1 and {max_allowed}, got {n}."
            )))
        }
    } as usize;
    let start = match next_token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => token
            .strip_prefix("berth-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid("Invalid nextToken."))?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + limit < total).then(|| format!("berth-{}", start + limit));
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_everything_once() {
        let items: Vec<i32> = (0..7).collect();
        let (p1, t1) = page(items.clone(), None, Some(3), 100).unwrap();
        assert_eq!(p1, vec![0, 1, 2]);
        let (p2, t2) = page(items.clone(), t1.as_deref(), Some(3), 100).unwrap();
        assert_eq!(p2, vec![3, 4, 5]);
        let (p3, t3) = page(items, t2.as_deref(), Some(3), 100).unwrap();
        assert_eq!((p3, t3), (vec![6], None));
    }

    #[test]
    fn rejects_bad_limits_and_tokens() {
        assert!(page(vec![1], None, Some(0), 100).is_err());
        assert!(page(vec![1], None, Some(101), 100).is_err());
        assert!(page(vec![1], Some("garbage"), None, 100).is_err());
    }
}
