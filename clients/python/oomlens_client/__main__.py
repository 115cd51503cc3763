"""`python3 -m oomlens_client`: follow kills, list them, or probe health.

    python3 -m oomlens_client watch --collector 127.0.0.1:7460 --namespace shop --cursor-file ~/.oomlens-cursor
    python3 -m oomlens_client events --collector 127.0.0.1:7460 --scope node_oom
    python3 -m oomlens_client health --collector 127.0.0.1:7460 --service oomlens.v1.IngestService
"""

import argparse
import json
import pathlib
import signal
import sys

import grpc
from google.protobuf import json_format

from . import Collector, CursorFile, event_filter


def _token(args) -> str:
    if args.token_file:
        return pathlib.Path(args.token_file).read_text().strip()
    return None


def _collector(args) -> Collector:
    return Collector(args.collector, token=_token(args), ca_cert=args.ca_cert)


def _filter(args):
    return event_filter(
        namespaces=args.namespace,
        pods=args.pod,
        nodes=args.node,
        containers=args.container,
        workloads=args.workload,
        scopes=args.scope,
        silent_only=args.silent,
    )


def _size(value: int) -> str:
    if not value:
        return "-"
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.0f}{unit}"
    return f"{value}B"


def _line(event, cursor: str, as_json: bool) -> str:
    if as_json:
        body = json_format.MessageToDict(event, preserving_proto_field_name=True)
        return json.dumps({"cursor": cursor, "event": body}, sort_keys=True)
    from oomlens.v1 import event_pb2

    when = event.time.ToJsonString() if event.HasField("time") else "-"
    pod = f"{event.pod.namespace}/{event.pod.name}" if event.HasField("pod") and event.pod.name else "-"
    container = event.container.name if event.HasField("container") and event.container.name else "-"
    scope = event_pb2.Scope.Name(event.scope).removeprefix("SCOPE_").lower()
    victim = f"{event.victim.comm} (pid {event.victim.pid})" if event.HasField("victim") else "-"
    limit = event.container.memory_limit_bytes if event.HasField("container") else 0
    return f"{when}  {event.node or '-'}  {pod}  {container}  {scope}  {victim}  limit {_size(limit)}  {event.id[:8]}"


def watch(args) -> int:
    collector = _collector(args)
    cursor = CursorFile(args.cursor_file) if args.cursor_file else None
    for position, event in collector.follow(_filter(args), cursor=cursor, from_beginning=args.from_beginning):
        print(_line(event, position, args.json), flush=True)
    return 0


def events(args) -> int:
    collector = _collector(args)
    for event in collector.query(_filter(args)):
        print(_line(event, "", args.json), flush=True)
    return 0


def health(args) -> int:
    """Exit 0 when the service is SERVING, 1 otherwise (grpc_health_probe style)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    collector = _collector(args)
    stub = health_pb2_grpc.HealthStub(collector.channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"health check of {args.service or 'the server'} failed: {error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.service or 'server'}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m oomlens_client", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collector", default="127.0.0.1:7460", help="the collector's gRPC address, host:port")
    common.add_argument("--token-file", help="a file holding a read token")
    common.add_argument("--ca-cert", help="CA certificate (PEM): connect with TLS")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("watch", "follow new kills"), ("events", "list stored kills, newest first")):
        command = commands.add_parser(name, help=help_text, parents=[common])
        for flag in ("namespace", "pod", "node", "container", "workload", "scope"):
            command.add_argument(f"--{flag}", action="append", default=[], help=f"only this {flag} (repeatable)")
        command.add_argument("--silent", action="store_true", help="only silent kills")
        command.add_argument("--json", action="store_true", help="one JSON object per line (protobuf's JSON mapping)")
        if name == "watch":
            command.add_argument("--cursor-file", help="save the position here and resume from it")
            command.add_argument("--from-beginning", action="store_true", help="without a saved position, start with every stored kill")
    probe = commands.add_parser("health", help="grpc.health.v1 check; exit 0 when SERVING", parents=[common])
    probe.add_argument("--service", default="", help="e.g. oomlens.v1.IngestService; empty: the server")
    probe.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM end quietly; the cursor file is already saved.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return {"watch": watch, "events": events, "health": health}[args.command](args)
    except KeyboardInterrupt:
        return 0
    except grpc.RpcError as error:
        print(f"error: {error.code().name.lower()}: {error.details()}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
