"""The real ``Engine`` for cuts and captures: one Engine API call per method."""

from __future__ import annotations

from typing import Any

from persona.errors import CaptureError
from persona.lab import engine as lab_engine


class DockerEngine:
    def __init__(self, client: Any) -> None:
        self.client = client

    def pause(self, cid: str) -> None:
        self.client.pause(cid)

    def unpause(self, cid: str) -> None:
        self.client.unpause(cid)

    def state(self, cid: str) -> str:
        try:
            st = self.client.inspect_container(cid)["State"]
        except Exception as e:
            raise CaptureError(f"container {cid[:12]} vanished: {e}") from e
        if st.get("Paused"):
            return "paused"
        return str(st.get("Status", "unknown"))

    def checkpoint(self, cid: str, name: str, directory: str) -> None:
        lab_engine.checkpoint_create(self.client, cid, name, directory, exit_=False)
