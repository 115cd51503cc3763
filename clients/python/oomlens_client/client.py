"""Connecting to a collector, reading stored kills, and following new ones
with a saved cursor across disconnections and collector restarts."""

import os
import pathlib
import random
import sys
import tempfile
import time
from typing import Iterator, Optional, Sequence, Tuple

import grpc
from oomlens.v1 import event_pb2, query_pb2, query_pb2_grpc

# Worth another try: the collector restarting, overloaded, or the network.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def event_filter(
    namespaces: Sequence[str] = (),
    pods: Sequence[str] = (),
    nodes: Sequence[str] = (),
    containers: Sequence[str] = (),
    workloads: Sequence[str] = (),
    scopes: Sequence[str] = (),
    silent_only: bool = False,
) -> query_pb2.EventFilter:
    """An EventFilter; scopes as the JSON words (`pod_limit`, `node_oom`, ...)."""
    try:
        scope_values = [event_pb2.Scope.Value("SCOPE_" + word.upper()) for word in scopes]
    except ValueError as error:
        raise ValueError(f"unknown scope in {list(scopes)}: {error}") from None
    return query_pb2.EventFilter(
        namespaces=list(namespaces),
        pods=list(pods),
        nodes=list(nodes),
        containers=list(containers),
        workloads=list(workloads),
        scopes=scope_values,
        silent_only=silent_only,
    )


class CursorFile:
    """The last cursor handed to the caller, kept in a file so that a
    restarted subscriber resumes where it stopped. Written atomically
    (a temporary file renamed over it), so a crash never leaves half a
    cursor."""

    def __init__(self, path: str):
        self.path = pathlib.Path(path)

    def load(self) -> str:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return ""
        if text and not text.isdigit():
            raise ValueError(f"{self.path} does not hold a cursor: {text[:40]!r}")
        return text

    def save(self, cursor: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(cursor + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise


class Collector:
    """A connection to a collector's gRPC port (`host:port`)."""

    def __init__(self, target: str, token: Optional[str] = None, ca_cert: Optional[str] = None):
        self.target = target
        if ca_cert is not None:
            credentials = grpc.ssl_channel_credentials(pathlib.Path(ca_cert).read_bytes())
            self.channel = grpc.secure_channel(target, credentials)
        else:
            self.channel = grpc.insecure_channel(target)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.events = query_pb2_grpc.EventServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def query(self, filter: Optional[query_pb2.EventFilter] = None, page_size: int = 100) -> Iterator[event_pb2.OomEvent]:
        """Every stored event matching `filter`, newest first, page after page."""
        token = ""
        while True:
            page = self.events.Query(
                query_pb2.QueryRequest(filter=filter, page_size=page_size, page_token=token),
                metadata=self.metadata,
            )
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def get(self, event_id: str) -> event_pb2.OomEvent:
        """One event by its id or a unique prefix (at least 4 characters)."""
        return self.events.Get(query_pb2.GetRequest(id=event_id), metadata=self.metadata)

    def follow(
        self,
        filter: Optional[query_pb2.EventFilter] = None,
        cursor: Optional[CursorFile] = None,
        from_beginning: bool = False,
        max_backoff: float = 5.0,
    ) -> Iterator[Tuple[str, event_pb2.OomEvent]]:
        """New kills as `(cursor, event)`, resubscribing after every
        disconnection with the last cursor, so nothing is missed or
        repeated. With `cursor`, the position is saved once the caller has
        taken an event (when it asks for the next one), and loaded at the
        start: a restarted program resumes too. Without a saved position,
        starts with kills stored from now on (or every stored kill, with
        `from_beginning`)."""
        position = cursor.load() if cursor else ""
        if not position and from_beginning:
            position = "0"
        backoff = 0.2
        while True:
            try:
                request = query_pb2.SubscribeRequest(filter=filter, cursor=position)
                for response in self.events.Subscribe(request, metadata=self.metadata):
                    backoff = 0.2
                    kind = response.WhichOneof("item")
                    if kind == "event":
                        yield response.cursor, response.event
                        position = response.cursor
                        if cursor:
                            cursor.save(position)
                    elif kind == "lagged":
                        # The collector catches up from its store by itself.
                        print(
                            f"oomlens: fell behind by {response.lagged.missed} items; catching up",
                            file=sys.stderr,
                        )
                # The collector ended the stream (shutting down): resume.
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE:
                    raise
                print(
                    f"oomlens: {error.code().name.lower()}: {error.details()}; resubscribing",
                    file=sys.stderr,
                )
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, max_backoff)
