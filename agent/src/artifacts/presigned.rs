//! Fetching an artifact straight from the controller's object store with a presigned URL: range
//! GETs of one chunk each from the byte the partial file reached. A URL the store refuses (it
//! expired mid-transfer, or was tampered with) is traded for a fresh one from the controller,
//! which authorizes it like any fetch; refused again without progress, the transfer gives up with
//! the store's reason. A presigned URL is a bearer secret until it expires: messages name the
//! object store's host and path only, never the query that carries the signature.

use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{ArtifactLocation, LocateArtifactRequest};
use tonic::transport::Channel;

use super::{PullError, Sink, CHUNK_BYTES, STALL_TIMEOUT};

/// Pulls the rest of an artifact from the object store, starting with `location`.
pub(super) async fn pull(
    http: &reqwest::Client,
    client: &mut AgentLinkClient<Channel>,
    agent_id: &str,
    sha256: &str,
    mut location: ArtifactLocation,
    sink: &mut Sink<'_>,
) -> Result<(), PullError> {
    let size = location.size;
    // Refusals of the current URL since the last byte arrived.
    let mut refused_since_progress = 0;
    while sink.offset < size {
        let end = (sink.offset + CHUNK_BYTES).min(size);
        let request = http
            .get(&location.url)
            .header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", sink.offset, end - 1),
            )
            .send();
        let where_ = without_query(&location.url);
        let mut response = tokio::time::timeout(STALL_TIMEOUT, request)
            .await
            .map_err(|_| stalled(&where_))?
            .map_err(|e| PullError::Transfer(format!("object store {where_}: {}", describe(e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::FORBIDDEN
            || status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::BAD_REQUEST
        {
            let reason = store_error(response).await;
            refused_since_progress += 1;
            if refused_since_progress > 1 {
                return Err(PullError::Transfer(format!(
                    "object store {where_} refused a fresh presigned URL too ({status}: {reason})"
                )));
            }
            tracing::info!(%sha256, store = %where_, %reason, "the object store refused the presigned URL; asking the controller for a fresh one");
            location = locate(client, agent_id, sha256)
                .await
                .map_err(|s| PullError::Transfer(s.message().to_string()))?;
            if location.url.is_empty() {
                return Err(PullError::Transfer(
                    "the controller no longer hands out presigned URLs; fetching through it next time"
                        .into(),
                ));
            }
            continue;
        }
        let whole_object = status == reqwest::StatusCode::OK && sink.offset == 0;
        if status.is_success() && status != reqwest::StatusCode::PARTIAL_CONTENT && !whole_object {
            // The whole object again, not the range: its body is not read.
            return Err(PullError::Transfer(format!(
                "object store {where_} answered {status} to a request for the bytes from {}: it ignores ranges",
                sink.offset
            )));
        }
        if !status.is_success() {
            let reason = store_error(response).await;
            return Err(PullError::Transfer(format!(
                "object store {where_} answered {status}: {reason}"
            )));
        }
        if status == reqwest::StatusCode::PARTIAL_CONTENT {
            let range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if range_start(range) != Some(sink.offset) {
                return Err(PullError::Transfer(format!(
                    "object store {where_} sent the range `{range}` for the bytes from {}",
                    sink.offset
                )));
            }
        }
        let chunk_start = sink.offset;
        while let Some(bytes) = tokio::time::timeout(STALL_TIMEOUT, response.chunk())
            .await
            .map_err(|_| stalled(&where_))?
            .map_err(|e| PullError::Transfer(format!("object store {where_}: {}", describe(e))))?
        {
            if sink.offset + bytes.len() as u64 > size {
                return Err(PullError::Transfer(format!(
                    "object store {where_} sent more than the artifact's {size} bytes"
                )));
            }
            sink.write(&bytes)?;
        }
        if sink.offset == chunk_start {
            return Err(PullError::Transfer(format!(
                "object store {where_} sent no bytes from offset {chunk_start}"
            )));
        }
        refused_since_progress = 0;
        sink.pace().await;
    }
    Ok(())
}

/// Asks the controller where the artifact is now: a presigned URL, or none (fetch through it).
pub(super) async fn locate(
    client: &mut AgentLinkClient<Channel>,
    agent_id: &str,
    sha256: &str,
) -> Result<ArtifactLocation, tonic::Status> {
    let request = client.locate_artifact(LocateArtifactRequest {
        sha256: sha256.to_string(),
        agent_id: agent_id.to_string(),
    });
    match tokio::time::timeout(STALL_TIMEOUT, request).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the controller did not say where the artifact is within {} s",
            STALL_TIMEOUT.as_secs()
        ))),
    }
}

fn stalled(where_: &str) -> PullError {
    PullError::Transfer(format!(
        "object store {where_}: no data for {} s",
        STALL_TIMEOUT.as_secs()
    ))
}

/// A URL without its query (where a presigned URL's signature is).
pub(crate) fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL`.
fn range_start(header: &str) -> Option<u64> {
    header
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// An HTTP client error with its causes (a refused connection, a TLS or DNS failure), without
/// the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The S3 error an object store answered with: its `Code` and `Message`, on one line (read
/// from at most the first 16 KiB of the answer).
async fn store_error(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < 16 << 10 {
        match tokio::time::timeout(STALL_TIMEOUT, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    let body = String::from_utf8_lossy(&body);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => "no S3 error in the answer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_says_where_its_bytes_start() {
        assert_eq!(range_start("bytes 100-199/12582912"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("bytes */100"), None);
        assert_eq!(range_start(""), None);
    }

    #[test]
    fn a_url_is_shown_without_its_signature() {
        let url = "http://127.0.0.1:9000/b/models/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=f9b9";
        assert_eq!(without_query(url), "http://127.0.0.1:9000/b/models/abc");
        assert!(!without_query(url).contains("Signature"));
    }
}
