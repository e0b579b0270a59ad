//! Policy evaluation as IAM defines it for identity-based policies:
//! an explicit `Deny` in any statement that applies wins; otherwise an `Allow` that applies
//! allows; otherwise the request is denied by default.
//!
//! A statement applies when its `Action`/`NotAction`, its `Resource`/`NotResource` and all
//! of its conditions match. Conditions: within one operator the keys are ANDed, the
//! values of one key ORed; operators are ANDed. A key missing from the request fails a
//! positive operator and satisfies a negated one (`StringNotEquals`, `ArnNotLike`, ...);
//! `...IfExists` makes a missing key satisfy any operator; `ForAllValues:` is satisfied by
//! a missing/empty key, `ForAnyValue:` is not; `Null` tests presence.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use super::wildcard::{arn_matches, matches};
use super::{BaseOp, Condition, Effect, Matcher, PolicyDocument, Principals, SetOp, Statement};

/// The value of a condition key in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    One(String),
    Many(Vec<String>),
}

/// The condition keys of a request (names are case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextKeys {
    map: HashMap<String, ContextValue>,
}

impl ContextKeys {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, key: &str, value: ContextValue) {
        self.map.insert(key.to_ascii_lowercase(), value);
    }
    pub fn set_one(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, ContextValue::One(value.into()));
    }
    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.set(key, ContextValue::Many(values));
    }
    /// Looks a key up (any case).
    pub fn get(&self, key: &str) -> Option<&ContextValue> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.map.get(&key.to_ascii_lowercase())
        } else {
            self.map.get(key)
        }
    }
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// Adds every key of `other` (its values win).
    pub fn extend(&mut self, other: &ContextKeys) {
        for (k, v) in &other.map {
            self.map.insert(k.clone(), v.clone());
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ContextValue)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// One authorization question: may the caller do `action` on `resource`, in this context?
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// `service:Action`, e.g. `ecs:RunTask`.
    pub action: &'a str,
    /// An ARN, or `*` for actions without resource-level permissions.
    pub resource: &'a str,
    pub keys: &'a ContextKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A `Deny` statement applies.
    ExplicitDeny,
    /// No `Allow` statement applies.
    ImplicitDeny,
}

/// Evaluates identity-based policies.
pub fn evaluate<'p, I>(policies: I, ctx: &RequestContext<'_>) -> Decision
where
    I: IntoIterator<Item = &'p PolicyDocument>,
{
    let mut allowed = false;
    for doc in policies {
        for statement in &doc.statements {
            // An Allow cannot change the outcome once something allowed: skip its work.
            if statement.effect == Effect::Allow && allowed {
                continue;
            }
            if applies(doc, statement, ctx) {
                match statement.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn action_matches(actions: &Matcher<Vec<String>>, action: &str) -> bool {
    match actions {
        Matcher::Positive(list) => list.iter().any(|p| matches(p, action, true)),
        Matcher::Negative(list) => !list.iter().any(|p| matches(p, action, true)),
    }
}

fn resource_matches(
    doc: &PolicyDocument,
    resources: &Matcher<Vec<String>>,
    resource: &str,
    keys: &ContextKeys,
) -> bool {
    let one = |pattern: &String| {
        if doc.has_variables() {
            match substitute(pattern, keys) {
                Some(p) => arn_or_star(&p, resource),
                None => false,
            }
        } else {
            arn_or_star(pattern, resource)
        }
    };
    match resources {
        Matcher::Positive(list) => list.iter().any(one),
        Matcher::Negative(list) => !list.iter().any(one),
    }
}

fn arn_or_star(pattern: &str, resource: &str) -> bool {
    if resource == "*" {
        // An action without resource-level permissions: only `*` names it.
        pattern == "*"
    } else {
        arn_matches(pattern, resource)
    }
}

fn applies(doc: &PolicyDocument, s: &Statement, ctx: &RequestContext<'_>) -> bool {
    if !action_matches(&s.actions, ctx.action) {
        return false;
    }
    if let Some(resources) = &s.resources {
        if !resource_matches(doc, resources, ctx.resource, ctx.keys) {
            return false;
        }
    }
    s.conditions
        .iter()
        .all(|c| condition_holds(doc, c, ctx.keys))
}

/// Replaces policy variables (`${aws:username}`, `${*}`, ...). None: a variable the request
/// does not have (the pattern then matches nothing).
pub fn substitute<'a>(s: &'a str, keys: &ContextKeys) -> Option<Cow<'a, str>> {
    if !s.contains("${") {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            // Unterminated: literal text.
            out.push_str(&rest[i..]);
            return Some(Cow::Owned(out));
        };
        let name = after[..end].trim();
        match name {
            "*" => out.push('*'),
            "?" => out.push('?'),
            "$" => out.push('$'),
            _ => match keys.get(name)? {
                ContextValue::One(v) => out.push_str(v),
                ContextValue::Many(_) => return None,
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A date as IAM accepts it: ISO 8601 / RFC 3339, or seconds since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis());
    }
    s.parse::<i64>().ok().map(|secs| secs.saturating_mul(1000))
}

fn ip_in(cidr: &str, ip: &str) -> bool {
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return false;
    };
    let (net, bits) = match cidr.trim().split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (cidr.trim(), None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

/// The positive form of an operator: does request value `v` match policy value `p`?
fn positive(base: BaseOp, v: &str, p: &str) -> bool {
    use BaseOp::*;
    match base {
        StringEquals | StringNotEquals => v == p,
        StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => v.to_lowercase() == p.to_lowercase(),
        StringLike | StringNotLike => matches(p, v, false),
        NumericEquals | NumericNotEquals => {
            matches!((parse_number(v), parse_number(p)), (Some(a), Some(b)) if a == b)
        }
        NumericLessThan => {
            matches!((parse_number(v), parse_number(p)), (Some(a), Some(b)) if a < b)
        }
        NumericLessThanEquals => {
            matches!((parse_number(v), parse_number(p)), (Some(a), Some(b)) if a <= b)
        }
        NumericGreaterThan => {
            matches!((parse_number(v), parse_number(p)), (Some(a), Some(b)) if a > b)
        }
        NumericGreaterThanEquals => {
            matches!((parse_number(v), parse_number(p)), (Some(a), Some(b)) if a >= b)
        }
        DateEquals | DateNotEquals => {
            matches!((parse_date(v), parse_date(p)), (Some(a), Some(b)) if a == b)
        }
        DateLessThan => matches!((parse_date(v), parse_date(p)), (Some(a), Some(b)) if a < b),
        DateLessThanEquals => {
            matches!((parse_date(v), parse_date(p)), (Some(a), Some(b)) if a <= b)
        }
        DateGreaterThan => matches!((parse_date(v), parse_date(p)), (Some(a), Some(b)) if a > b),
        DateGreaterThanEquals => {
            matches!((parse_date(v), parse_date(p)), (Some(a), Some(b)) if a >= b)
        }
        Bool => v.eq_ignore_ascii_case(p),
        IpAddress | NotIpAddress => ip_in(p, v),
        ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => arn_matches(p, v),
        Null => false,
    }
}

/// Whether one request value satisfies the operator against the policy's values.
fn value_satisfies(base: BaseOp, v: &str, policy: &[Cow<'_, str>]) -> bool {
    let any = policy.iter().any(|p| positive(base, v, p));
    if base.is_negated() {
        !any
    } else {
        any
    }
}

fn condition_holds(doc: &PolicyDocument, c: &Condition, keys: &ContextKeys) -> bool {
    let op = c.operator;
    let present = keys.get(&c.key_lower);
    if op.base == BaseOp::Null {
        let absent = match present {
            None => true,
            Some(ContextValue::Many(v)) => v.is_empty(),
            Some(ContextValue::One(_)) => false,
        };
        return c
            .values
            .iter()
            .any(|v| v.eq_ignore_ascii_case("true") == absent);
    }
    let values: Vec<&str> = match present {
        None => Vec::new(),
        Some(ContextValue::One(s)) => vec![s.as_str()],
        Some(ContextValue::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    if values.is_empty() {
        if op.if_exists {
            return true;
        }
        return match op.set {
            Some(SetOp::ForAllValues) => true,
            Some(SetOp::ForAnyValue) => false,
            None => op.base.is_negated(),
        };
    }
    let substitutes = doc.has_variables()
        && matches!(
            op.base,
            BaseOp::StringEquals
                | BaseOp::StringNotEquals
                | BaseOp::StringEqualsIgnoreCase
                | BaseOp::StringNotEqualsIgnoreCase
                | BaseOp::StringLike
                | BaseOp::StringNotLike
                | BaseOp::ArnEquals
                | BaseOp::ArnLike
                | BaseOp::ArnNotEquals
                | BaseOp::ArnNotLike
        );
    let policy: Vec<Cow<'_, str>> = if substitutes {
        c.values
            .iter()
            .filter_map(|v| substitute(v, keys))
            .collect()
    } else {
        c.values.iter().map(|v| Cow::Borrowed(v.as_str())).collect()
    };
    let one = |v: &&str| value_satisfies(op.base, v, &policy);
    match op.set {
        Some(SetOp::ForAnyValue) => values.iter().any(one),
        Some(SetOp::ForAllValues) => values.iter().all(one),
        // A multivalued key without a set operator: positive operators need one value to
        // match, negated ones need every value to stay clear.
        None if op.base.is_negated() => values.iter().all(one),
        None => values.iter().any(one),
    }
}

/// Who is asking to assume a role, for a trust policy.
#[derive(Debug, Clone, Copy)]
pub struct TrustCaller<'a> {
    /// The ARNs that name the caller: a user's ARN; for a role session, the session's
    /// `assumed-role` ARN and the role's ARN.
    pub arns: &'a [&'a str],
    pub account: &'a str,
    /// Service principals the caller acts as (`ecs-tasks.amazonaws.com`), if any.
    pub services: &'a [&'a str],
}

/// The outcome of a trust policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustDecision {
    /// A statement denies.
    Denied,
    /// An allowing statement names the caller itself: no identity policy needed.
    AllowedByName,
    /// An allowing statement names the caller's account (or `*`): the caller's identity
    /// policies must allow the action too.
    AllowedByAccount,
    /// Nothing allows.
    NotAllowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalMatch {
    No,
    Account,
    Name,
}

fn principal_match(p: &Principals, caller: &TrustCaller<'_>) -> PrincipalMatch {
    match p {
        Principals::Any => PrincipalMatch::Account,
        Principals::Listed(kinds) => {
            let mut best = PrincipalMatch::No;
            for (kind, values) in kinds {
                if kind == "Service" {
                    if values.iter().any(|v| caller.services.contains(&v.as_str())) {
                        return PrincipalMatch::Name;
                    }
                    continue;
                }
                if kind != "AWS" {
                    continue;
                }
                for v in values {
                    if caller.arns.iter().any(|a| a == v) {
                        return PrincipalMatch::Name;
                    }
                    let root = format!("arn:aws:iam::{}:root", caller.account);
                    if v == caller.account || *v == root {
                        best = PrincipalMatch::Account;
                    }
                }
            }
            best
        }
    }
}

/// Evaluates a role's trust policy for `sts:AssumeRole` (or another `ctx.action`).
pub fn evaluate_trust(
    doc: &PolicyDocument,
    caller: &TrustCaller<'_>,
    ctx: &RequestContext<'_>,
) -> TrustDecision {
    let mut best = TrustDecision::NotAllowed;
    for s in &doc.statements {
        let m = match &s.principals {
            Some(Matcher::Positive(p)) => principal_match(p, caller),
            Some(Matcher::Negative(p)) => match principal_match(p, caller) {
                PrincipalMatch::No => PrincipalMatch::Account,
                _ => PrincipalMatch::No,
            },
            None => PrincipalMatch::No,
        };
        if m == PrincipalMatch::No || !action_matches(&s.actions, ctx.action) {
            continue;
        }
        if !s
            .conditions
            .iter()
            .all(|c| condition_holds(doc, c, ctx.keys))
        {
            continue;
        }
        match s.effect {
            Effect::Deny => return TrustDecision::Denied,
            Effect::Allow => {
                if m == PrincipalMatch::Name {
                    best = TrustDecision::AllowedByName;
                } else if best == TrustDecision::NotAllowed {
                    best = TrustDecision::AllowedByAccount;
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::{parse, PolicyKind};
    use super::*;

    fn decide(policy: &str, action: &str, resource: &str, keys: &ContextKeys) -> Decision {
        let doc = parse(policy, PolicyKind::Identity).unwrap();
        evaluate(
            [&doc],
            &RequestContext {
                action,
                resource,
                keys,
            },
        )
    }

    const A: &str = "arn:aws:ecs:us-east-1:1:cluster/a";
    const B: &str = "arn:aws:ecs:us-east-1:1:cluster/b";

    #[test]
    fn default_deny_allow_and_explicit_deny() {
        let k = ContextKeys::new();
        let allow_all = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#;
        assert_eq!(decide(allow_all, "ecs:RunTask", A, &k), Decision::Allow);
        let nothing = r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#;
        assert_eq!(
            decide(nothing, "ecs:RunTask", A, &k),
            Decision::ImplicitDeny
        );
        let deny_wins = r#"{"Statement":[
            {"Effect":"Allow","Action":"ecs:*","Resource":"*"},
            {"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}"#;
        assert_eq!(
            decide(deny_wins, "ecs:DescribeClusters", A, &k),
            Decision::Allow
        );
        assert_eq!(
            decide(deny_wins, "ecs:DeleteCluster", A, &k),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let k = ContextKeys::new();
        let p = r#"{"Statement":{"Effect":"Allow","NotAction":"ecs:Delete*","NotResource":"arn:aws:ecs:*:*:cluster/b"}}"#;
        assert_eq!(decide(p, "ecs:DescribeClusters", A, &k), Decision::Allow);
        assert_eq!(
            decide(p, "ecs:DeleteCluster", A, &k),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(p, "ecs:DescribeClusters", B, &k),
            Decision::ImplicitDeny
        );
        // An action without resource-level permissions (resource `*`) is not the excluded
        // resource, so NotResource covers it; a positive Resource needs `*` itself.
        assert_eq!(decide(p, "ecs:ListClusters", "*", &k), Decision::Allow);
        let only_a = r#"{"Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/*"}}"#;
        assert_eq!(
            decide(only_a, "ecs:ListClusters", "*", &k),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditions_and_their_modifiers() {
        let mut k = ContextKeys::new();
        k.set_one("ecs:cluster", A);
        let p = r#"{"Statement":{"Effect":"Allow","Action":"ecs:RunTask","Resource":"*",
            "Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:1:cluster/a"}}}}"#;
        assert_eq!(decide(p, "ecs:RunTask", "*", &k), Decision::Allow);
        let mut kb = ContextKeys::new();
        kb.set_one("ecs:cluster", B);
        assert_eq!(decide(p, "ecs:RunTask", "*", &kb), Decision::ImplicitDeny);
        assert_eq!(
            decide(p, "ecs:RunTask", "*", &ContextKeys::new()),
            Decision::ImplicitDeny
        );

        // Negated operators are satisfied by a missing key; IfExists by any missing key.
        let neg = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"StringNotEquals":{"aws:ResourceTag/env":"prod"}}}}"#;
        assert_eq!(
            decide(neg, "ecs:StopTask", "*", &ContextKeys::new()),
            Decision::Allow
        );
        let mut prod = ContextKeys::new();
        prod.set_one("aws:ResourceTag/env", "prod");
        assert_eq!(
            decide(neg, "ecs:StopTask", "*", &prod),
            Decision::ImplicitDeny
        );
        let if_exists = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"StringEqualsIfExists":{"aws:ResourceTag/env":"dev"}}}}"#;
        assert_eq!(
            decide(if_exists, "x:y", "*", &ContextKeys::new()),
            Decision::Allow
        );
        assert_eq!(decide(if_exists, "x:y", "*", &prod), Decision::ImplicitDeny);

        // Multivalued keys.
        let mut tags = ContextKeys::new();
        tags.set_many("aws:TagKeys", vec!["team".into(), "env".into()]);
        let all = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["team","env","cost"]}}}}"#;
        assert_eq!(decide(all, "x:y", "*", &tags), Decision::Allow);
        assert_eq!(
            decide(all, "x:y", "*", &ContextKeys::new()),
            Decision::Allow
        );
        let mut extra = ContextKeys::new();
        extra.set_many("aws:TagKeys", vec!["team".into(), "owner".into()]);
        assert_eq!(decide(all, "x:y", "*", &extra), Decision::ImplicitDeny);
        let any = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"own*"}}}}"#;
        assert_eq!(decide(any, "x:y", "*", &extra), Decision::Allow);
        assert_eq!(decide(any, "x:y", "*", &tags), Decision::ImplicitDeny);
        assert_eq!(
            decide(any, "x:y", "*", &ContextKeys::new()),
            Decision::ImplicitDeny
        );

        // Null, Bool, keys ANDed, values ORed.
        let null = r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*",
            "Condition":{"Null":{"aws:RequestTag/team":"true"}}}}"#;
        assert_eq!(
            decide(null, "x:y", "*", &ContextKeys::new()),
            Decision::ExplicitDeny
        );
        let mut team = ContextKeys::new();
        team.set_one("aws:RequestTag/team", "a");
        assert_eq!(decide(null, "x:y", "*", &team), Decision::ImplicitDeny);
        let mut secure = ContextKeys::new();
        secure.set_one("aws:SecureTransport", "false");
        let boolp = r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*",
            "Condition":{"Bool":{"aws:SecureTransport":false}}}}"#;
        assert_eq!(decide(boolp, "x:y", "*", &secure), Decision::ExplicitDeny);
        let and_or = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"StringEquals":{"aws:RequestTag/team":["a","b"],"aws:RequestTag/env":"dev"}}}}"#;
        assert_eq!(decide(and_or, "x:y", "*", &team), Decision::ImplicitDeny);
        team.set_one("aws:RequestTag/env", "dev");
        assert_eq!(decide(and_or, "x:y", "*", &team), Decision::Allow);
    }

    #[test]
    fn policy_variables() {
        let mut k = ContextKeys::new();
        k.set_one("aws:username", "alice");
        let p = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iam:*AccessKey*",
            "Resource":"arn:aws:iam::1:user/${aws:username}"}}"#;
        assert_eq!(
            decide(p, "iam:CreateAccessKey", "arn:aws:iam::1:user/alice", &k),
            Decision::Allow
        );
        assert_eq!(
            decide(p, "iam:CreateAccessKey", "arn:aws:iam::1:user/bob", &k),
            Decision::ImplicitDeny
        );
        // Version 2008-10-17 has no variables: the text is literal.
        let old = p.replace("2012-10-17", "2008-10-17");
        assert_eq!(
            decide(&old, "iam:CreateAccessKey", "arn:aws:iam::1:user/alice", &k),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn numbers_dates_and_addresses() {
        assert!(positive(BaseOp::NumericLessThan, "3", "10"));
        assert!(!positive(BaseOp::NumericLessThan, "x", "10"));
        assert!(positive(
            BaseOp::DateGreaterThan,
            "2024-01-02T00:00:00Z",
            "2024-01-01T00:00:00Z"
        ));
        assert!(positive(
            BaseOp::DateLessThan,
            "1700000000",
            "2024-01-01T00:00:00Z"
        ));
        assert!(ip_in("10.0.0.0/8", "10.2.3.4"));
        assert!(!ip_in("10.0.0.0/8", "11.2.3.4"));
        assert!(ip_in("::1/128", "::1"));
    }

    #[test]
    fn trust_policies() {
        let doc = parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:user/alice"},"Action":"sts:AssumeRole"},
                {"Effect":"Allow","Principal":{"AWS":"1"},"Action":"sts:AssumeRole"},
                {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::1:user/mallory"},"Action":"sts:AssumeRole"}]}"#,
            PolicyKind::Trust,
        )
        .unwrap();
        let k = ContextKeys::new();
        let ctx = RequestContext {
            action: "sts:AssumeRole",
            resource: "arn:aws:iam::1:role/r",
            keys: &k,
        };
        let who = |arn: &'static str| TrustCaller {
            arns: Box::leak(Box::new([arn])),
            account: "1",
            services: &[],
        };
        assert_eq!(
            evaluate_trust(&doc, &who("arn:aws:iam::1:user/alice"), &ctx),
            TrustDecision::AllowedByName
        );
        assert_eq!(
            evaluate_trust(&doc, &who("arn:aws:iam::1:user/bob"), &ctx),
            TrustDecision::AllowedByAccount
        );
        assert_eq!(
            evaluate_trust(&doc, &who("arn:aws:iam::1:user/mallory"), &ctx),
            TrustDecision::Denied
        );
        let other = TrustCaller {
            arns: &["arn:aws:iam::2:user/eve"],
            account: "2",
            services: &[],
        };
        assert_eq!(
            evaluate_trust(&doc, &other, &ctx),
            TrustDecision::NotAllowed
        );
    }
}
