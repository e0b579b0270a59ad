//! Harnesses for the two parsers that read attacker-controlled input before anything is
//! authenticated: SigV4 (`sigv4::parse`, `check_time`, `verify`) and policy documents
//! (`policy::parse`, `evaluate`). Each takes raw bytes and panics only when an invariant
//! breaks, so the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) and the proptests in
//! `tests/fuzz_props.rs` (stable, CI) exercise the same code with the same checks.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::policy::{self, ContextKeys, Decision, PolicyKind, RequestContext};
use crate::sigv4::{self, RequestView, SignatureForm};

/// A secret no fuzz input was signed with: nothing may verify against it.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// Splits fuzz bytes into a request: the first line is the query string, the next lines
/// (up to an empty line) are `name: value` headers, the rest is the body.
pub fn request_parts(data: &[u8]) -> (String, HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let query = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (query, headers, body)
}

/// Feeds one input to the SigV4 parser, as a header-signed request and as a presigned
/// one, and checks what it accepted.
pub fn sigv4(data: &[u8]) {
    let (query, headers, body) = request_parts(data);
    for (method, query) in [("POST", None), ("GET", Some(query.as_str()))] {
        let req = RequestView {
            method,
            path: "/",
            query,
            headers: &headers,
            body,
        };
        let Ok(Some(signed)) = sigv4::parse(&req) else {
            continue;
        };
        assert_eq!(signed.signature.len(), 64, "{signed:?}");
        assert!(
            signed
                .signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{signed:?}"
        );
        assert_eq!(signed.scope.date.len(), 8, "{signed:?}");
        assert!(
            signed
                .signed_headers
                .iter()
                .all(|h| !h.is_empty() && h.bytes().all(|b| !b.is_ascii_uppercase())),
            "{signed:?}"
        );
        if let SignatureForm::Presigned { expires } = signed.form {
            assert!(
                (1..=sigv4::MAX_PRESIGN_EXPIRES).contains(&expires),
                "{signed:?}"
            );
        }
        // At its own time a request is current exactly when its scope names its date.
        assert_eq!(
            sigv4::check_time(&signed, signed.time).is_ok(),
            signed.amz_date.starts_with(&signed.scope.date),
            "{signed:?}"
        );
        // Any clock a server can have (the epoch to the year 9999).
        let _ = sigv4::check_time(&signed, 0);
        let _ = sigv4::check_time(&signed, 253_402_300_799);
        // Nothing the fuzzer writes is signed with this secret.
        assert!(sigv4::verify(&req, &signed, SECRET).is_err(), "{signed:?}");
        // The fast path and aws-sigv4's whole signer agree wherever the fast path goes.
        if let Some(fast) = sigv4::fast_signature(&req, &signed, SECRET) {
            if let Ok(full) = sigv4::expected_signature(&req, &signed, SECRET) {
                assert_eq!(fast, full, "{signed:?}");
            }
        }
    }
    let _ = sigv4::parse_amz_date(&String::from_utf8_lossy(data));
}

/// Feeds one input to the policy parser (identity and trust policies) and evaluates what
/// it accepted.
pub fn policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = policy::parse(&text, PolicyKind::Trust);
    let Ok(doc) = policy::parse(&text, PolicyKind::Identity) else {
        return;
    };
    let deny_all = policy::parse(
        r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#,
        PolicyKind::Identity,
    )
    .expect("a valid policy");
    let mut keys = ContextKeys::new();
    keys.set_one("aws:username", "alice");
    keys.set_one(
        "ecs:cluster",
        "arn:aws:ecs:us-east-1:000000000000:cluster/a",
    );
    keys.set_many("aws:TagKeys", vec!["team".into(), "env".into()]);
    keys.set_one("aws:SourceIp", "10.1.2.3");
    keys.set_one("aws:CurrentTime", "2026-11-25T20:00:00Z");
    keys.set_one("aws:SecureTransport", "false");
    let empty = ContextKeys::new();
    for (action, resource) in [
        (
            "ecs:RunTask",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
        ),
        ("ecs:DescribeClusters", "*"),
        ("iam:PassRole", "arn:aws:iam::000000000000:role/r"),
        ("", ""),
    ] {
        for k in [&keys, &empty] {
            let ctx = RequestContext {
                action,
                resource,
                keys: k,
            };
            let decision = policy::evaluate([&doc], &ctx);
            if decision == Decision::ExplicitDeny {
                assert!(
                    doc.statements
                        .iter()
                        .any(|s| s.effect == policy::Effect::Deny),
                    "{text}"
                );
            }
            // An explicit deny wins over whatever the document allows, in either order.
            assert_eq!(
                policy::evaluate([&doc, &deny_all], &ctx),
                Decision::ExplicitDeny
            );
            assert_eq!(
                policy::evaluate([&deny_all, &doc], &ctx),
                Decision::ExplicitDeny
            );
            // Statement order does not matter.
            let mut reversed = doc.clone();
            reversed.statements.reverse();
            assert_eq!(policy::evaluate([&reversed], &ctx), decision, "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parts_reads_query_headers_and_body() {
        let (q, h, b) = request_parts(b"a=1\nx-amz-date: 20260101T000000Z\nbad\n\nbody");
        assert_eq!(q, "a=1");
        assert_eq!(h.get("x-amz-date").unwrap(), "20260101T000000Z");
        assert_eq!(b, b"body");
    }
}
