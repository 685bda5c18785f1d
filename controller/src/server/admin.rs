//! The admin service the CLI talks to. This file is the gRPC surface only: each call hands its
//! request to the file of its resource ([`models`], [`bench`], [`rollouts`]; agents are one
//! listing, here), and store errors become status codes in one place.

mod bench;
mod models;
mod rollouts;

use edgefleet_proto::v1::admin_server::Admin;
use edgefleet_proto::v1::{
    AddModelRequest, AgentInfo, ControlRolloutRequest, GetResultsReply, GetResultsRequest,
    GetRunRequest, ListAgentsReply, ListAgentsRequest, ListModelsReply, ListModelsRequest,
    ListRolloutsReply, ListRolloutsRequest, ModelDetail, ModelInfo, ModelRequest, RemoveModelReply,
    RemoveModelRequest, RolloutStatus, RunStatus, StartBenchReply, StartBenchRequest,
    StartRolloutRequest,
};
use tonic::{Request, Response, Status, Streaming};

use super::Controller;
use crate::planning::target_key;
use crate::store::StoreError;

pub use rollouts::rollout_status;

pub struct AdminService {
    controller: Controller,
}

impl AdminService {
    pub fn new(controller: Controller) -> Self {
        AdminService { controller }
    }
}

/// An error of ours (not of the request) as INTERNAL.
fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::ModelExists(_) => Status::already_exists(e.to_string()),
            other => internal(other),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        let ctl = &self.controller;
        let agents = ctl
            .store
            .agents()?
            .into_iter()
            .map(|a| AgentInfo {
                online: ctl.fleet.is_online(&a.id),
                target: target_key(&a.hardware),
                agent_id: a.id,
                name: a.name,
                labels: a.labels.into_iter().collect(),
                agent_version: a.agent_version,
                hardware: Some(a.hardware),
                last_seen_unix_ms: a.last_seen_ms,
                first_seen_unix_ms: a.first_seen_ms,
            })
            .collect();
        Ok(Response::new(ListAgentsReply { agents }))
    }

    async fn add_model(
        &self,
        request: Request<Streaming<AddModelRequest>>,
    ) -> Result<Response<ModelInfo>, Status> {
        models::add(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsReply>, Status> {
        models::list(&self.controller).map(Response::new)
    }

    async fn show_model(
        &self,
        request: Request<ModelRequest>,
    ) -> Result<Response<ModelDetail>, Status> {
        models::show(&self.controller, request.into_inner()).map(Response::new)
    }

    async fn remove_model(
        &self,
        request: Request<RemoveModelRequest>,
    ) -> Result<Response<RemoveModelReply>, Status> {
        models::remove(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_bench(
        &self,
        request: Request<StartBenchRequest>,
    ) -> Result<Response<StartBenchReply>, Status> {
        bench::start(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<RunStatus>, Status> {
        bench::run_status(&self.controller, &request.into_inner().run_id).map(Response::new)
    }

    async fn get_results(
        &self,
        request: Request<GetResultsRequest>,
    ) -> Result<Response<GetResultsReply>, Status> {
        bench::results(&self.controller, &request.into_inner().run_id).map(Response::new)
    }

    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        rollouts::start(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsReply>, Status> {
        rollouts::list(&self.controller, &request.into_inner().rollout_id).map(Response::new)
    }

    async fn control_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        rollouts::control(&self.controller, request.into_inner())
            .await
            .map(Response::new)
    }
}
