//! Property tests of the policy parser and evaluator: no input makes them panic, the
//! wildcard matcher agrees with a naive reference, and an explicit deny always wins.

use berth_iam::policy::wildcard::matches;
use berth_iam::policy::{evaluate, parse, ContextKeys, Decision, PolicyKind, RequestContext};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The obvious exponential matcher, for small inputs.
fn reference(p: &[char], v: &[char]) -> bool {
    match (p.first(), v.first()) {
        (None, None) => true,
        (Some('*'), _) => reference(&p[1..], v) || (!v.is_empty() && reference(p, &v[1..])),
        (Some('?'), Some(_)) => reference(&p[1..], &v[1..]),
        (Some(a), Some(b)) if a == b => reference(&p[1..], &v[1..]),
        _ => false,
    }
}

fn vocabulary() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Version".to_string()),
        Just("Statement".to_string()),
        Just("Effect".to_string()),
        Just("Action".to_string()),
        Just("NotAction".to_string()),
        Just("Resource".to_string()),
        Just("NotResource".to_string()),
        Just("Condition".to_string()),
        Just("Principal".to_string()),
        Just("Sid".to_string()),
        Just("StringEquals".to_string()),
        Just("ForAllValues:StringLike".to_string()),
        Just("ArnLikeIfExists".to_string()),
        Just("Null".to_string()),
        Just("Bool".to_string()),
        Just("NumericLessThan".to_string()),
        Just("ecs:cluster".to_string()),
        Just("aws:TagKeys".to_string()),
        "[A-Za-z:/*?${}]{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("Allow")),
        Just(json!("Deny")),
        Just(json!("*")),
        Just(json!("2012-10-17")),
        Just(json!("ecs:*")),
        Just(json!("arn:aws:ecs:*:*:cluster/${aws:username}")),
        Just(json!("arn:aws:ecs:us-east-1:1:cluster/a")),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,16}".prop_map(Value::String),
        Just(Value::Null),
    ]
}

fn policy_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((vocabulary(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn context() -> impl Strategy<Value = ContextKeys> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("ecs:cluster"),
                Just("aws:TagKeys"),
                Just("aws:username"),
                Just("aws:ResourceTag/team")
            ],
            proptest::collection::vec("[a-z*:/]{0,10}", 0..3),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut k = ContextKeys::new();
        for (key, values) in pairs {
            if values.len() == 1 {
                k.set_one(key, values[0].clone());
            } else {
                k.set_many(key, values);
            }
        }
        k
    })
}

fn valid_policy() -> impl Strategy<Value = Value> {
    let statement = (
        prop_oneof![Just("Allow"), Just("Deny")],
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![
                Just("ecs:*"),
                Just("ecs:RunTask"),
                Just("ecs:Describe*"),
                Just("*"),
                Just("iam:?et*")
            ],
            1..3,
        ),
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![
                Just("*"),
                Just("arn:aws:ecs:*:*:cluster/a"),
                Just("arn:aws:ecs:us-east-1:1:*/${aws:username}")
            ],
            1..3,
        ),
        proptest::option::of((
            prop_oneof![
                Just("StringEquals"),
                Just("StringNotLike"),
                Just("ArnLikeIfExists"),
                Just("ForAnyValue:StringEquals"),
                Just("ForAllValues:StringLike"),
                Just("Null"),
                Just("Bool")
            ],
            prop_oneof![
                Just("ecs:cluster"),
                Just("aws:TagKeys"),
                Just("aws:username")
            ],
            proptest::collection::vec("[a-z*:/]{0,10}", 1..3),
        )),
    )
        .prop_map(
            |(effect, not_action, actions, not_resource, resources, condition)| {
                let mut st = serde_json::Map::new();
                st.insert("Effect".into(), json!(effect));
                st.insert(
                    if not_action { "NotAction" } else { "Action" }.into(),
                    json!(actions),
                );
                st.insert(
                    if not_resource {
                        "NotResource"
                    } else {
                        "Resource"
                    }
                    .into(),
                    json!(resources),
                );
                if let Some((op, key, values)) = condition {
                    let values = if op == "Null" || op == "Bool" {
                        json!(["true"])
                    } else {
                        json!(values)
                    };
                    st.insert("Condition".into(), json!({ op: { key: values } }));
                }
                Value::Object(st)
            },
        );
    (any::<bool>(), proptest::collection::vec(statement, 1..4)).prop_map(|(v2012, statements)| {
        if v2012 {
            json!({"Version": "2012-10-17", "Statement": statements})
        } else {
            json!({"Statement": statements})
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn valid_documents_parse_and_deny_wins(doc in valid_policy(), keys in context(),
            action in prop_oneof![Just("ecs:RunTask"), Just("ecs:DescribeClusters"), Just("iam:GetUser"), Just("s3:GetObject")],
            resource in prop_oneof![Just("*"), Just("arn:aws:ecs:us-east-1:1:cluster/a"), Just("arn:aws:ecs:us-east-1:1:cluster/b")]) {
        let parsed = parse(&doc.to_string(), PolicyKind::Identity).unwrap();
        let ctx = RequestContext { action, resource, keys: &keys };
        let d = evaluate([&parsed], &ctx);
        let has_deny = parsed.statements.iter().any(|s| s.effect == berth_iam::policy::Effect::Deny);
        if d == Decision::ExplicitDeny {
            prop_assert!(has_deny);
        }
        let deny = parse(r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#, PolicyKind::Identity).unwrap();
        prop_assert_eq!(evaluate([&parsed, &deny], &ctx), Decision::ExplicitDeny);
        // Statement order does not matter.
        let mut reversed = parsed.clone();
        reversed.statements.reverse();
        prop_assert_eq!(evaluate([&reversed], &ctx), d);
    }

    #[test]
    fn parser_survives_any_text(text in ".{0,400}") {
        let _ = parse(&text, PolicyKind::Identity);
        let _ = parse(&text, PolicyKind::Trust);
    }

    #[test]
    fn parser_and_evaluator_survive_any_document(doc in policy_value(), keys in context(),
            action in "[a-z]{1,5}:[A-Za-z*]{1,8}", resource in "(\\*|arn:aws:ecs:us-east-1:1:[a-z/]{1,12})") {
        let text = doc.to_string();
        let _ = parse(&text, PolicyKind::Trust);
        if let Ok(parsed) = parse(&text, PolicyKind::Identity) {
            let ctx = RequestContext { action: &action, resource: &resource, keys: &keys };
            let d = evaluate([&parsed], &ctx);
            // An explicit deny of everything always wins over whatever this document says.
            let deny = parse(r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#, PolicyKind::Identity).unwrap();
            prop_assert_eq!(evaluate([&parsed, &deny], &ctx), Decision::ExplicitDeny);
            prop_assert_eq!(evaluate([&deny, &parsed], &ctx), Decision::ExplicitDeny);
            // Adding an allow never turns an explicit deny into an allow.
            let allow = parse(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#, PolicyKind::Identity).unwrap();
            let with_allow = evaluate([&parsed, &allow], &ctx);
            if d == Decision::ExplicitDeny {
                prop_assert_eq!(with_allow, Decision::ExplicitDeny);
            } else {
                prop_assert_eq!(with_allow, Decision::Allow);
            }
        }
    }

    #[test]
    fn wildcard_matches_reference(p in "[ab*?]{0,8}", v in "[ab]{0,10}") {
        let pc: Vec<char> = p.chars().collect();
        let vc: Vec<char> = v.chars().collect();
        prop_assert_eq!(matches(&p, &v, false), reference(&pc, &vc));
    }

    #[test]
    fn hostile_wildcards_are_fast(n in 1usize..40) {
        let p = "*a".repeat(n) + "b";
        let v = "a".repeat(4000);
        let start = std::time::Instant::now();
        prop_assert!(!matches(&p, &v, false));
        prop_assert!(start.elapsed() < std::time::Duration::from_millis(500));
    }
}
