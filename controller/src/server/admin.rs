//! The admin service the CLI talks to. This file is the gRPC surface only: each call is first
//! authorized ([`access`]: an admin token, and the role the call needs), then handed to the
//! file of its resource ([`agents`], [`models`], [`bench`], [`comparisons`], [`rollouts`],
//! [`schedules`], [`tokens`]); store errors become status codes in one place.

mod access;
mod agents;
pub(crate) mod bench;
mod comparisons;
mod models;
mod rollouts;
mod schedules;
mod tokens;

use edgefleet_proto::v1::admin_server::Admin;
use edgefleet_proto::v1::{
    AcknowledgeRegressionRequest, AddModelRequest, AdminTokenInfo, AdminTokenReply, AgentInfo,
    AgentRequest, BaselinesReply, CompareReply, CompareRequest, ControlRolloutRequest,
    CreateAdminTokenRequest, CreateEnrollmentTokenRequest, EnrollmentTokenReply, GetResultsReply,
    GetResultsRequest, GetRunRequest, ListAdminTokensReply, ListAdminTokensRequest,
    ListAgentsReply, ListAgentsRequest, ListBaselinesRequest, ListModelsReply, ListModelsRequest,
    ListRegressionsRequest, ListRolloutsReply, ListRolloutsRequest, ModelDetail, ModelInfo,
    ModelRequest, Regression, RegressionsReply, RemoveAgentReply, RemoveModelReply,
    RemoveModelRequest, RevokeAdminTokenRequest, RolloutStatus, RunStatus, SetBaselineRequest,
    StartBenchReply, StartBenchRequest, StartRolloutRequest,
};
use edgefleet_proto::v1::{
    AddScheduleRequest, ListControllersReply, ListControllersRequest, ListSchedulesReply,
    ListSchedulesRequest, RemoveScheduleReply, ScheduleFire, ScheduleInfo, ScheduleRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Controller;
use crate::store::StoreError;
use crate::trust::tokens::Role;

pub use access::ConsoleCaller;
pub use rollouts::rollout_status;

pub struct AdminService {
    controller: Controller,
}

impl AdminService {
    pub fn new(controller: Controller) -> Self {
        AdminService { controller }
    }

    /// A read-only call: any valid admin token.
    fn viewer<T>(&self, request: &Request<T>, doing: &str) -> Result<(), Status> {
        access::authorize(&self.controller, request, Role::Viewer, doing)
    }

    /// A call that changes something: an operator token.
    fn operator<T>(&self, request: &Request<T>, doing: &str) -> Result<(), Status> {
        access::authorize(&self.controller, request, Role::Operator, doing)
    }
}

/// An error of ours (not of the request) as INTERNAL.
fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::ModelExists(_)
            | StoreError::AdminTokenExists(_)
            | StoreError::ScheduleExists(_) => Status::already_exists(e.to_string()),
            other => internal(other),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_controllers(
        &self,
        request: Request<ListControllersRequest>,
    ) -> Result<Response<ListControllersReply>, Status> {
        self.viewer(&request, "list controllers")?;
        agents::controllers(&self.controller).map(Response::new)
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        self.viewer(&request, "list agents")?;
        agents::list(&self.controller).map(Response::new)
    }

    async fn add_model(
        &self,
        request: Request<Streaming<AddModelRequest>>,
    ) -> Result<Response<ModelInfo>, Status> {
        self.operator(&request, "add models")?;
        models::add(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsReply>, Status> {
        self.viewer(&request, "list models")?;
        models::list(&self.controller).map(Response::new)
    }

    async fn show_model(
        &self,
        request: Request<ModelRequest>,
    ) -> Result<Response<ModelDetail>, Status> {
        self.viewer(&request, "show models")?;
        models::show(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn remove_model(
        &self,
        request: Request<RemoveModelRequest>,
    ) -> Result<Response<RemoveModelReply>, Status> {
        self.operator(&request, "remove models")?;
        models::remove(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_bench(
        &self,
        request: Request<StartBenchRequest>,
    ) -> Result<Response<StartBenchReply>, Status> {
        self.operator(&request, "start benchmark runs")?;
        bench::start(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<RunStatus>, Status> {
        self.viewer(&request, "read runs")?;
        bench::run_status(&self.controller, &request.into_inner().run_id).map(Response::new)
    }

    type GetResultsStream = ReceiverStream<Result<GetResultsReply, Status>>;

    async fn get_results(
        &self,
        request: Request<GetResultsRequest>,
    ) -> Result<Response<Self::GetResultsStream>, Status> {
        self.viewer(&request, "read results")?;
        let ctl = self.controller.clone();
        let request = request.into_inner();
        // Reading and encoding a store's worth of results is blocking work.
        let replies = tokio::task::spawn_blocking(move || bench::results(&ctl, request))
            .await
            .map_err(internal)??;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            for reply in replies {
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.operator(&request, "start rollouts")?;
        rollouts::start(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsReply>, Status> {
        self.viewer(&request, "read rollouts")?;
        rollouts::list(&self.controller, &request.into_inner().rollout_id).map(Response::new)
    }

    async fn control_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.operator(&request, "control rollouts")?;
        rollouts::control(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_enrollment_token(
        &self,
        request: Request<CreateEnrollmentTokenRequest>,
    ) -> Result<Response<EnrollmentTokenReply>, Status> {
        self.operator(&request, "enroll agents")?;
        agents::enrollment_token(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn revoke_agent(
        &self,
        request: Request<AgentRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        self.operator(&request, "revoke agents")?;
        agents::revoke(&self.controller, &request.into_inner().agent).map(Response::new)
    }

    async fn remove_agent(
        &self,
        request: Request<AgentRequest>,
    ) -> Result<Response<RemoveAgentReply>, Status> {
        self.operator(&request, "remove agents")?;
        agents::remove(&self.controller, &request.into_inner().agent).map(Response::new)
    }

    async fn create_admin_token(
        &self,
        request: Request<CreateAdminTokenRequest>,
    ) -> Result<Response<AdminTokenReply>, Status> {
        self.operator(&request, "create admin tokens")?;
        tokens::create(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn list_admin_tokens(
        &self,
        request: Request<ListAdminTokensRequest>,
    ) -> Result<Response<ListAdminTokensReply>, Status> {
        self.operator(&request, "list admin tokens")?;
        tokens::list(&self.controller).map(Response::new)
    }

    async fn revoke_admin_token(
        &self,
        request: Request<RevokeAdminTokenRequest>,
    ) -> Result<Response<AdminTokenInfo>, Status> {
        self.operator(&request, "revoke admin tokens")?;
        tokens::revoke(&self.controller, &request.into_inner().name).map(Response::new)
    }

    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<CompareReply>, Status> {
        self.viewer(&request, "compare results")?;
        comparisons::compare(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn set_baseline(
        &self,
        request: Request<SetBaselineRequest>,
    ) -> Result<Response<BaselinesReply>, Status> {
        self.operator(&request, "set baselines")?;
        comparisons::set_baseline(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn list_baselines(
        &self,
        request: Request<ListBaselinesRequest>,
    ) -> Result<Response<BaselinesReply>, Status> {
        self.viewer(&request, "list baselines")?;
        comparisons::list_baselines(&self.controller, &request.into_inner().suite)
            .map(Response::new)
    }

    async fn list_regressions(
        &self,
        request: Request<ListRegressionsRequest>,
    ) -> Result<Response<RegressionsReply>, Status> {
        self.viewer(&request, "list regressions")?;
        comparisons::list_regressions(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn acknowledge_regression(
        &self,
        request: Request<AcknowledgeRegressionRequest>,
    ) -> Result<Response<Regression>, Status> {
        self.operator(&request, "acknowledge regressions")?;
        comparisons::acknowledge(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn add_schedule(
        &self,
        request: Request<AddScheduleRequest>,
    ) -> Result<Response<ScheduleInfo>, Status> {
        self.operator(&request, "add schedules")?;
        schedules::add(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesReply>, Status> {
        self.viewer(&request, "list schedules")?;
        schedules::list(&self.controller).map(Response::new)
    }

    async fn remove_schedule(
        &self,
        request: Request<ScheduleRequest>,
    ) -> Result<Response<RemoveScheduleReply>, Status> {
        self.operator(&request, "remove schedules")?;
        schedules::remove(&self.controller, &request.into_inner().name)
            .await
            .map(Response::new)
    }

    async fn run_schedule(
        &self,
        request: Request<ScheduleRequest>,
    ) -> Result<Response<ScheduleFire>, Status> {
        self.operator(&request, "run schedules")?;
        schedules::run(&self.controller, &request.into_inner().name)
            .await
            .map(Response::new)
    }
}
