//! The model registry's parts outside SQLite: artifact bytes on disk ([`artifact_dir`]), what an
//! ONNX file declares ([`onnx_model`]), the controller's signing key ([`signing`]) and the signed
//! manifests agents verify ([`manifest`]).

pub mod artifact_dir;
pub mod manifest;
pub mod onnx_model;
pub mod signing;
