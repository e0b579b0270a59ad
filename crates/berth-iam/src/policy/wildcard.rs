//! IAM's wildcards: `*` matches any run of characters (including none), `?` any one
//! character. Linear-space, no recursion (the classic two-pointer match with one
//! backtrack point), so hostile patterns cannot blow the stack or run exponentially.

/// Whether `value` matches `pattern`. `ignore_case`: ASCII case-insensitive (actions).
pub fn matches(pattern: &str, value: &str, ignore_case: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.is_ascii() && value.is_ascii() {
        // ARNs, actions and most condition values: bytes, no allocation.
        return match_units(
            pattern.as_bytes(),
            value.as_bytes(),
            |a, b| {
                if ignore_case {
                    a.eq_ignore_ascii_case(b)
                } else {
                    a == b
                }
            },
            b'*',
            b'?',
        );
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    match_units(
        &p,
        &v,
        |a, b| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        },
        '*',
        '?',
    )
}

/// The two-pointer wildcard match over any units (bytes or chars).
fn match_units<T: Copy + PartialEq>(
    p: &[T],
    v: &[T],
    eq: impl Fn(&T, &T) -> bool,
    star_unit: T,
    any_unit: T,
) -> bool {
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == any_unit || (p[pi] != star_unit && eq(&p[pi], &v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == star_unit {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star_unit {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `s` contains a wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// ARN matching as IAM does it for `Resource` and `ArnLike`: the six colon-separated
/// parts are matched one by one (a wildcard does not cross a `:` before the resource
/// part), the resource part matched whole. `"*"` matches everything.
pub fn arn_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut p = pattern.splitn(6, ':');
    let mut v = value.splitn(6, ':');
    loop {
        match (p.next(), v.next()) {
            (Some(ps), Some(vs)) => {
                if !matches(ps, vs, false) {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "", false));
        assert!(matches("*", "anything", false));
        assert!(matches("ecs:*", "ecs:RunTask", false));
        assert!(matches("ecs:run*", "ECS:RunTask", true));
        assert!(!matches("ecs:run*", "ecs:RunTask", false));
        assert!(matches("ecs:?unTask", "ecs:RunTask", false));
        assert!(!matches("ecs:?unTask", "ecs:unTask", false));
        assert!(matches("a*b*c", "aXXbYYc", false));
        assert!(!matches("a*b*c", "aXXbYY", false));
        assert!(matches("*Task*", "ecs:RunTask", false));
        assert!(matches("a**", "a", false));
        assert!(!matches("", "a", false));
        assert!(matches("", "", false));
    }

    #[test]
    fn arns_match_per_part() {
        let arn = "arn:aws:ecs:us-east-1:000000000000:cluster/a";
        assert!(arn_matches("*", arn));
        assert!(arn_matches("arn:aws:ecs:*:*:cluster/*", arn));
        assert!(arn_matches(
            "arn:aws:ecs:us-east-1:000000000000:cluster/a",
            arn
        ));
        assert!(!arn_matches(
            "arn:aws:ecs:us-east-1:000000000000:cluster/b",
            arn
        ));
        assert!(arn_matches(
            "arn:aws:ecs:*:*:task/a/*",
            "arn:aws:ecs:r:1:task/a/123"
        ));
        assert!(!arn_matches("arn:aws:ecs:*", arn));
        // A wildcard in the region part does not swallow the account.
        assert!(!arn_matches(
            "arn:aws:ecs:*:111:cluster/a",
            "arn:aws:ecs:r:000:cluster/a"
        ));
        // The resource part may hold colons (task definitions).
        assert!(arn_matches(
            "arn:aws:ecs:*:*:task-definition/web:*",
            "arn:aws:ecs:r:1:task-definition/web:3"
        ));
    }
}
