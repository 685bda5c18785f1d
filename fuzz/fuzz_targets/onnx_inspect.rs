//! What `models add` does with the first file of an upload: inspect it as ONNX (the
//! `onnx_subset.proto` decode), store its signature as JSON and sign a manifest that carries it.
//! Any bytes end in a summary or an `OnnxError`; a summary survives the store's round trip.

#![no_main]

use edgefleet_controller::registry::{manifest, onnx_model};
use edgefleet_controller::store::ModelRow;
use edgefleet_proto::v1::Manifest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = onnx_model::inspect(data) else {
        return;
    };
    let row = ModelRow {
        name: "fuzz".into(),
        version: "1".into(),
        quantization: "unknown".into(),
        opset: summary.opset,
        signature_json: manifest::signature_json(&summary.inputs, &summary.outputs),
        files: Vec::new(),
        created_ms: 0,
        manifest: Vec::new(),
        manifest_signature: Vec::new(),
    };
    let bytes = manifest::manifest_of(&row).encode_to_vec();
    let back = Manifest::decode(bytes.as_slice()).expect("a manifest we encoded decodes");
    assert_eq!(back.inputs, summary.inputs);
    assert_eq!(back.outputs, summary.outputs);
    assert_eq!(back.opset, summary.opset);
});
