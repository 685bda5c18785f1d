//! The edgefleet.v1 wire protocol (agent link and admin service) and the ONNX subset used to read
//! a model's signature: generated code, how some reply fields read as JSON, and the text form of
//! tokens.
#![allow(unreachable_pub, clippy::all)]

/// `edgefleet.v1`: the agent link and the admin service.
pub mod v1 {
    tonic::include_proto!("edgefleet.v1");
}

/// The gRPC codec every generated client and server uses (`build.rs` names it): prost's, with
/// first buffers of 1 KiB instead of tonic's 8 KiB. Each open stream holds one encode and one
/// decode buffer for as long as it lives, and an agent's link lives for days while carrying
/// messages of a few dozen bytes: at 10,000 agents the default buffers alone were 160 MB of the
/// controller's memory. A larger message grows its buffer as before.
pub mod codec {
    use std::marker::PhantomData;

    use prost::Message;
    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// What a stream's encode and decode buffers start with.
    pub const FIRST_BUFFER_BYTES: usize = 1024;

    /// How much an encoder writes before yielding to the runtime (tonic's default).
    const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

    /// [`tonic_prost::ProstCodec`] with [`FIRST_BUFFER_BYTES`] buffers.
    #[derive(Debug, Clone)]
    pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for LeanCodec<T, U> {
        fn default() -> Self {
            LeanCodec(PhantomData)
        }
    }

    fn settings() -> BufferSettings {
        BufferSettings::new(FIRST_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }

    impl<T, U> Codec for LeanCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(settings())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(settings())
        }
    }
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

    /// A time that may not have happened: RFC 3339, or null for 0.
    pub fn rfc3339_or_null<S: serde::Serializer>(unix_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        match unix_ms {
            0 => s.serialize_none(),
            at => rfc3339(at, s),
        }
    }

    /// A wave index as people count waves (the first is 1).
    pub fn counted_from_one<S: serde::Serializer>(wave: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(wave + 1)
    }
}

/// The text form of the tokens people copy around: enrollment tokens (`efe1.…`, which also pin
/// the controller's CA) and admin tokens (`efa1.…`). Each ends in a checksum, so a token cut or
/// mistyped in a copy is refused as such before it reaches the controller; the controller keeps
/// only [`secret_hash`]es.
pub mod tokens {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    const ENROLLMENT: &str = "efe1";
    const ADMIN: &str = "efa1";

    /// Why a token's text is refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum TokenError {
        #[error("not an edgefleet {kind} token (it should start with `{prefix}.`)")]
        Prefix {
            kind: &'static str,
            prefix: &'static str,
        },
        #[error("the {kind} token is malformed ({why}); copy it again in full")]
        Malformed {
            kind: &'static str,
            why: &'static str,
        },
        #[error("the {kind} token's checksum does not match; it was cut or mistyped, copy it again in full")]
        Checksum { kind: &'static str },
    }

    /// SHA-256 of a token's secret, hex: all the controller stores.
    pub fn secret_hash(secret: &[u8; 32]) -> String {
        hex::encode(Sha256::digest(secret))
    }

    fn b64() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
    }

    fn checksum(body: &str) -> String {
        hex::encode(&Sha256::digest(body.as_bytes())[..4])
    }

    fn secret_of(text: &str, kind: &'static str) -> Result<[u8; 32], TokenError> {
        let bytes = b64().decode(text).map_err(|_| TokenError::Malformed {
            kind,
            why: "the secret is not base64url",
        })?;
        bytes.try_into().map_err(|_| TokenError::Malformed {
            kind,
            why: "the secret is not 256 bits",
        })
    }

    /// Splits `PREFIX.parts….CHECK`, checking prefix and checksum.
    fn open<'a>(
        text: &'a str,
        kind: &'static str,
        prefix: &'static str,
        parts: usize,
    ) -> Result<Vec<&'a str>, TokenError> {
        let text = text.trim();
        let fields: Vec<&str> = text.split('.').collect();
        if fields.first() != Some(&prefix) {
            return Err(TokenError::Prefix { kind, prefix });
        }
        if fields.len() != parts + 2 {
            return Err(TokenError::Malformed {
                kind,
                why: "wrong number of fields",
            });
        }
        let (body, check) = text.rsplit_once('.').expect("fields were counted");
        if checksum(body) != check {
            return Err(TokenError::Checksum { kind });
        }
        Ok(fields[1..=parts].to_vec())
    }

    /// A one-time enrollment token: its secret and the SHA-256 (hex) of the CA certificate the
    /// device must find at the controller.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct EnrollmentToken {
        pub secret: [u8; 32],
        pub ca_sha256: String,
    }

    impl EnrollmentToken {
        pub fn encode(&self) -> String {
            let body = format!(
                "{ENROLLMENT}.{}.{}",
                b64().encode(self.secret),
                self.ca_sha256
            );
            format!("{body}.{}", checksum(&body))
        }

        pub fn parse(text: &str) -> Result<EnrollmentToken, TokenError> {
            let kind = "enrollment";
            let fields = open(text, kind, ENROLLMENT, 2)?;
            let ca_sha256 = fields[1].to_string();
            if ca_sha256.len() != 64 || !ca_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::Malformed {
                    kind,
                    why: "the CA fingerprint is not a SHA-256",
                });
            }
            Ok(EnrollmentToken {
                secret: secret_of(fields[0], kind)?,
                ca_sha256,
            })
        }
    }

    /// An admin token's secret.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AdminToken {
        pub secret: [u8; 32],
    }

    impl AdminToken {
        pub fn encode(&self) -> String {
            let body = format!("{ADMIN}.{}", b64().encode(self.secret));
            format!("{body}.{}", checksum(&body))
        }

        pub fn parse(text: &str) -> Result<AdminToken, TokenError> {
            let fields = open(text, "admin", ADMIN, 1)?;
            Ok(AdminToken {
                secret: secret_of(fields[0], "admin")?,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_read_back_and_a_damaged_copy_is_refused() {
            let token = EnrollmentToken {
                secret: [7; 32],
                ca_sha256: "ab".repeat(32),
            };
            let text = token.encode();
            assert_eq!(EnrollmentToken::parse(&text), Ok(token.clone()));
            assert_eq!(EnrollmentToken::parse(&format!(" {text}\n")), Ok(token));
            let mut cut = text.clone();
            cut.pop();
            assert!(matches!(
                EnrollmentToken::parse(&cut),
                Err(TokenError::Checksum { .. })
            ));
            let flipped = text.replacen("efe1.B", "efe1.C", 1);
            assert!(matches!(
                EnrollmentToken::parse(&flipped),
                Err(TokenError::Checksum { .. })
            ));
            let admin = AdminToken { secret: [9; 32] };
            assert_eq!(AdminToken::parse(&admin.encode()), Ok(admin.clone()));
            assert!(matches!(
                AdminToken::parse(&text),
                Err(TokenError::Prefix { .. })
            ));
            assert!(matches!(
                EnrollmentToken::parse(&admin.encode()),
                Err(TokenError::Prefix { .. })
            ));
            assert_ne!(secret_hash(&[7; 32]), secret_hash(&[9; 32]));
        }
    }
}
