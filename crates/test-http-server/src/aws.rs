//! `/aws/ecs/ListClusters`: what an AWS SDK in a task does with the task's role. It gets
//! credentials from the ECS container credentials endpoint
//! (`GET $AWS_CONTAINER_CREDENTIALS_FULL_URI` with `Authorization:
//! $AWS_CONTAINER_AUTHORIZATION_TOKEN`, as the SDKs' container credential provider does),
//! signs an ECS `ListClusters` request with them (SigV4, `aws-sigv4`) and sends it to
//! `$BERTH_ENDPOINT`. The answer is berth's, status and body as received.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A plain-HTTP URL's parts: (`host:port`, path).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return out;
        };
        body = &body[end + 2..];
        if size == 0 || body.len() < size {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

/// One HTTP/1.1 exchange (`Connection: close`): (status, body).
fn exchange(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let (authority, path) = split_url(url)?;
    let mut stream =
        TcpStream::connect(&authority).map_err(|e| format!("connecting to {authority}: {e}"))?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("sending to {authority}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading from {authority}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("the answer has no status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The container credentials, as the SDKs read them.
fn container_credentials(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, String> {
    let uri = env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .ok_or("AWS_CONTAINER_CREDENTIALS_FULL_URI is not set")?;
    let token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .ok_or("AWS_CONTAINER_AUTHORIZATION_TOKEN is not set")?;
    let (status, body) = exchange("GET", &uri, &[("Authorization".into(), token)], b"")?;
    if status != 200 {
        return Err(format!("credentials endpoint answered {status}: {body}"));
    }
    let doc: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("credentials are not JSON: {e}"))?;
    let field = |name: &str| {
        doc[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("credentials have no {name}"))
    };
    Ok(Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("Token")?),
        None,
        "container",
    ))
}

/// ECS `ListClusters` at `$BERTH_ENDPOINT` with the task role's credentials.
pub fn ecs_list_clusters(env: &dyn Fn(&str) -> Option<String>) -> Result<(u16, String), String> {
    let endpoint = env("BERTH_ENDPOINT").ok_or("BERTH_ENDPOINT is not set")?;
    let region = env("AWS_REGION").unwrap_or_else(|| "us-east-1".into());
    let identity: Identity = container_credentials(env)?.into();
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let (authority, _) = split_url(&url)?;
    let body = b"{}";
    let headers = [
        ("host".to_string(), authority),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        (
            "x-amz-target".to_string(),
            "AmazonEC2ContainerServiceV20141113.ListClusters".to_string(),
        ),
    ];
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("ecs")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (added, _) = instructions.into_parts();
    // `exchange` writes Host itself.
    let mut all: Vec<(String, String)> = headers[1..].to_vec();
    all.extend(
        added
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string())),
    );
    exchange("POST", &url, &all, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_chunks() {
        assert_eq!(
            split_url("http://172.17.0.1:5/v2/credentials/x").unwrap(),
            ("172.17.0.1:5".to_string(), "/v2/credentials/x".to_string())
        );
        assert_eq!(
            split_url("http://h").unwrap(),
            ("h:80".to_string(), "/".to_string())
        );
        assert!(split_url("https://h/").is_err());
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
