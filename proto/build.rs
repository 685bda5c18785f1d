//! Generates the tonic/prost code from `proto/` with the vendored protoc (no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, and tonic-prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let mut config = tonic_prost_build::configure()
        // Small first buffers per stream (see `codec` in lib.rs).
        .codec_path("crate::codec::LeanCodec")
        // Artifact bytes are sliced out of the received buffer instead of copied into a Vec.
        .bytes(".edgefleet.v1.ArtifactChunk.data");
    // What the CLI prints with --json: serde derives, with the names and units scripts read.
    for message in JSON_MESSAGES {
        config = config.type_attribute(
            format!(".edgefleet.v1.{message}"),
            "#[derive(serde::Serialize)]",
        );
    }
    for (field, attribute) in JSON_FIELDS {
        config = config.field_attribute(format!(".edgefleet.v1.{field}"), attribute);
    }
    config.compile_protos(
        &[
            "proto/edgefleet/v1/link.proto",
            "proto/edgefleet/v1/admin.proto",
            "proto/onnx/onnx_subset.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}

/// Admin replies the CLI prints as JSON.
const JSON_MESSAGES: [&str; 18] = [
    "Baseline",
    "ControllerInfo",
    "Regression",
    "EnrollmentTokenReply",
    "AdminTokenInfo",
    "AdminTokenReply",
    "AgentInfo",
    "HardwareProfile",
    "ModelInfo",
    "ArtifactRef",
    "TensorSignature",
    "ModelPlacement",
    "RolloutStatus",
    "RolloutTarget",
    "GateVerdict",
    "GateMeasurement",
    "ScheduleInfo",
    "ScheduleFire",
];

/// Fields whose JSON name or form differs from the wire: ids and agents named as people read
/// them, times as RFC 3339, waves counted from 1, signed bytes left to `models show`.
const JSON_FIELDS: [(&str, &str); 28] = [
    (
        "Baseline.set_at_unix_ms",
        r#"#[serde(rename = "set_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "Regression.detected_at_unix_ms",
        r#"#[serde(rename = "detected_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "Regression.acknowledged_at_unix_ms",
        r#"#[serde(rename = "acknowledged_at", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "EnrollmentTokenReply.expires_unix_ms",
        r#"#[serde(rename = "expires_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "AdminTokenInfo.created_unix_ms",
        r#"#[serde(rename = "created_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "AdminTokenInfo.revoked_unix_ms",
        r#"#[serde(rename = "revoked_at", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "AgentInfo.revoked_unix_ms",
        r#"#[serde(rename = "revoked_at", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    ("AgentInfo.agent_id", r#"#[serde(rename = "id")]"#),
    (
        "ControllerInfo.started_unix_ms",
        r#"#[serde(rename = "started_at", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "AgentInfo.last_seen_unix_ms",
        r#"#[serde(rename = "last_seen", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "AgentInfo.first_seen_unix_ms",
        r#"#[serde(rename = "first_seen", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "AgentInfo.cert_not_after_unix_ms",
        r#"#[serde(rename = "cert_not_after", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "AgentInfo.recoverable_until_unix_ms",
        r#"#[serde(rename = "recoverable_until", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "ModelInfo.created_unix_ms",
        r#"#[serde(rename = "created_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    ("ModelInfo.manifest", "#[serde(skip)]"),
    ("ModelInfo.signature", "#[serde(skip)]"),
    ("ModelPlacement.agent_name", r#"#[serde(rename = "agent")]"#),
    ("RolloutStatus.rollout_id", r#"#[serde(rename = "id")]"#),
    (
        "RolloutStatus.created_unix_ms",
        r#"#[serde(rename = "created_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "RolloutStatus.updated_unix_ms",
        r#"#[serde(rename = "updated_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    ("RolloutTarget.agent_name", r#"#[serde(rename = "agent")]"#),
    (
        "RolloutTarget.wave",
        r#"#[serde(serialize_with = "crate::json::counted_from_one")]"#,
    ),
    ("GateVerdict.agent_name", r#"#[serde(rename = "agent")]"#),
    (
        "GateVerdict.wave",
        r#"#[serde(serialize_with = "crate::json::counted_from_one")]"#,
    ),
    (
        "ScheduleInfo.created_unix_ms",
        r#"#[serde(rename = "created_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "ScheduleInfo.next_fire_unix_ms",
        r#"#[serde(rename = "next_fire", serialize_with = "crate::json::rfc3339_or_null")]"#,
    ),
    (
        "ScheduleFire.planned_unix_ms",
        r#"#[serde(rename = "planned_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
    (
        "ScheduleFire.recorded_unix_ms",
        r#"#[serde(rename = "recorded_at", serialize_with = "crate::json::rfc3339")]"#,
    ),
];
