//! `IngestService`: agents stream events in; each is validated, analysed,
//! queued for the batch writer, and acknowledged once stored, in the order
//! it came. What cannot be taken is answered, never dropped in silence: an
//! invalid event with a `REJECTED` ack (the stream goes on), a message that
//! cannot be read (malformed, too large) with the status that ends the
//! stream, after the acks of the events before it; each logged at `warn`
//! with the peer.

use std::sync::Arc;

use oomlens_proto::history;
use oomlens_proto::v1::ingest_service_server::IngestService;
use oomlens_proto::v1::{AckStatus, IngestAck, IngestRequest, OomEvent, ingest_request};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::analysis::analyse;
use crate::hub::Published;
use crate::metrics::{IngestResult, Refused};
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

/// What the ack stream answers next, in the order the requests came.
enum Pending {
    /// An event queued for the writer (its id, its result).
    Write(String, oneshot::Receiver<Result<Inserted, String>>),
    /// An invalid event (its id, why).
    Rejected(String, &'static str),
    /// The stream ends with this status.
    End(Status),
}

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
        let (pending, mut pending_rx) = mpsc::channel::<Pending>(WRITE_QUEUE);
        tokio::spawn(async move {
            while let Some(waiting) = pending_rx.recv().await {
                let reply = match waiting {
                    Pending::Write(id, answer) => match answer.await {
                        Ok(Ok(Inserted::Stored(_))) => Ok(ack(id, AckStatus::Stored, "")),
                        Ok(Ok(Inserted::Duplicate)) => Ok(ack(id, AckStatus::Duplicate, "already stored")),
                        // Not an ack: the agent keeps the event and resends it.
                        Ok(Err(error)) => Err(Status::unavailable(format!("event {id} not stored: {error}"))),
                        Err(_) => Err(Status::unavailable(format!(
                            "event {id} not stored: the store writer stopped"
                        ))),
                    },
                    Pending::Rejected(id, why) => Ok(ack(id, AckStatus::Rejected, why)),
                    Pending::End(status) => Err(status),
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
            let mut unknown_items = false;
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
                        match refusal(&status) {
                            Some((why, answer)) => {
                                metrics.refused(why);
                                warn!(%peer, %node, code = ?answer.code(), reason = answer.message(), "ingest message refused; the stream ends");
                                let _ = pending.send(Pending::End(answer)).await;
                            }
                            // The connection broke: nobody left to tell.
                            None => debug!(%peer, %node, %status, "ingest stream ended"),
                        }
                        break;
                    }
                };
                match item {
                    Some(ingest_request::Item::Hello(hello)) => {
                        info!(%peer, node = %hello.node, version = %hello.agent_version, "agent connected");
                        node = hello.node;
                    }
                    Some(ingest_request::Item::Event(mut event)) => {
                        let packed = match unpack_histories(&mut event)
                            .and_then(|packed| validate(&event).map(|()| packed))
                        {
                            Ok(packed) => packed,
                            Err(why) => {
                                metrics.ingested(IngestResult::Rejected);
                                warn!(%peer, %node, id = %event.id, why, "event rejected");
                                // In line with the other acks: they go out in order.
                                if pending.send(Pending::Rejected(event.id, why)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        };
                        let (reply, answer) = oneshot::channel();
                        let id = event.id.clone();
                        if event.analysis.is_none() {
                            event.analysis = Some(analyse(&event, &collector.rules));
                        }
                        let plain_len = event.encoded_len();
                        // Queued, stored and kept for subscribers packed:
                        // in the agent's own bytes, or packed here (in
                        // parallel across agents, not in the one writer).
                        history::pack_event_keeping(&mut event, packed);
                        // Waits while the writer's queue holds its budget
                        // of bytes (the agent's stream waits with it).
                        let wanted = oomlens_common::limits::resident_bytes(&event)
                            .clamp(1, collector.limits.write_queue_bytes);
                        let budget = tokio::select! {
                            budget = Arc::clone(&collector.write_budget)
                                .acquire_many_owned(u32::try_from(wanted).unwrap_or(u32::MAX)) => budget,
                            () = &mut closed => break,
                        };
                        let Ok(budget) = budget else {
                            let stopping = Status::unavailable("the store writer stopped");
                            let _ = pending.send(Pending::End(stopping)).await;
                            break;
                        };
                        if collector
                            .writes
                            .send(WriteRequest {
                                event,
                                plain_len,
                                reply,
                                budget,
                            })
                            .await
                            .is_err()
                        {
                            let stopping = Status::unavailable("the store writer stopped");
                            let _ = pending.send(Pending::End(stopping)).await;
                            break;
                        }
                        if pending.send(Pending::Write(id, answer)).await.is_err() {
                            break;
                        }
                    }
                    Some(ingest_request::Item::Warning(mut warning)) => {
                        // Served unpacked, as events are; a damaged one
                        // goes without its history.
                        if let Some(h) = warning.history.as_mut()
                            && let Err(error) = history::unpack(h)
                        {
                            warn!(%peer, %node, %error, "a warning's packed memory history does not decode; dropped");
                            h.packed.clear();
                        }
                        metrics.warning();
                        if let Some(fleet) = &collector.fleet {
                            fleet.warn(&warning);
                        }
                        collector.hub.publish(Published::Warning(Arc::new(warning)));
                    }
                    Some(ingest_request::Item::Status(report)) => {
                        if let Some(fleet) = &collector.fleet {
                            fleet.offer(&node, &report);
                        }
                        for status in report.containers {
                            collector.record_status(status);
                        }
                    }
                    // A newer agent's kind of item (unknown fields decode
                    // to none): skipped, so that it can still send events.
                    None => {
                        if !unknown_items {
                            warn!(%peer, %node, "ingest request with no item this collector knows (a newer agent?); such requests are skipped");
                            unknown_items = true;
                        }
                    }
                }
            }
            metrics.agent_connected(-1);
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(ack_stream)) as Self::IngestStream);
        // Agents may send histories packed.
        history::say_packed(response.metadata_mut());
        Ok(response)
    }
}

/// Unpacks the histories of an event from an agent that packs them (see
/// the response header), returning the packed bytes; damaged ones reject
/// the event.
fn unpack_histories(event: &mut OomEvent) -> Result<[Vec<u8>; 2], &'static str> {
    history::unpack_event_keeping(event).map_err(|error| {
        warn!(id = %event.id, %error, "an event's packed memory history does not decode");
        "the event's packed memory history does not decode"
    })
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

/// The answer to a request stream that failed on a message the client
/// sent, with why; None when the connection itself broke (nobody is left
/// to answer). tonic reports a message over the size limit as
/// OUT_OF_RANGE (RESOURCE_EXHAUSTED once decompressed) and one that is
/// not a well-formed request (bad protobuf, invalid UTF-8, a bad frame
/// flag, a cut-off message) as INTERNAL; HTTP/2 failures say so.
fn refusal(status: &Status) -> Option<(Refused, Status)> {
    let reason = status.message();
    if reason.starts_with("h2 protocol error") {
        return None;
    }
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => Some((
            Refused::TooLarge,
            Status::resource_exhausted(format!(
                "ingest message too large (an event is at most {} MiB): {reason}",
                oomlens_common::limits::MAX_EVENT_BYTES >> 20
            )),
        )),
        Code::Internal => Some((
            Refused::Malformed,
            Status::invalid_argument(format!("malformed ingest message: {reason}")),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_the_client_sent_is_refused_with_a_reason_a_broken_connection_is_not() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 17000000 bytes, the limit is: 16777216 bytes",
        );
        let (why, answer) = refusal(&too_large).unwrap();
        assert_eq!(why, Refused::TooLarge);
        assert_eq!(answer.code(), Code::ResourceExhausted);
        assert!(answer.message().contains("found 17000000 bytes"), "{answer}");
        let malformed = Status::internal("failed to decode Protobuf message: invalid wire type");
        let (why, answer) = refusal(&malformed).unwrap();
        assert_eq!(why, Refused::Malformed);
        assert_eq!(answer.code(), Code::InvalidArgument);
        assert!(answer.message().contains("invalid wire type"), "{answer}");
        for broken in [
            Status::cancelled("h2 protocol error: stream reset"),
            Status::internal("h2 protocol error: connection reset"),
            Status::resource_exhausted("h2 protocol error: enhance your calm"),
            Status::unknown("connection reset by peer"),
        ] {
            assert!(refusal(&broken).is_none(), "{broken}");
        }
    }
}
