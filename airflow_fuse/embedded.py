"""The embedded S3-compatible server (moto in server mode) on 127.0.0.1, for the demo and the tests.

Needs the ``embedded`` extra (``pip install 'airflow-fuse[embedded]'``). Real HTTP, real botocore
stack, bucket versioning supported; no credentials are checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ACCESS_KEY = "embedded-access-key"
SECRET_KEY = "embedded-secret-key"


@dataclass
class S3Server:
    """A running S3-compatible server and how to reach it."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    _stop: Any = field(default=None, repr=False)

    def connection_json(self) -> str:
        """An Airflow connection (``AIRFLOW_CONN_<ID>`` value) pointing at this server."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )

    def client(self, *, fast_timestamps: bool = False, **config: Any) -> Any:
        """A boto3 client for this server; ``fast_timestamps`` as the CLI's and the hook's clients parse."""
        from botocore.config import Config

        from airflow_fuse.s3 import make_session

        return make_session(fast_timestamps=fast_timestamps).client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=64, **config),
        )

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def start_moto(port: int = 0) -> S3Server:
    """Start moto's threaded S3 server on 127.0.0.1 (``port=0`` picks a free port)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the embedded S3 server needs moto: pip install 'airflow-fuse[embedded]'") from exc
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return S3Server(
        name="moto",
        endpoint_url=f"http://{host}:{bound_port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        _stop=server.stop,
    )
