"""Thin adapter over the Docker Engine API (docker SDK's low-level APIClient).

Every docker/requests error is translated here, once, into ``LabError`` with what to do.
Checkpoint routes are called directly: docker-py has no methods for them.
"""

from __future__ import annotations

import os
from typing import Any

from persona.errors import LabError

SOCKET = "/var/run/docker.sock"
START_HINT = "start it with: persona lab up  (or: dockerd --experimental >/var/log/dockerd.log 2>&1 &)"


def connect(timeout: float = 30.0, base_url: str | None = None) -> Any:
    """An APIClient for the local engine, or LabError saying why not and how to fix it."""
    try:
        import docker
    except ImportError as e:
        raise LabError("the docker SDK is missing: pip install -e '.[live]'") from e
    url = base_url or os.environ.get("DOCKER_HOST") or f"unix://{SOCKET}"
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        raise LabError(f"Docker engine is not running (no socket {url[7:]}); {START_HINT}")
    try:
        client = docker.APIClient(base_url=url, version="auto", timeout=timeout)
        client.ping()
    except Exception as e:
        raise LabError(f"Docker engine at {url} does not answer ({e}); {START_HINT}") from e
    return client


def experimental(client: Any) -> bool:
    return bool(client.version().get("Experimental"))


def checkpoint_create(client: Any, container_id: str, name: str, directory: str | None,
                      exit_: bool = False) -> None:
    """POST /containers/{id}/checkpoints (Exit false keeps the container running)."""
    body: dict[str, Any] = {"CheckpointID": name, "Exit": exit_}
    if directory is not None:
        body["CheckpointDir"] = directory
    res = client._post_json(client._url("/containers/{0}/checkpoints", container_id), data=body)
    _raise(client, res, f"checkpoint of {container_id[:12]}")


def start_from_checkpoint(client: Any, container_id: str, name: str) -> None:
    """POST /containers/{id}/start?checkpoint=name (checkpoint under the container's folder)."""
    res = client._post(client._url("/containers/{0}/start", container_id),
                       params={"checkpoint": name})
    _raise(client, res, f"restore of {container_id[:12]} from {name}")


def _raise(client: Any, res: Any, what: str) -> None:
    try:
        client._raise_for_status(res)
    except Exception as e:
        raise LabError(f"{what} failed: {e}") from e
