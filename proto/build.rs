//! Generates the tonic/prost code from `proto/` with the vendored protoc (no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, and tonic-prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        // Artifact bytes are sliced out of the received buffer instead of copied into a Vec.
        .bytes(".edgefleet.v1.ArtifactChunk.data")
        .compile_protos(
            &[
                "proto/edgefleet/v1/link.proto",
                "proto/edgefleet/v1/admin.proto",
                "proto/onnx/onnx_subset.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
