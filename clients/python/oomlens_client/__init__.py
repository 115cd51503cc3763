"""A Python client for the oomlens collector's gRPC API.

The oomlens.v1 modules are generated from the repository's proto/ by
generate.py (not committed); this package puts them on the import path.
"""

import pathlib
import sys

_GENERATED = pathlib.Path(__file__).resolve().parent / "_generated"
if not (_GENERATED / "oomlens" / "v1" / "query_pb2.py").exists():
    raise ImportError(
        "oomlens_client: the oomlens.v1 modules are not generated yet: run python3 clients/python/generate.py"
    )
if str(_GENERATED) not in sys.path:
    # The generated modules import each other as `oomlens.v1.*`.
    sys.path.insert(0, str(_GENERATED))

from oomlens.v1 import event_pb2, query_pb2, query_pb2_grpc  # noqa: E402

from .client import Collector, CursorFile, RETRYABLE, event_filter  # noqa: E402

__all__ = ["Collector", "CursorFile", "RETRYABLE", "event_filter", "event_pb2", "query_pb2", "query_pb2_grpc"]
