//! A connection to a controller's admin service: one method per call, each failing with the
//! controller's own one-line reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use edgefleet_proto::v1::admin_client::AdminClient;
use edgefleet_proto::v1::{
    add_model_request, AddModelHeader, AddModelRequest, ControlRolloutRequest, GetResultsRequest,
    GetRunRequest, InputFile, ListAgentsRequest, ListModelsRequest, ListRolloutsRequest,
    ModelDetail, ModelInfo, ModelRequest, NewFile, RemoveModelReply, RemoveModelRequest,
    RolloutStatus, RunStatus, StartBenchRequest, StartRolloutRequest,
};
use edgefleet_proto::v1::{
    AcknowledgeRegressionRequest, Baseline, CompareRequest, ListBaselinesRequest,
    ListRegressionsRequest, Regression, SetBaselineRequest,
};
use edgefleet_proto::v1::{
    AddScheduleRequest, ListSchedulesRequest, ScheduleFire, ScheduleInfo, ScheduleRequest,
};
use edgefleet_proto::v1::{
    AdminTokenInfo, AdminTokenReply, AgentInfo, AgentRequest, CreateAdminTokenRequest,
    CreateEnrollmentTokenRequest, EnrollmentTokenReply, ListAdminTokensRequest, RemoveAgentReply,
    RevokeAdminTokenRequest,
};
use edgefleet_reports::{FailedRun, ResultRecord};
use tokio::io::AsyncReadExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Status;

use super::progress;
use super::target::{ConfigError, Target};

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Adds the admin token to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to a controller's admin service.
pub(crate) struct Client {
    inner: AdminClient<InterceptedService<Channel, Bearer>>,
}

impl Client {
    /// Connects, or fails with the address that was tried.
    pub(crate) async fn connect(target: &Target) -> anyhow::Result<Client> {
        let address = &target.address;
        let mut endpoint = tonic::transport::Endpoint::from_shared(address.clone())
            .map_err(|_| {
                ConfigError(format!(
                    "`{address}` is not a controller address (expected https://HOST:PORT)"
                ))
            })?
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &target.ca_pem {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|e| ConfigError(format!("cannot use the CA for {address}: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            // The innermost cause says the most (rustls names the certificate's names).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            let cause = cause.to_string();
            if cause.contains("not valid for name") {
                anyhow::anyhow!("the controller at {address} has a certificate for other names: {cause} (dial a name it covers, or restart `edgefleet serve` with --san NAME)")
            } else {
                anyhow::anyhow!("cannot reach the controller at {address}: {cause} (is `edgefleet serve` running there? set --controller or EDGEFLEET_CONTROLLER)")
            }
        })?;
        let bearer = match &target.token {
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| ConfigError("the admin token is not printable text".into()))?,
            ),
            None => None,
        };
        Ok(Client {
            inner: AdminClient::with_interceptor(channel, Bearer(bearer))
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(16 << 20),
        })
    }

    /// The controller's refusal in its own words; one of a request it found malformed (a bad
    /// `--cron`, selector, suite) is a usage error like the CLI's own (exit 64).
    fn fail(&self, status: tonic::Status) -> anyhow::Error {
        if status.code() == tonic::Code::InvalidArgument {
            ConfigError(status.message().to_string()).into()
        } else {
            anyhow::anyhow!("{}", status.message())
        }
    }

    pub(crate) async fn controllers(
        &mut self,
    ) -> anyhow::Result<edgefleet_proto::v1::ListControllersReply> {
        let reply = self
            .inner
            .list_controllers(edgefleet_proto::v1::ListControllersRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn agents(&mut self) -> anyhow::Result<Vec<edgefleet_proto::v1::AgentInfo>> {
        let reply = self
            .inner
            .list_agents(ListAgentsRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().agents)
    }

    pub(crate) async fn models(&mut self) -> anyhow::Result<Vec<ModelInfo>> {
        let reply = self
            .inner
            .list_models(ListModelsRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().models)
    }

    /// Uploads a model file and its companions and registers them as `name@version`.
    pub(crate) async fn add_model(
        &mut self,
        model: &Path,
        companions: &[PathBuf],
        name: &str,
        version: &str,
        quantization: &str,
    ) -> anyhow::Result<ModelInfo> {
        let mut files = Vec::new();
        let mut declared = Vec::new();
        for path in std::iter::once(model).chain(companions.iter().map(PathBuf::as_path)) {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !meta.is_file() {
                bail!("{} is not a file", path.display());
            }
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no usable file name", path.display()))?
                .to_string();
            declared.push(NewFile {
                file_name,
                size_bytes: meta.len(),
            });
            files.push(path.to_path_buf());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let header = AddModelRequest {
            part: Some(add_model_request::Part::Header(AddModelHeader {
                name: name.to_string(),
                version: version.to_string(),
                quantization: quantization.to_string(),
                files: declared,
            })),
        };
        tx.send(header).await.expect("receiver alive");
        let total: u64 = std::fs::metadata(model).map_or(0, |m| m.len())
            + companions
                .iter()
                .map(|c| std::fs::metadata(c).map_or(0, |m| m.len()))
                .sum::<u64>();
        let bar = progress::upload_bar(total);
        let reader_bar = bar.clone();
        let reader = tokio::spawn(async move {
            for path in files {
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                loop {
                    let mut buf = vec![0u8; UPLOAD_CHUNK];
                    let n = file
                        .read(&mut buf)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    reader_bar.inc(n as u64);
                    let part = AddModelRequest {
                        part: Some(add_model_request::Part::Data(buf)),
                    };
                    if tx.send(part).await.is_err() {
                        return Ok(()); // the controller refused the upload; its reply says why
                    }
                }
            }
            anyhow::Ok(())
        });
        let reply = self
            .inner
            .add_model(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        reader.await.expect("reader task panicked")?;
        bar.finish_and_clear();
        Ok(reply.map_err(|s| self.fail(s))?.into_inner())
    }

    pub(crate) async fn show_model(
        &mut self,
        name: &str,
        version: &str,
    ) -> anyhow::Result<ModelDetail> {
        let reply = self
            .inner
            .show_model(ModelRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn remove_model(
        &mut self,
        name: &str,
        version: &str,
        force: bool,
    ) -> anyhow::Result<RemoveModelReply> {
        let reply = self
            .inner
            .remove_model(RemoveModelRequest {
                name: name.into(),
                version: version.into(),
                force,
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn start_rollout(
        &mut self,
        request: StartRolloutRequest,
    ) -> anyhow::Result<RolloutStatus> {
        let reply = self
            .inner
            .start_rollout(request)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    /// One rollout, or every rollout (newest first) when `id` is empty.
    pub(crate) async fn rollouts(&mut self, id: &str) -> anyhow::Result<Vec<RolloutStatus>> {
        let reply = self
            .inner
            .list_rollouts(ListRolloutsRequest {
                rollout_id: id.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().rollouts)
    }

    pub(crate) async fn control_rollout(
        &mut self,
        id: &str,
        action: &str,
    ) -> anyhow::Result<RolloutStatus> {
        let reply = self
            .inner
            .control_rollout(ControlRolloutRequest {
                rollout_id: id.into(),
                action: action.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn start_bench(
        &mut self,
        suite_toml: &str,
        origin: &str,
        select: &[String],
        inputs: Vec<InputFile>,
    ) -> anyhow::Result<edgefleet_proto::v1::StartBenchReply> {
        let reply = self
            .inner
            .start_bench(StartBenchRequest {
                suite_toml: suite_toml.to_string(),
                suite_origin: origin.to_string(),
                select: select.to_vec(),
                inputs,
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn run_status(&mut self, run_id: &str) -> anyhow::Result<RunStatus> {
        let reply = self
            .inner
            .get_run(GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    /// Result records and failures of one run, or of all runs.
    pub(crate) async fn results(
        &mut self,
        run_id: Option<&str>,
    ) -> anyhow::Result<(Vec<ResultRecord>, Vec<FailedRun>)> {
        self.results_where(GetResultsRequest {
            run_id: run_id.unwrap_or_default().to_string(),
            ..GetResultsRequest::default()
        })
        .await
    }

    /// Result records and failures that pass every condition of the request: the stored
    /// results arrive as protobuf and become records here, with the controller's own code.
    pub(crate) async fn results_where(
        &mut self,
        request: GetResultsRequest,
    ) -> anyhow::Result<(Vec<ResultRecord>, Vec<FailedRun>)> {
        let mut replies = self
            .inner
            .get_results(request)
            .await
            .map_err(|s| self.fail(s))?
            .into_inner();
        let mut stored = edgefleet_controller::records::Stored::default();
        while let Some(reply) = replies.message().await.map_err(|s| self.fail(s))? {
            stored.results.extend(reply.results);
            for agent in reply.agents {
                stored.agents.insert(agent.agent_id.clone(), agent);
            }
            for model in reply.models {
                stored
                    .models
                    .insert((model.name.clone(), model.version.clone()), model);
            }
            stored.failures.extend(
                reply
                    .failures
                    .into_iter()
                    .map(edgefleet_controller::records::failed_run),
            );
        }
        let records = stored.records();
        Ok((records, stored.failures))
    }

    pub(crate) async fn create_enrollment_token(
        &mut self,
        request: CreateEnrollmentTokenRequest,
    ) -> anyhow::Result<EnrollmentTokenReply> {
        let reply = self
            .inner
            .create_enrollment_token(request)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn revoke_agent(&mut self, agent: &str) -> anyhow::Result<AgentInfo> {
        let reply = self
            .inner
            .revoke_agent(AgentRequest {
                agent: agent.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn remove_agent(&mut self, agent: &str) -> anyhow::Result<RemoveAgentReply> {
        let reply = self
            .inner
            .remove_agent(AgentRequest {
                agent: agent.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn create_admin_token(
        &mut self,
        name: &str,
        role: &str,
    ) -> anyhow::Result<AdminTokenReply> {
        let reply = self
            .inner
            .create_admin_token(CreateAdminTokenRequest {
                name: name.into(),
                role: role.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn admin_tokens(&mut self) -> anyhow::Result<Vec<AdminTokenInfo>> {
        let reply = self
            .inner
            .list_admin_tokens(ListAdminTokensRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().tokens)
    }

    pub(crate) async fn revoke_admin_token(
        &mut self,
        name: &str,
    ) -> anyhow::Result<AdminTokenInfo> {
        let reply = self
            .inner
            .revoke_admin_token(RevokeAdminTokenRequest { name: name.into() })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    /// B against A, as the controller computed it.
    pub(crate) async fn compare(
        &mut self,
        request: CompareRequest,
    ) -> anyhow::Result<edgefleet_controller::compare::Comparison> {
        let reply = self
            .inner
            .compare(request)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(serde_json::from_str(&reply.into_inner().comparison_json)?)
    }

    pub(crate) async fn set_baseline(
        &mut self,
        suite: &str,
        run_id: &str,
    ) -> anyhow::Result<Vec<Baseline>> {
        let reply = self
            .inner
            .set_baseline(SetBaselineRequest {
                suite: suite.into(),
                run_id: run_id.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().baselines)
    }

    /// Baselines of one suite, or of every suite when `suite` is empty.
    pub(crate) async fn baselines(&mut self, suite: &str) -> anyhow::Result<Vec<Baseline>> {
        let reply = self
            .inner
            .list_baselines(ListBaselinesRequest {
                suite: suite.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().baselines)
    }

    /// Regressions detected at or after `since_ms`, newest first.
    pub(crate) async fn regressions(&mut self, since_ms: i64) -> anyhow::Result<Vec<Regression>> {
        let reply = self
            .inner
            .list_regressions(ListRegressionsRequest {
                since_unix_ms: since_ms,
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().regressions)
    }

    pub(crate) async fn acknowledge_regression(&mut self, id: i64) -> anyhow::Result<Regression> {
        let reply = self
            .inner
            .acknowledge_regression(AcknowledgeRegressionRequest { id })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn add_schedule(
        &mut self,
        request: AddScheduleRequest,
    ) -> anyhow::Result<ScheduleInfo> {
        let reply = self
            .inner
            .add_schedule(request)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub(crate) async fn schedules(&mut self) -> anyhow::Result<Vec<ScheduleInfo>> {
        let reply = self
            .inner
            .list_schedules(ListSchedulesRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().schedules)
    }

    pub(crate) async fn remove_schedule(&mut self, name: &str) -> anyhow::Result<()> {
        self.inner
            .remove_schedule(ScheduleRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(())
    }

    pub(crate) async fn run_schedule(&mut self, name: &str) -> anyhow::Result<ScheduleFire> {
        let reply = self
            .inner
            .run_schedule(ScheduleRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }
}
