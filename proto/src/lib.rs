//! The edgefleet.v1 wire protocol (agent link and admin service) and the ONNX subset used to read
//! a model's signature: generated code only.
#![allow(unreachable_pub, clippy::all)]

/// `edgefleet.v1`: the agent link and the admin service.
pub mod v1 {
    tonic::include_proto!("edgefleet.v1");
}

/// The fields of ONNX's `ModelProto` that edgefleet reads (opset, signature, operators).
pub mod onnx {
    tonic::include_proto!("onnx");
}

/// How some fields of the admin replies read in the CLI's `--json` output (see `build.rs`).
pub mod json {
    /// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-21T05:40:33.123Z`.
    pub fn rfc3339<S: serde::Serializer>(unix_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        let at = jiff::Timestamp::from_millisecond(*unix_ms).map_err(serde::ser::Error::custom)?;
        s.collect_str(&at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }

    /// A wave index as people count waves (the first is 1).
    pub fn counted_from_one<S: serde::Serializer>(wave: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(wave + 1)
    }
}
