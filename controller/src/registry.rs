//! The model registry's parts outside the database: artifact bytes ([`artifacts`]: in the data
//! folder, [`artifact_dir`], or an S3 object store), what an
//! ONNX file declares ([`onnx_model`]), the controller's signing key ([`signing`]) and the signed
//! manifests agents verify ([`manifest`]).

pub mod artifact_cache;
pub mod artifact_dir;
pub mod artifacts;
pub mod manifest;
pub mod onnx_model;
pub mod signing;
