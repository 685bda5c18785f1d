//! New token secrets and the roles admin tokens carry. A token's text is made once, printed
//! once and never stored: the store keeps the secret's SHA-256 (256 random bits need no slow
//! hash), looked up by that hash.

use edgefleet_proto::tokens::{secret_hash, AdminToken, EnrollmentToken};

use crate::stored_states::stored_states;

stored_states! {
    /// What an admin token may do.
    Role {
        /// Listings, results, reports and status: nothing that changes anything.
        Viewer = "viewer",
        /// Everything.
        Operator = "operator",
    }
}

/// A fresh enrollment token pinning the CA `ca_sha256`, and the hash the store keeps.
pub fn new_enrollment_token(ca_sha256: &str) -> (String, String) {
    let secret: [u8; 32] = rand::random();
    let token = EnrollmentToken {
        secret,
        ca_sha256: ca_sha256.to_string(),
    };
    (token.encode(), secret_hash(&secret))
}

/// A fresh admin token, and the hash the store keeps.
pub fn new_admin_token() -> (String, String) {
    let secret: [u8; 32] = rand::random();
    (AdminToken { secret }.encode(), secret_hash(&secret))
}
