//! Model manifests: what a version is (name, version, every file with sha256 and size,
//! quantization, opset, the input/output signature), encoded as a protobuf `Manifest` and signed
//! with the controller's key. Agents verify the exact bytes signed.

use edgefleet_proto::v1::{Manifest, TensorSignature};
use prost::Message;

use super::signing::ManifestSigner;
use crate::store::{ModelRow, ModelSignature, Store, StoreError, TensorShape};

/// A model's stored inputs and outputs as wire signatures.
pub fn signatures(model: &ModelRow) -> (Vec<TensorSignature>, Vec<TensorSignature>) {
    let signature = model.signature();
    let wire = |list: Vec<TensorShape>| -> Vec<TensorSignature> {
        list.into_iter()
            .map(|t| TensorSignature {
                name: t.name,
                element_type: t.element_type,
                shape: t.shape,
            })
            .collect()
    };
    (wire(signature.inputs), wire(signature.outputs))
}

/// What `models add` stores as a model's signature, from the ONNX file's declarations.
pub fn signature_json(inputs: &[TensorSignature], outputs: &[TensorSignature]) -> String {
    let plain = |list: &[TensorSignature]| -> Vec<TensorShape> {
        list.iter()
            .map(|t| TensorShape {
                name: t.name.clone(),
                element_type: t.element_type.clone(),
                shape: t.shape.clone(),
            })
            .collect()
    };
    serde_json::to_string(&ModelSignature {
        inputs: plain(inputs),
        outputs: plain(outputs),
    })
    .expect("a signature serializes")
}

/// The manifest of a registered model version.
pub fn manifest_of(model: &ModelRow) -> Manifest {
    let (inputs, outputs) = signatures(model);
    Manifest {
        name: model.name.clone(),
        version: model.version.clone(),
        quantization: model.quantization.clone(),
        opset: model.opset,
        files: model.artifact_refs(),
        inputs,
        outputs,
        created_unix_ms: model.created_ms,
    }
}

/// Fills in the model's encoded manifest and its signature.
pub fn sign(model: &mut ModelRow, signer: &ManifestSigner) {
    model.manifest = manifest_of(model).encode_to_vec();
    model.manifest_signature = signer.sign(&model.manifest);
}

/// Signs models registered before manifests existed (a database from an older controller).
pub fn sign_unsigned(store: &Store, signer: &ManifestSigner) -> Result<(), StoreError> {
    for mut model in store.models()? {
        if model.manifest.is_empty() {
            sign(&mut model, signer);
            store.set_manifest(
                &model.name,
                &model.version,
                &model.manifest,
                &model.manifest_signature,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ModelFile;

    #[test]
    fn the_manifest_names_every_file_and_the_signature_covers_it() {
        let mut model = ModelRow {
            name: "minilm".into(),
            version: "2".into(),
            quantization: "int8".into(),
            opset: 17,
            signature_json: r#"{"inputs":[{"name":"input_ids","element_type":"int64","shape":["batch","seq"]}],"outputs":[]}"#.into(),
            files: vec![
                ModelFile { file_name: "model.onnx".into(), sha256: "a".repeat(64), size_bytes: 10 },
                ModelFile { file_name: "tokenizer.json".into(), sha256: "b".repeat(64), size_bytes: 5 },
            ],
            created_ms: 7,
            manifest: Vec::new(),
            manifest_signature: Vec::new(),
        };
        let signer = ManifestSigner::ephemeral();
        sign(&mut model, &signer);
        let m = Manifest::decode(model.manifest.as_slice()).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[1].file_name, "tokenizer.json");
        assert_eq!(m.inputs[0].shape, ["batch", "seq"]);
        use ed25519_dalek::Verifier;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&signer.public_key()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&model.manifest_signature).unwrap();
        assert!(key.verify(&model.manifest, &sig).is_ok());
    }
}
