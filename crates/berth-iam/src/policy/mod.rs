//! IAM policy documents: parsing and validation (`parse`), and evaluation (`eval`).
//!
//! A document is parsed once, when it is stored, into typed statements; a request is then
//! evaluated against the parsed form. Parsing refuses what IAM refuses
//! (`MalformedPolicyDocument`) and never panics on hostile input (proptest'ed).

pub mod eval;
pub mod wildcard;

use serde_json::Value;

use crate::error::IamError;

pub use eval::{evaluate, evaluate_trust, ContextKeys, ContextValue, Decision, RequestContext};

/// Which rules a document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user or role: no `Principal`, `Resource` required.
    Identity,
    /// A role's trust policy (who may assume it): `Principal` required, no `Resource`.
    Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`NotAction`, `Resource`/`NotResource`, `Principal`/`NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher<T> {
    /// Matches what one of the patterns matches.
    Positive(T),
    /// Matches what none of the patterns matches.
    Negative(T),
}

/// A `Principal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `"*"` (or `{"AWS": "*"}`): anyone.
    Any,
    /// `{"AWS": [...], "Service": [...], ...}`: type and values.
    Listed(Vec<(String, Vec<String>)>),
}

/// A condition operator's base comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOp {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl BaseOp {
    fn parse(s: &str) -> Option<Self> {
        use BaseOp::*;
        Some(match s {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "DateEquals" => DateEquals,
            "DateNotEquals" => DateNotEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "Bool" => Bool,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "ArnEquals" => ArnEquals,
            "ArnLike" => ArnLike,
            "ArnNotEquals" => ArnNotEquals,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Negated operators: a request without the key satisfies them.
    pub fn is_negated(self) -> bool {
        use BaseOp::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

/// `ForAnyValue:` / `ForAllValues:` (multivalued keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    pub base: BaseOp,
    pub if_exists: bool,
    pub set: Option<SetOp>,
}

impl Operator {
    /// Parses `[ForAnyValue:|ForAllValues:]<Op>[IfExists]`.
    pub fn parse(s: &str) -> Option<Self> {
        let (set, rest) = if let Some(r) = s.strip_prefix("ForAnyValue:") {
            (Some(SetOp::ForAnyValue), r)
        } else if let Some(r) = s.strip_prefix("ForAllValues:") {
            (Some(SetOp::ForAllValues), r)
        } else {
            (None, s)
        };
        let (if_exists, rest) = match rest.strip_suffix("IfExists") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let base = BaseOp::parse(rest)?;
        if base == BaseOp::Null && (if_exists || set.is_some()) {
            return None;
        }
        Some(Self {
            base,
            if_exists,
            set,
        })
    }
}

/// One `"<operator>": {"<key>": [values]}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub operator: Operator,
    /// The key as written (`aws:ResourceTag/team`).
    pub key: String,
    /// The key lower-cased (keys are case-insensitive).
    pub key_lower: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principals: Option<Matcher<Principals>>,
    pub actions: Matcher<Vec<String>>,
    pub resources: Option<Matcher<Vec<String>>>,
    pub conditions: Vec<Condition>,
}

/// A parsed, valid policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    /// `2012-10-17` (policy variables) or `2008-10-17` (none); absent means 2008-10-17.
    pub version: Option<String>,
    pub statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Whether policy variables (`${aws:username}`) are substituted: Version 2012-10-17.
    pub fn has_variables(&self) -> bool {
        self.version.as_deref() == Some("2012-10-17")
    }

    /// Whether a statement tests a global key of the caller (an `aws:` key other than the
    /// request's tags and the resource's) or uses a policy variable.
    pub fn uses_global_keys(&self) -> bool {
        self.statements.iter().any(|s| {
            s.conditions.iter().any(|c| {
                (c.key_lower.starts_with("aws:")
                    && !c.key_lower.starts_with("aws:resourcetag/")
                    && !c.key_lower.starts_with("aws:requesttag/")
                    && c.key_lower != "aws:tagkeys")
                    || c.values.iter().any(|v| v.contains("${"))
            }) || match &s.resources {
                Some(Matcher::Positive(r) | Matcher::Negative(r)) => {
                    r.iter().any(|p| p.contains("${"))
                }
                None => false,
            }
        })
    }

    /// Whether any statement has a condition on a key starting with `prefix` (lower case).
    pub fn uses_key_prefix(&self, prefix: &str) -> bool {
        self.statements
            .iter()
            .any(|s| s.conditions.iter().any(|c| c.key_lower.starts_with(prefix)))
    }
}

fn malformed(message: impl Into<String>) -> IamError {
    IamError::malformed_policy(message)
}

/// A string or an array of strings (IAM's "one or many").
fn strings(value: &Value, what: &str) -> Result<Vec<String>, IamError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(malformed(format!(
                    "Syntax errors in policy. {what} must be a string or an array of strings."
                ))),
            })
            .collect(),
        _ => Err(malformed(format!(
            "Syntax errors in policy. {what} must be a string or a non-empty array of strings."
        ))),
    }
}

/// Condition values may be strings, numbers or booleans (IAM compares them as text).
fn condition_values(value: &Value) -> Result<Vec<String>, IamError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(malformed(
            "Syntax errors in policy. Condition values must be strings, numbers or booleans.",
        )),
    };
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().map(one).collect(),
        Value::Array(_) => Err(malformed(
            "Syntax errors in policy. A condition key needs at least one value.",
        )),
        other => Ok(vec![one(other)?]),
    }
}

fn valid_action(a: &str) -> bool {
    if a == "*" {
        return true;
    }
    match a.split_once(':') {
        Some((vendor, action)) => {
            !vendor.is_empty()
                && vendor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !action.is_empty()
                && !action.contains(':')
        }
        None => false,
    }
}

fn valid_resource(r: &str) -> bool {
    r == "*" || (r.starts_with("arn:") && r.splitn(6, ':').count() == 6)
}

fn parse_principals(value: &Value) -> Result<Principals, IamError> {
    match value {
        Value::String(s) if s == "*" => Ok(Principals::Any),
        Value::Object(map) if !map.is_empty() => {
            let mut listed = Vec::new();
            for (kind, values) in map {
                if !matches!(
                    kind.as_str(),
                    "AWS" | "Service" | "Federated" | "CanonicalUser"
                ) {
                    return Err(malformed(format!(
                        "Invalid principal in policy: \"{kind}\""
                    )));
                }
                let values = strings(values, "Principal")?;
                if kind == "AWS" && values.iter().any(|v| v == "*") {
                    return Ok(Principals::Any);
                }
                listed.push((kind.clone(), values));
            }
            Ok(Principals::Listed(listed))
        }
        _ => Err(malformed("Invalid principal in policy.")),
    }
}

fn parse_statement(value: &Value, kind: PolicyKind) -> Result<Statement, IamError> {
    let Value::Object(map) = value else {
        return Err(malformed(
            "Syntax errors in policy. A statement must be an object.",
        ));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(malformed(format!(
                "Syntax errors in policy. Unknown field {key} in a statement."
            )));
        }
    }
    let sid = match map.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed("Syntax errors in policy. Sid must be a string.")),
    };
    let effect = match map.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(Value::String(s)) => return Err(malformed(format!("Invalid effect: {s}"))),
        _ => return Err(malformed("Missing required field Effect")),
    };
    let actions =
        match (map.get("Action"), map.get("NotAction")) {
            (Some(a), None) => Matcher::Positive(strings(a, "Action")?),
            (None, Some(a)) => Matcher::Negative(strings(a, "NotAction")?),
            (None, None) => return Err(malformed("Policy statement must contain actions.")),
            (Some(_), Some(_)) => return Err(malformed(
                "Syntax errors in policy. A statement has either Action or NotAction, not both.",
            )),
        };
    match &actions {
        Matcher::Positive(list) | Matcher::Negative(list) => {
            if let Some(bad) = list.iter().find(|a| !valid_action(a)) {
                return Err(malformed(format!(
                    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. (got '{bad}')"
                )));
            }
        }
    }
    let resources = match (map.get("Resource"), map.get("NotResource")) {
        (Some(r), None) => Some(Matcher::Positive(strings(r, "Resource")?)),
        (None, Some(r)) => Some(Matcher::Negative(strings(r, "NotResource")?)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(malformed(
            "Syntax errors in policy. A statement has either Resource or NotResource, not both.",
        )),
    };
    if let Some(Matcher::Positive(list) | Matcher::Negative(list)) = &resources {
        if let Some(bad) = list.iter().find(|r| !valid_resource(r)) {
            return Err(malformed(format!(
                "Resource {bad} must be in ARN format or \"*\"."
            )));
        }
    }
    let principals = match (map.get("Principal"), map.get("NotPrincipal")) {
        (Some(p), None) => Some(Matcher::Positive(parse_principals(p)?)),
        (None, Some(p)) => Some(Matcher::Negative(parse_principals(p)?)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(malformed(
            "Syntax errors in policy. A statement has either Principal or NotPrincipal, not both.",
        )),
    };
    match kind {
        PolicyKind::Identity => {
            if principals.is_some() {
                return Err(malformed("Policy document should not specify a principal."));
            }
            if resources.is_none() {
                return Err(malformed("Policy statement must contain resources."));
            }
        }
        PolicyKind::Trust => {
            if principals.is_none() {
                return Err(malformed("Missing required field Principal"));
            }
            if resources.is_some() {
                return Err(malformed("Has prohibited field Resource"));
            }
        }
    }
    let mut conditions = Vec::new();
    match map.get("Condition") {
        None => {}
        Some(Value::Object(ops)) => {
            for (op, keys) in ops {
                let operator = Operator::parse(op)
                    .ok_or_else(|| malformed(format!("Invalid Condition type : {op}")))?;
                let Value::Object(keys) = keys else {
                    return Err(malformed(format!(
                        "Syntax errors in policy. Condition {op} must map keys to values."
                    )));
                };
                for (key, values) in keys {
                    if key.is_empty() {
                        return Err(malformed("Syntax errors in policy. Empty condition key."));
                    }
                    conditions.push(Condition {
                        operator,
                        key: key.clone(),
                        key_lower: key.to_ascii_lowercase(),
                        values: condition_values(values)?,
                    });
                }
            }
        }
        Some(_) => {
            return Err(malformed(
                "Syntax errors in policy. Condition must be an object.",
            ))
        }
    }
    Ok(Statement {
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

/// Parses and validates a policy document.
pub fn parse(text: &str, kind: PolicyKind) -> Result<PolicyDocument, IamError> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| malformed("Syntax errors in policy."))?;
    let Value::Object(map) = &value else {
        return Err(malformed("Syntax errors in policy."));
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(malformed(format!(
                "Syntax errors in policy. Unknown field {key}."
            )));
        }
    }
    let version = match map.get("Version") {
        None => None,
        Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => Some(v.clone()),
        Some(_) => return Err(malformed("The policy failed legacy parsing")),
    };
    let statements = match map.get("Statement") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|s| parse_statement(s, kind))
            .collect::<Result<Vec<_>, _>>()?,
        Some(single @ Value::Object(_)) => vec![parse_statement(single, kind)?],
        Some(_) => return Err(malformed("Syntax errors in policy. Statement is empty.")),
        None => return Err(malformed("Missing required field Statement")),
    };
    Ok(PolicyDocument {
        version,
        statements,
    })
}

/// The size IAM counts for its quotas: characters other than white space.
pub fn counted_size(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_identity_policy() {
        let doc = parse(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"a","Effect":"Allow",
                "Action":["ecs:RunTask","ecs:Describe*"],
                "Resource":"arn:aws:ecs:*:*:task-definition/*",
                "Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:1:cluster/a"},
                             "ForAllValues:StringLike":{"aws:TagKeys":["team","env*"]},
                             "Bool":{"aws:SecureTransport":false}}}]}"#,
            PolicyKind::Identity,
        )
        .unwrap();
        let s = &doc.statements[0];
        assert_eq!(s.effect, Effect::Allow);
        assert_eq!(s.conditions.len(), 3);
        assert!(doc.uses_key_prefix("aws:tagkeys"));
        let bool_cond = s
            .conditions
            .iter()
            .find(|c| c.operator.base == BaseOp::Bool)
            .unwrap();
        assert_eq!(bool_cond.values, vec!["false"]);
    }

    #[test]
    fn refuses_what_iam_refuses() {
        let bad = [
            ("not json", "Syntax errors"),
            ("[]", "Syntax errors"),
            (r#"{"Statement":[]}"#, "Statement is empty"),
            (
                r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
                "legacy",
            ),
            (
                r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#,
                "Invalid effect",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
                "must contain actions",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
                "must contain resources",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"RunTask","Resource":"*"}}"#,
                "vendor",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"cluster/a"}}"#,
                "ARN format",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}}"#,
                "principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSorta":{"a:b":"c"}}}}"#,
                "Invalid Condition type",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Foo":1}}"#,
                "Unknown field",
            ),
        ];
        for (text, needle) in bad {
            let e = parse(text, PolicyKind::Identity).unwrap_err();
            assert_eq!(e.code, "MalformedPolicyDocument");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    #[test]
    fn trust_policies_need_principals_and_no_resources() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"sts:AssumeRole"}]}"#;
        let doc = parse(ok, PolicyKind::Trust).unwrap();
        assert!(matches!(
            doc.statements[0].principals,
            Some(Matcher::Positive(Principals::Listed(_)))
        ));
        let e = parse(
            r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#,
            PolicyKind::Trust,
        )
        .unwrap_err();
        assert!(e.message.contains("Principal"));
        let e = parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","Resource":"*"}}"#,
            PolicyKind::Trust,
        )
        .unwrap_err();
        assert!(e.message.contains("prohibited field Resource"));
    }

    #[test]
    fn operators_parse_with_their_modifiers() {
        let op = Operator::parse("ForAllValues:StringNotLikeIfExists").unwrap();
        assert_eq!(op.base, BaseOp::StringNotLike);
        assert!(op.if_exists);
        assert_eq!(op.set, Some(SetOp::ForAllValues));
        assert!(Operator::parse("NullIfExists").is_none());
        assert!(Operator::parse("StringEqualz").is_none());
    }
}
