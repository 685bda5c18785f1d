//! What the scale examples (`fleet_sim`, `reconnect_storm`) share: an admin client with the
//! controller's operator token, enrolling a simulated agent through the real API (its key made
//! here, a CSR, the certificate the controller issues) and room for a socket per agent.

use edgefleet_proto::v1::admin_client::AdminClient;
use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::EnrollRequest;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::Controller;

/// The operator token on every admin call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

/// An admin client that carries the operator token.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// The controller's CA, an admin client with the operator token from the credentials file
/// `serve` wrote, and the channel under it (for the link service's `Enroll`).
pub async fn connect_admin(ctl: &Controller) -> (String, Admin, Channel) {
    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ctl.credentials).unwrap()).unwrap();
    let ca = credentials["ca_pem"].as_str().unwrap().to_string();
    let token = credentials["token"].as_str().unwrap().to_string();
    let channel = Endpoint::from_shared(ctl.address.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
    let client = AdminClient::with_interceptor(channel.clone(), bearer)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20);
    (ca, client, channel)
}

/// An agent's identity after enrolling: what it dials with.
pub struct Enrolled {
    pub agent_id: String,
    pub certificate_pem: String,
    pub key_pem: String,
}

/// Enrolls one agent named `name` with a one-time `token`: a fresh key, a CSR, the certificate.
/// Panics on any refusal (a simulator has nothing to do without its agents).
pub async fn enroll(link: &mut AgentLinkClient<Channel>, token: String, name: String) -> Enrolled {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("CSR parameters")
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("CSR as PEM");
    let reply = link
        .enroll(EnrollRequest {
            token,
            csr_pem: csr,
            name,
            ..EnrollRequest::default()
        })
        .await
        .expect("enroll")
        .into_inner();
    Enrolled {
        agent_id: reply.agent_id,
        certificate_pem: reply.certificate_pem,
        key_pem: key.serialize_pem(),
    }
}

/// Raises this process's open-file limit to its hard limit (a socket per agent; the soft limit
/// is often 1,024) and returns the limit now in force. Child processes inherit it.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}
