"""Generated gRPC API code (``certsync.v1``); regenerate with ``python proto/generate.py``.

The modules here other than this one are generated from ``proto/certsync/v1/`` and never
edited by hand; ``tests/node/test_generated.py`` fails when they drift from the ``.proto``.
"""

from node.api import certsync_pb2, certsync_pb2_grpc

__all__ = ["SERVICE_NAME", "certsync_pb2", "certsync_pb2_grpc"]

#: the fully qualified name of the store service (for health checks and reflection)
SERVICE_NAME: str = certsync_pb2.DESCRIPTOR.services_by_name["CertStore"].full_name
