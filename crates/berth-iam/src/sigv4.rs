//! AWS Signature Version 4: parsing what a request claims, and checking it.
//!
//! Parsing (`parse`) reads the `Authorization` header or the presigned-URL query
//! parameters into a [`SignedRequest`]; it never panics on hostile input (proptest'ed).
//! Verification (`verify`) recomputes the signature of the received request with the
//! stored secret using the `aws-sigv4` crate (the AWS SDK's own signer: canonical request,
//! string to sign, key derivation and HMAC are its code, not ours) and compares the two in
//! constant time. Only the headers the client says it signed are fed to the signer, so the
//! recomputed canonical request is the client's.
//!
//! Clock checks (`check_time`): `X-Amz-Date` within ±15 minutes of the server's clock;
//! presigned URLs until `X-Amz-Date + X-Amz-Expires` (at most a week).
//! Payload: header-signed requests must sign the body's SHA-256 (berth serves plain HTTP,
//! so `UNSIGNED-PAYLOAD` is accepted only in presigned URLs, as botocore uses it).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::crypto::ct_eq;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest validity of a presigned URL (AWS: one week).
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;

/// The query parameters of a presigned URL that carry the signature itself.
const AUTH_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigErrorKind {
    /// No signature at all (`MissingAuthenticationToken`).
    Missing,
    /// A signature that cannot be read (`IncompleteSignature`).
    Incomplete,
    /// A readable signature that does not check out (`InvalidSignatureException` /
    /// `SignatureDoesNotMatch`): wrong secret, altered request, clock skew, wrong scope.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SigError {
    pub kind: SigErrorKind,
    pub message: String,
}

impl SigError {
    fn incomplete(message: impl Into<String>) -> Self {
        Self {
            kind: SigErrorKind::Incomplete,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: SigErrorKind::Invalid,
            message: message.into(),
        }
    }
    /// AWS's words for a signature computed with another secret (or over other bytes).
    pub fn mismatch() -> Self {
        Self::invalid(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    }
}

/// `Credential=<key id>/<date>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Where the signature travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForm {
    /// `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
    Header,
    /// A presigned URL (`X-Amz-Signature` and friends in the query), valid this many seconds.
    Presigned { expires: u64 },
}

/// What a request claims about its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub scope: CredentialScope,
    /// Lower-case names, as listed by the client.
    pub signed_headers: Vec<String>,
    /// 64 lower-case hex digits.
    pub signature: String,
    /// `X-Amz-Date` as sent (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// `X-Amz-Date` as seconds since the epoch.
    pub time: i64,
    pub session_token: Option<String>,
    pub form: SignatureForm,
}

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The request target's path, as received (percent-encoded).
    pub path: &'a str,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decoded `(name, value)` pairs of a query string.
fn query_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(query.as_bytes()).collect()
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
    let time = date.and_hms_opt(num(9..11)?, num(11..13)?, num(13..15)?)?;
    Some(time.and_utc().timestamp())
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn parse_scope(credential: &str) -> Result<CredentialScope, SigError> {
    let mut split = credential.split('/');
    let parts = [(); 5].map(|_| split.next());
    let (Some(key), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts[0],
        parts[1],
        parts[2],
        parts[3],
        parts[4],
        split.next(),
    ) else {
        return Err(SigError::incomplete(format!(
            "Credential should be scoped to a valid region, service and terminator: \
             '<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request', not '{credential}'."
        )));
    };
    if terminator != "aws4_request" {
        return Err(SigError::incomplete(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )));
    }
    if key.is_empty() {
        return Err(SigError::incomplete(
            "Credential should include an access key id.",
        ));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigError::incomplete(format!(
            "Credential should be scoped to a date in YYYYMMDD form, not '{date}'."
        )));
    }
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !valid_name(region) {
        return Err(SigError::incomplete(format!(
            "Credential should be scoped to a valid region, not '{region}'."
        )));
    }
    if !valid_name(service) {
        return Err(SigError::incomplete(format!(
            "Credential should be scoped to a valid service, not '{service}'."
        )));
    }
    Ok(CredentialScope {
        access_key_id: key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    })
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, SigError> {
    let names: Vec<String> = list.split(';').map(str::to_string).collect();
    let valid = |n: &str| {
        !n.is_empty()
            && n.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
            })
    };
    if names.iter().any(|n| !valid(n)) {
        return Err(SigError::incomplete(format!(
            "SignedHeaders should be a ';'-separated list of lower-case header names, not '{list}'."
        )));
    }
    Ok(names)
}

fn parse_signature(s: &str) -> Result<String, SigError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(SigError::incomplete(
            "Signature should be 64 hexadecimal digits.",
        ))
    }
}

/// Parses the `Authorization` header value of a SigV4 request.
/// Returns the credential scope, the signed header names and the signature.
pub fn parse_authorization(
    value: &str,
) -> Result<(CredentialScope, Vec<String>, String), SigError> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(SigError::incomplete(format!(
            "Unsupported authorization type '{}': berth accepts {ALGORITHM} (Signature Version 4) only.",
            algorithm.chars().take(40).collect::<String>()
        )));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(SigError::incomplete(format!(
                "Authorization header requires each component to be of the form key=value: '{}'.",
                part.chars().take(64).collect::<String>()
            )));
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.is_some() {
            return Err(SigError::incomplete(format!(
                "Authorization header names {} twice.",
                k.trim()
            )));
        }
        *slot = Some(v.trim());
    }
    let mut missing = Vec::new();
    if credential.is_none() {
        missing.push("Authorization header requires 'Credential' parameter.");
    }
    if signature.is_none() {
        missing.push("Authorization header requires 'Signature' parameter.");
    }
    if signed.is_none() {
        missing.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    if !missing.is_empty() {
        return Err(SigError::incomplete(missing.join(" ")));
    }
    Ok((
        parse_scope(credential.unwrap_or_default())?,
        parse_signed_headers(signed.unwrap_or_default())?,
        parse_signature(signature.unwrap_or_default())?,
    ))
}

/// Reads the signature a request claims. `Ok(None)`: the request is not signed at all.
pub fn parse(req: &RequestView<'_>) -> Result<Option<SignedRequest>, SigError> {
    let authorization = header(req.headers, "authorization");
    let presigned = req
        .query
        .map(|q| {
            query_pairs(q)
                .into_iter()
                .any(|(k, _)| k == "X-Amz-Signature" || k == "X-Amz-Credential")
        })
        .unwrap_or(false);
    match (authorization, presigned) {
        (None, false) => Ok(None),
        (Some(_), true) => Err(SigError::incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the \
             Authorization header should be supplied.",
        )),
        (Some(value), false) => {
            let (scope, signed_headers, signature) = parse_authorization(value)?;
            let Some(amz_date) = header(req.headers, "x-amz-date") else {
                return Err(SigError::incomplete(
                    "Authorization header requires existence of the 'X-Amz-Date' header.",
                ));
            };
            let time = parse_amz_date(amz_date).ok_or_else(|| {
                SigError::incomplete(format!(
                    "X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', not '{}'.",
                    amz_date.chars().take(32).collect::<String>()
                ))
            })?;
            Ok(Some(SignedRequest {
                scope,
                signed_headers,
                signature,
                amz_date: amz_date.to_string(),
                time,
                session_token: header(req.headers, "x-amz-security-token").map(str::to_string),
                form: SignatureForm::Header,
            }))
        }
        (None, true) => {
            let pairs = query_pairs(req.query.unwrap_or_default());
            let get = |name: &str| {
                let mut values = pairs.iter().filter(|(k, _)| k == name);
                match (values.next(), values.next()) {
                    (Some((_, v)), None) => Ok(Some(v.to_string())),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(SigError::incomplete(format!(
                        "The query parameter {name} appears more than once."
                    ))),
                }
            };
            let all = (
                get("X-Amz-Algorithm")?,
                get("X-Amz-Credential")?,
                get("X-Amz-Signature")?,
                get("X-Amz-Date")?,
                get("X-Amz-SignedHeaders")?,
                get("X-Amz-Expires")?,
            );
            let (
                Some(algorithm),
                Some(credential),
                Some(signature),
                Some(date),
                Some(signed),
                Some(expires),
            ) = all
            else {
                return Err(SigError::incomplete(
                    "AWS query-string parameters must include 'X-Amz-Algorithm', \
                     'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', \
                     'X-Amz-SignedHeaders', and 'X-Amz-Expires'. Re-examine the query-string \
                     parameters.",
                ));
            };
            if algorithm != ALGORITHM {
                return Err(SigError::incomplete(format!(
                    "X-Amz-Algorithm only supports \"{ALGORITHM}\"."
                )));
            }
            let expires: u64 = expires.parse().ok().filter(|e| *e >= 1).ok_or_else(|| {
                SigError::incomplete("X-Amz-Expires should be a number of seconds.")
            })?;
            if expires > MAX_PRESIGN_EXPIRES {
                return Err(SigError::incomplete(format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}."
                )));
            }
            let time = parse_amz_date(&date).ok_or_else(|| {
                SigError::incomplete(
                    "X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z'.",
                )
            })?;
            Ok(Some(SignedRequest {
                scope: parse_scope(&credential)?,
                signed_headers: parse_signed_headers(&signed)?,
                signature: parse_signature(&signature)?,
                amz_date: date,
                time,
                session_token: get("X-Amz-Security-Token")?,
                form: SignatureForm::Presigned { expires },
            }))
        }
    }
}

/// Checks the request's time against `now` (seconds since the epoch) and that the
/// credential scope's date is the request's date.
pub fn check_time(signed: &SignedRequest, now: i64) -> Result<(), SigError> {
    if !signed.amz_date.starts_with(&signed.scope.date) {
        return Err(SigError::invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{}'.",
            signed.scope.date,
            signed.amz_date.get(..8).unwrap_or_default(),
            signed.amz_date
        )));
    }
    let skew = MAX_CLOCK_SKEW.as_secs() as i64;
    match signed.form {
        SignatureForm::Header => {
            if signed.time < now - skew {
                return Err(SigError::invalid(format!(
                    "Signature expired: {} is now earlier than {} ({} - 15 min.)",
                    signed.amz_date,
                    format_amz_date(now - skew),
                    format_amz_date(now)
                )));
            }
            if signed.time > now + skew {
                return Err(SigError::invalid(format!(
                    "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                    signed.amz_date,
                    format_amz_date(now + skew),
                    format_amz_date(now)
                )));
            }
        }
        SignatureForm::Presigned { expires } => {
            if signed.time > now + skew {
                return Err(SigError::invalid(format!(
                    "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                    signed.amz_date,
                    format_amz_date(now + skew),
                    format_amz_date(now)
                )));
            }
            let until = signed.time.saturating_add(expires as i64);
            if now > until {
                return Err(SigError::invalid(format!(
                    "Signature expired: {} is now earlier than {} ({} - {} sec.)",
                    format_amz_date(until),
                    format_amz_date(now),
                    signed.amz_date,
                    expires
                )));
            }
        }
    }
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A derived signing key (`kSigning`): its scope and the secret it was derived from.
struct CachedKey {
    date: Box<str>,
    region: Box<str>,
    service: Box<str>,
    secret: Box<str>,
    key: Vec<u8>,
}

/// Most access keys with cached signing keys at once; the cache is emptied when full.
const SIGNING_KEYS_MAX: usize = 4096;
/// Most cached scopes (date, region, service) of one access key; emptied when full.
const SCOPES_PER_KEY_MAX: usize = 16;

/// Cached signing keys by access key id.
type SigningKeys = std::sync::Mutex<std::collections::HashMap<String, Vec<CachedKey>>>;

fn signing_keys() -> &'static SigningKeys {
    static KEYS: std::sync::OnceLock<SigningKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// Derived signing keys by access key id, date, region and service: one key serves a
/// client for a day, so most requests skip the four HMACs of the derivation. A cached key
/// is used only when the secret it was derived from is the one given (compared in
/// constant time): a rotated secret derives its own. Unknown, deleted and inactive keys
/// are refused before verification; [`forget_signing_keys`] drops a key's entries.
fn signing_key(
    access_key_id: &str,
    secret: &str,
    time: SystemTime,
    date: &str,
    region: &str,
    service: &str,
) -> Vec<u8> {
    let keys = signing_keys();
    let same_scope =
        |c: &CachedKey| *c.date == *date && *c.region == *region && *c.service == *service;
    if let Some(scopes) = keys.lock().expect("signing keys").get(access_key_id) {
        if let Some(cached) = scopes.iter().find(|c| same_scope(c)) {
            if ct_eq(&cached.secret, secret) {
                return cached.key.clone();
            }
        }
    }
    let key = v4::generate_signing_key(secret, time, region, service)
        .as_ref()
        .to_vec();
    let mut map = keys.lock().expect("signing keys");
    if map.len() >= SIGNING_KEYS_MAX && !map.contains_key(access_key_id) {
        map.clear();
    }
    let scopes = map.entry(access_key_id.to_string()).or_default();
    scopes.retain(|c| !same_scope(c));
    if scopes.len() >= SCOPES_PER_KEY_MAX {
        scopes.clear();
    }
    scopes.push(CachedKey {
        date: date.into(),
        region: region.into(),
        service: service.into(),
        secret: secret.into(),
        key: key.clone(),
    });
    key
}

/// Drops the cached signing keys of an access key (deleted, deactivated or rotated).
pub fn forget_signing_keys(access_key_id: &str) {
    signing_keys()
        .lock()
        .expect("signing keys")
        .remove(access_key_id);
}

/// Recomputes the request's signature with `secret` (and the session token the request
/// carries, for temporary credentials) and compares it with the one sent, in constant time.
pub fn verify(req: &RequestView<'_>, signed: &SignedRequest, secret: &str) -> Result<(), SigError> {
    let expected = match fast_signature(req, signed, secret) {
        Some(s) => s,
        None => expected_signature(req, signed, secret)?,
    };
    if ct_eq(&expected, &signed.signature) {
        Ok(())
    } else {
        Err(SigError::mismatch())
    }
}

/// The fast path for what the SDKs send berth: a header-signed request to `/` without a
/// query string and with plain-text header values. The canonical request (text) is built
/// here, from exactly the headers the client signed, as aws-sigv4 builds it; hashing uses
/// `sha2` and the key derivation and HMAC are aws-sigv4's own
/// (`sign::v4::generate_signing_key`, `calculate_signature`). `None`: anything else, for
/// [`expected_signature`] (aws-sigv4's whole signer). The two agree on every request the
/// fast path takes (proptest'ed against each other).
pub fn fast_signature(
    req: &RequestView<'_>,
    signed: &SignedRequest,
    secret: &str,
) -> Option<String> {
    if signed.form != SignatureForm::Header
        || req.path != "/"
        || req.query.is_some_and(|q| !q.is_empty())
    {
        return None;
    }
    let mut names: Vec<&str> = signed.signed_headers.iter().map(String::as_str).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) || !names.contains(&"host") {
        return None;
    }
    let payload = hex_sha256(req.body);
    let mut creq = String::with_capacity(512);
    creq.push_str(req.method);
    creq.push_str("\n/\n\n");
    for name in &names {
        creq.push_str(name);
        creq.push(':');
        match *name {
            "x-amz-date" => creq.push_str(&signed.amz_date),
            "x-amz-security-token" => creq.push_str(signed.session_token.as_deref()?),
            "x-amz-content-sha256" => {
                let claimed = header(req.headers, name)?;
                if claimed != payload {
                    return None; // refused, with its reason, by the full path
                }
                creq.push_str(claimed);
            }
            _ => {
                let mut first = true;
                for value in req.headers.get_all(*name) {
                    let value = value.to_str().ok()?;
                    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                        return None;
                    }
                    if !first {
                        creq.push(',');
                    }
                    first = false;
                    push_trimmed(&mut creq, value);
                }
                if first {
                    return None; // signed but not sent
                }
            }
        }
        creq.push('\n');
    }
    creq.push('\n');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            creq.push(';');
        }
        creq.push_str(name);
    }
    creq.push('\n');
    creq.push_str(&payload);
    let scope = &signed.scope;
    // `AWS4-HMAC-SHA256\n<date>\n<date>/<region>/<service>/aws4_request\n<hash>`
    let creq_hash = hex_sha256(creq.as_bytes());
    let mut string_to_sign = creq;
    string_to_sign.clear();
    for part in [
        ALGORITHM,
        "\n",
        &signed.amz_date,
        "\n",
        &scope.date,
        "/",
        &scope.region,
        "/",
        &scope.service,
        "/aws4_request\n",
        &creq_hash,
    ] {
        string_to_sign.push_str(part);
    }
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(signed.time).ok()?);
    // The key is derived from the request time's date (as aws-sigv4 derives it).
    let key = signing_key(
        &scope.access_key_id,
        secret,
        time,
        signed.amz_date.get(..8)?,
        &scope.region,
        &scope.service,
    );
    Some(v4::calculate_signature(key, string_to_sign.as_bytes()))
}

/// A header value as SigV4 canonicalizes it: spaces trimmed at both ends, runs of spaces
/// collapsed into one (other white space left alone, as aws-sigv4 does).
fn push_trimmed(out: &mut String, value: &str) {
    let mut previous_space = false;
    for c in value.trim_matches(' ').chars() {
        if c == ' ' {
            if previous_space {
                continue;
            }
            previous_space = true;
        } else {
            previous_space = false;
        }
        out.push(c);
    }
}

/// The signature `aws-sigv4` computes for this request with `secret` (its whole signer:
/// canonical request, string to sign, key derivation, HMAC).
pub fn expected_signature(
    req: &RequestView<'_>,
    signed: &SignedRequest,
    secret: &str,
) -> Result<String, SigError> {
    let presigned = matches!(signed.form, SignatureForm::Presigned { .. });
    if !signed.signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let mut settings = SigningSettings::default();
    // Feed the signer exactly the headers the client signed; exclude nothing else.
    settings.excluded_headers = Some(Vec::new());
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    settings.session_token_mode = SessionTokenMode::Include;

    let mut body = SignableBody::Bytes(req.body);
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(signed.signed_headers.len());
    for name in &signed.signed_headers {
        match name.as_str() {
            // The signer adds these itself (from the parsed values).
            "x-amz-date" | "x-amz-security-token" if !presigned => continue,
            "x-amz-content-sha256" if !presigned => {
                let claimed = header(req.headers, name).unwrap_or_default();
                if claimed == UNSIGNED_PAYLOAD {
                    return Err(SigError::invalid(
                        "UNSIGNED-PAYLOAD is accepted in presigned URLs only: berth serves \
                         plain HTTP, so a signed request must sign its body.",
                    ));
                }
                if claimed != hex_sha256(req.body) {
                    return Err(SigError::invalid(
                        "The provided 'x-amz-content-sha256' header does not match what was \
                         computed.",
                    ));
                }
                settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
                continue;
            }
            _ => {}
        }
        let mut any = false;
        for value in req.headers.get_all(name.as_str()) {
            let value = value
                .to_str()
                .map_err(|_| SigError::invalid(format!("Header {name} is not valid text.")))?;
            headers.push((name.as_str(), value));
            any = true;
        }
        if !any {
            // Signed, but not sent: the signature cannot match.
            return Err(SigError::mismatch());
        }
    }
    if !presigned
        && signed.session_token.is_some()
        && !signed
            .signed_headers
            .iter()
            .any(|h| h == "x-amz-security-token")
    {
        settings.session_token_mode = SessionTokenMode::Exclude;
    }

    let host = header(req.headers, "host").unwrap_or("localhost");
    let query: String = match (req.query, signed.form) {
        (None, _) => String::new(),
        (Some(q), SignatureForm::Header) => q.to_string(),
        (Some(q), SignatureForm::Presigned { expires }) => {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(expires));
            body = SignableBody::UnsignedPayload;
            // The signer re-adds the signature parameters from the parsed values.
            q.split('&')
                .filter(|pair| {
                    let name = pair.split('=').next().unwrap_or_default();
                    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                    !AUTH_PARAMS.contains(&name.as_ref())
                })
                .collect::<Vec<_>>()
                .join("&")
        }
    };
    let uri = if query.is_empty() {
        format!("http://{host}{}", req.path)
    } else {
        format!("http://{host}{}?{query}", req.path)
    };
    let identity: Identity = Credentials::new(
        &signed.scope.access_key_id,
        secret,
        signed.session_token.clone(),
        None,
        "berth",
    )
    .into();
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(signed.time).unwrap_or(0));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signed.scope.region)
        .name(&signed.scope.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SigError::invalid(format!("cannot check this signature: {e}")))?
        .into();
    let signable = SignableRequest::new(req.method, uri, headers.into_iter(), body)
        .map_err(|_| SigError::mismatch())?;
    let output = sign(signable, &params).map_err(|_| SigError::mismatch())?;
    Ok(output.signature().to_string())
}

/// Credentials a client signs with (tests, benchmarks, the test harness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl ClientCredentials {
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            session_token: None,
        }
    }
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }
}

/// What to sign a request as.
#[derive(Debug, Clone)]
pub struct SigningTarget<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: SystemTime,
}

/// Signs a request as an AWS SDK does (headers form); returns the headers to add
/// (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary credentials).
/// `url` is absolute (`http://host:port/path?query`); `headers` are the request's own.
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &ClientCredentials,
    target: &SigningTarget<'_>,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "berth-client",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(target.region)
        .name(target.service)
        .time(target.time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (added, _) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

/// A presigned URL for `method url` valid for `expires`.
pub fn presign_url(
    method: &str,
    url: &str,
    creds: &ClientCredentials,
    target: &SigningTarget<'_>,
    expires: Duration,
) -> Result<String, String> {
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "berth-client",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(target.region)
        .name(target.service)
        .time(target.time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        std::iter::empty(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (_, params) = instructions.into_parts();
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        sep = '&';
        out.push_str(k);
        out.push('=');
        out.push_str(
            &percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    Ok(out)
}

/// Seconds since the epoch of a `SystemTime`.
pub fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
