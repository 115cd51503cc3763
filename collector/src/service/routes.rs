//! `EventService` as served over gRPC: the generated routes, except that
//! `Subscribe` sends each response as bytes encoded beforehand.
//!
//! Through the generated route every subscriber's stream would copy and
//! encode each event itself: a storm of kills with their histories, fanned
//! out to 50 subscribers, was 50 encodings of every kill and the
//! collector's bottleneck. Here an event is encoded once, the first time a
//! subscriber is sent it ([`crate::hub::SharedEvent`]), and every
//! subscriber is sent those bytes. What a client receives is unchanged,
//! unless it asks for histories packed (the `oomlens-history: packed`
//! request header, as agents are told): a third of the bytes, for
//! clients that unpack them with `oomlens_proto::history`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryStreamExt as _;
use oomlens_proto::codec::SliceCodec;
use oomlens_proto::history;
use oomlens_proto::preencoded::Preencoded;
use oomlens_proto::v1::SubscribeRequest;
use oomlens_proto::v1::event_service_server::EventServiceServer;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use super::queries::check_filter;
use super::{BoxStream, Collector, Events, subscribe};

const SUBSCRIBE_PATH: &str = "/oomlens.v1.EventService/Subscribe";

/// `EventServiceServer` with `Subscribe` pre-encoded.
#[derive(Debug, Clone)]
pub struct EventRoutes {
    generated: EventServiceServer<Events>,
    collector: Collector,
    max_encoding_message_size: usize,
}

impl EventRoutes {
    /// Serves `collector`'s events; no response larger than
    /// `max_encoding_message_size` is sent (as the generated server's
    /// setting of that name).
    pub fn new(collector: Collector, max_encoding_message_size: usize) -> Self {
        Self {
            generated: EventServiceServer::new(Events::new(collector.clone()))
                .max_encoding_message_size(max_encoding_message_size),
            collector,
            max_encoding_message_size,
        }
    }
}

impl NamedService for EventRoutes {
    const NAME: &'static str = <EventServiceServer<Events> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for EventRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(request);
        }
        let method = EncodedSubscribe(self.collector.clone());
        let max_encoding_message_size = self.max_encoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SliceCodec::<Preencoded, SubscribeRequest>::default())
                .apply_max_message_size_config(None, Some(max_encoding_message_size));
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

/// `Subscribe`, answered with encoded responses.
struct EncodedSubscribe(Collector);

impl ServerStreamingService<SubscribeRequest> for EncodedSubscribe {
    type Response = Preencoded;
    type ResponseStream = BoxStream<Preencoded>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<SubscribeRequest>) -> Self::Future {
        let collector = self.0.clone();
        Box::pin(async move {
            // A client that reads packed histories says so, as the
            // collector does to agents; the answer confirms it.
            let packed = history::says_packed(request.metadata());
            let request = request.into_inner();
            check_filter(request.filter.as_ref())?;
            let responses = subscribe::start(&collector, request).await?;
            let metrics = Arc::clone(&collector.metrics);
            let encoded: BoxStream<Preencoded> =
                Box::pin(responses.map_ok(move |outgoing| outgoing.into_encoded(packed, &metrics)));
            let mut response = Response::new(encoded);
            if packed {
                history::say_packed(response.metadata_mut());
            }
            Ok(response)
        })
    }
}
