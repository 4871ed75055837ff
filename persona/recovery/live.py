"""Live adapters of the recovery workflow: Docker fencer, readiness, warm proof, cgroup CPU
accounting, the validation suite; and :func:`failover` (watch -> detect -> fence -> recover)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from persona.capture import probe as cprobe
from persona.detect.probes import check_address
from persona.errors import CaptureError, PersonaError, RestoreError
from persona.model import PersonaManifest
from persona.provision.engine import DockerProvisioner
from persona.provision.plan import host_ip
from persona.provision.warm import DemoProbe, WarmProof, prove_warm
from persona.recovery.fence import FenceResult, fence_host, kill_host
from persona.recovery.source import PersonaSource
from persona.recovery.workflow import (
    CpuSample,
    RecoveryOptions,
    RecoveryResult,
    ValidationResult,
    recover,
)

API_PORT = 8080
BASELINE_META = "baseline"


class DockerFencer:
    """``persona.detect.Fencer``: kill + remove every container of the host."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.results: list[FenceResult] = []

    def fence(self, host: str) -> None:
        self.results.append(fence_host(self.client, host))


def api_url(ip: str) -> str:
    check_address(ip)
    return f"http://{ip}:{API_PORT}"


def healthy(url: str, timeout_s: float = 0.5) -> bool:
    u = url.split("//", 1)[1]
    hostname, port = u.split(":")[0], int(u.split(":")[1].split("/")[0])
    conn = http.client.HTTPConnection(hostname, port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class LiveHooks:
    client: Any
    ip: str
    baseline: Any  # persona.validate.Baseline
    seed: int = 0
    budget_s: float | None = None
    verdict_dir: Path | None = None

    def wait_ready(self, host: str, timeout_s: float) -> None:
        url = api_url(self.ip)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if healthy(url, 0.3):
                return
            time.sleep(0.05)
        raise RestoreError(f"{host}'s API at {url} not healthy after {timeout_s:.0f} s")

    def prove_warm(self, manifest: PersonaManifest) -> WarmProof:
        host = manifest.host.name
        return prove_warm(manifest, DemoProbe(self.client, host, f"persona-{host}-redis"))

    def cpu(self, cid: str) -> CpuSample:
        try:
            s = cprobe.cgroup_sample(cid)
            stat = (cprobe.cgroup_dir("cpu", cid) / "cpu.stat").read_text().split()
        except (CaptureError, OSError) as e:
            raise PersonaError(f"cpu accounting of {cid[:12]}: {e}") from e
        kv = dict(zip(stat[::2], stat[1::2], strict=False))
        return CpuSample(
            s.t, s.cpu_ns, int(kv.get("nr_periods", 0)), int(kv.get("nr_throttled", 0))
        )

    def validate(self, manifest: PersonaManifest) -> ValidationResult:
        from persona.validate import Target, validate_target

        host = manifest.host.name
        t = Target(host, api_url(self.ip), None, _netns_pid(self.client, host))
        # the replacement's data starts from the capture, not from the baseline's recording
        since = datetime.fromisoformat(manifest.host.captured_at.replace("Z", "+00:00")).timestamp()
        v = validate_target(
            t, self.baseline, seed=self.seed, budget_s=self.budget_s, state_since=since
        )
        if self.verdict_dir is not None:
            v.write(self.verdict_dir)
        failed = tuple(m.name for m in v.metrics if not m.passed and m.critical)
        return ValidationResult(bool(v.passed), float(v.score), v.to_dict(), failed)


@dataclass
class NoValidation:
    """Hooks whose validation is skipped (``persona restore --no-validate``): the verdict says
    so, and the CLI reports ``validated: false``."""

    inner: LiveHooks

    def wait_ready(self, host: str, timeout_s: float) -> None:
        self.inner.wait_ready(host, timeout_s)

    def prove_warm(self, manifest: PersonaManifest) -> WarmProof:
        return self.inner.prove_warm(manifest)

    def cpu(self, cid: str) -> CpuSample:
        return self.inner.cpu(cid)

    def validate(self, manifest: PersonaManifest) -> ValidationResult:
        return ValidationResult(True, None, {"skipped": "persona restore --no-validate"})


def _netns_pid(client: Any, host: str) -> int | None:
    from persona.lab import demo

    try:
        return demo.netns_pid(client, host)
    except PersonaError:
        return None


def running_host_ip(client: Any, host: str) -> str:
    """The IP of a running host's namespace owner (the pause container)."""
    from persona.lab import demo, spec

    for c in demo.host_containers(client, host):
        if c["Labels"].get(spec.ROLE_LABEL) == "pause" and c["State"] == "running":
            return str(c["NetworkSettings"]["Networks"][spec.NETWORK]["IPAddress"])
    raise RestoreError(
        f"host {host!r} is not running (no running pause container); start it "
        "(persona lab up) or recover it from the store with --no-capture"
    )


def record(client: Any, host: str, ip: str, seed: int, budget_s: float) -> Any:
    """Record a validation baseline from the healthy running host."""
    from persona.validate import Target, record_baseline

    return record_baseline(
        Target(host, api_url(ip), None, _netns_pid(client, host)), seed=seed, budget_s=budget_s
    )


def ensure_baseline(
    client: Any,
    source: PersonaSource,
    host: str,
    ip: str,
    seed: int,
    budget_s: float,
    refresh: bool = False,
) -> Any:
    """The validation baseline of ``host``, recorded from the healthy original if missing."""
    from persona.validate import Baseline, Target, record_baseline

    if not refresh:
        d = source.read_meta(host, BASELINE_META)
        if d is not None:
            return Baseline.from_dict(d) if hasattr(Baseline, "from_dict") else _baseline(d)
    b = record_baseline(
        Target(host, api_url(ip), None, _netns_pid(client, host)), seed=seed, budget_s=budget_s
    )
    source.write_meta(host, BASELINE_META, b.to_dict())
    return b


def _baseline(d: dict[str, Any]) -> Any:
    import json
    import tempfile

    from persona.validate import Baseline

    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "b.json"
        p.write_text(json.dumps(d))
        return Baseline.load(p)


@dataclass(frozen=True)
class FailoverOptions:
    period_s: float = 0.25
    timeout_s: float = 0.2
    failure_threshold: int = 3
    inject_after_s: float = 1.0
    max_watch_s: float | None = None


def failover(
    client: Any,
    host: str,
    source: PersonaSource,
    manifest: PersonaManifest,
    hooks: LiveHooks,
    ropts: RecoveryOptions,
    inject: bool,
    fopts: FailoverOptions | None = None,
    on_failure: Callable[[], None] | None = None,
) -> RecoveryResult:
    """Watch ``host`` until it is declared DOWN (killing it first if ``inject``), fence it,
    recover it. ttr_s runs from the injected kill (else the last good probe) to validation."""
    from persona.detect import FailureDetector, ProbeConfig, probe_for_target, watch

    fo = fopts or FailoverOptions()
    ip = host_ip(manifest)
    fencer = DockerFencer(client)
    det = FailureDetector(
        ProbeConfig(
            period_s=fo.period_s, timeout_s=fo.timeout_s, failure_threshold=fo.failure_threshold
        )
    )
    killed_at: list[float] = []

    def kill() -> None:
        time.sleep(fo.inject_after_s)
        killed_at.append(time.monotonic())
        kill_host(client, host)
        if on_failure is not None:
            on_failure()

    th = threading.Thread(target=kill, daemon=True) if inject else None
    if th is not None:
        th.start()
    d = watch(
        host,
        probe_for_target(api_url(ip), timeout_s=fo.timeout_s),
        detector=det,
        fencer=fencer,
        max_s=fo.max_watch_s,
    )
    if th is not None:
        th.join()
    if not d.down or d.detected_at is None:
        raise RestoreError(f"{host} was not declared down within {fo.max_watch_s} s: {d.reason}")
    t_fail = killed_at[0] if killed_at else (d.last_ok_at or d.started_at)
    detect_s = d.detected_at - t_fail
    res = recover(host, source, DockerProvisioner(client), hooks, ropts, t_fail, detect_s)
    res.detection = {**d.to_dict(), "detect_s": round(detect_s, 4), "injected": inject}
    if fencer.results:
        f = fencer.results[-1]
        res.fence = {"killed": list(f.killed), "duration_s": round(f.duration_s, 4)}
    return res
