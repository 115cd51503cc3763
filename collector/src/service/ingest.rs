//! `IngestService`: agents stream events in; each is validated, analysed,
//! queued for the batch writer, and acknowledged once stored, in the order
//! it came.

use std::sync::Arc;

use oomlens_proto::v1::ingest_service_server::IngestService;
use oomlens_proto::v1::{AckStatus, IngestAck, IngestRequest, OomEvent, ingest_request};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::analysis::analyse;
use crate::hub::Published;
use crate::metrics::IngestResult;
use crate::store::Inserted;

use super::writer::{WRITE_QUEUE, WriteRequest};
use super::{BoxStream, Collector};

/// `IngestService`: agents stream events; each is acknowledged once stored.
#[derive(Debug, Clone)]
pub struct Ingest {
    collector: Collector,
}

impl Ingest {
    pub fn new(collector: Collector) -> Self {
        Self { collector }
    }
}

/// An event on its way to an ack.
enum Pending {
    Write(oneshot::Receiver<Result<Inserted, String>>),
    Rejected(String),
}

/// Marks a rejection among the error texts on the ack path.
const REJECTED: &str = "rejected: ";

fn ack(id: String, status: AckStatus, message: impl Into<String>) -> IngestAck {
    IngestAck {
        id,
        status: status as i32,
        message: message.into(),
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    type IngestStream = BoxStream<IngestAck>;

    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "?".to_owned(), |a| a.to_string());
        let mut incoming = request.into_inner();
        let collector = self.collector.clone();
        let (acks, ack_stream) = mpsc::channel::<Result<IngestAck, Status>>(WRITE_QUEUE);
        // Acks go out in the order events came in, while later events are
        // already queued for the next batch.
        let (pending, mut pending_rx) = mpsc::channel::<(String, Pending)>(WRITE_QUEUE);
        tokio::spawn(async move {
            while let Some((id, waiting)) = pending_rx.recv().await {
                let answer = match waiting {
                    Pending::Write(answer) => answer.await,
                    Pending::Rejected(why) => Ok(Err(why)),
                };
                let reply = match answer {
                    Ok(Ok(Inserted::Stored(_))) => Ok(ack(id, AckStatus::Stored, "")),
                    Ok(Ok(Inserted::Duplicate)) => Ok(ack(id, AckStatus::Duplicate, "already stored")),
                    Ok(Err(why)) if why.starts_with(REJECTED) => {
                        Ok(ack(id, AckStatus::Rejected, why.trim_start_matches(REJECTED)))
                    }
                    // Not an ack: the agent keeps the event and resends it.
                    Ok(Err(error)) => Err(Status::unavailable(format!("event {id} not stored: {error}"))),
                    Err(_) => return,
                };
                let failed = reply.is_err();
                if acks.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let metrics = Arc::clone(collector.metrics());
            metrics.agent_connected(1);
            let mut node = String::new();
            let closed = collector.closed();
            tokio::pin!(closed);
            loop {
                let message = tokio::select! {
                    message = incoming.message() => message,
                    () = &mut closed => break,
                };
                let item = match message {
                    Ok(Some(request)) => request.item,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%peer, %node, %status, "ingest stream ended");
                        break;
                    }
                };
                match item {
                    Some(ingest_request::Item::Hello(hello)) => {
                        info!(%peer, node = %hello.node, version = %hello.agent_version, "agent connected");
                        node = hello.node;
                    }
                    Some(ingest_request::Item::Event(event)) => {
                        if let Err(why) = validate(&event) {
                            metrics.ingested(IngestResult::Rejected);
                            warn!(%peer, %node, id = %event.id, why, "event rejected");
                            // In line with the other acks: they go out in order.
                            let rejected = Pending::Rejected(format!("{REJECTED}{why}"));
                            if pending.send((event.id, rejected)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let (reply, answer) = oneshot::channel();
                        let id = event.id.clone();
                        let mut event = event;
                        if event.analysis.is_none() {
                            event.analysis = Some(analyse(&event, &collector.rules));
                        }
                        if collector
                            .writes
                            .send(WriteRequest { event, reply })
                            .await
                            .is_err()
                            || pending.send((id, Pending::Write(answer))).await.is_err()
                        {
                            break;
                        }
                    }
                    Some(ingest_request::Item::Warning(warning)) => {
                        metrics.warning();
                        collector.hub.publish(Published::Warning(Arc::new(warning)));
                    }
                    Some(ingest_request::Item::Status(report)) => {
                        for status in report.containers {
                            collector.record_status(status);
                        }
                    }
                    None => {}
                }
            }
            metrics.agent_connected(-1);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_stream))))
    }
}

/// What makes an event unstorable.
fn validate(event: &OomEvent) -> Result<(), &'static str> {
    if event.id.is_empty() {
        return Err("the event has no id");
    }
    if event.id.len() > 128 {
        return Err("the event id is longer than 128 characters");
    }
    if event.time.is_none() {
        return Err("the event has no time");
    }
    Ok(())
}
