//! `fedreg.v1.EnrollmentService`: `Enroll`, called without a token by a
//! registry joining with an invitation (the invitation's secret is its
//! credential); the operation is [`crate::registry::invitations::enroll`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::peering::follow::Followers;
use crate::proto::v1 as pb;
use crate::proto::v1::enrollment_service_server::EnrollmentService;
use crate::registry::invitations::{self, Serving};
use crate::store::Store;

/// Serves enrolments.
#[derive(Clone)]
pub struct EnrollmentApi {
    store: Store,
    followers: Followers,
    serving: Arc<Serving>,
}

impl EnrollmentApi {
    /// A service over `store`, for the registry `serving` describes; tells
    /// `followers` when a peer record is created.
    pub fn new(store: Store, followers: Followers, serving: Arc<Serving>) -> EnrollmentApi {
        EnrollmentApi {
            store,
            followers,
            serving,
        }
    }
}

#[tonic::async_trait]
impl EnrollmentService for EnrollmentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Ok(Response::new(
            invitations::enroll(
                &self.store,
                &self.followers,
                &self.serving,
                request.into_inner(),
            )
            .await?,
        ))
    }
}
