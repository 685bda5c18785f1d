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
