"""The consistent cut, proven end to end with plain Engine API calls: freeze the whole host,
checkpoint each container (Exit=false) and read its filesystem diff while frozen, remove the
originals, restore into NEW containers (new pause container, same IP; the diff unpacked first:
redis has its append-only file open, and CRIU reopens it at exactly the dumped size) under a
netns lock, and check that the worker's ESTABLISHED connection to redis survived (no
reconnect, tick counter keeps increasing, dataset present)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import Tracker, redis_cli

from persona.capture.cut import Member, consistent_cut, gated_cut, plan_cut
from persona.capture.docker_engine import DockerEngine, GatedEngine
from persona.capture.run import snapshot_files
from persona.lab import demo, engine, spec
from persona.provision.engine import DockerProvisioner

pytestmark = [pytest.mark.live, pytest.mark.slow]

LOCK = ["INPUT", "-i", "lo", "-j", "DROP"]


def members(client: Any, host: str) -> list[Member]:
    return [Member(c["Id"], c["Names"][0].lstrip("/"), c["Labels"][spec.ROLE_LABEL])
            for c in demo.host_containers(client, host)]


@pytest.mark.parametrize("route", ["engine", "gated"])
def test_connection_survives_capture_and_restore_into_new_containers(
        lab: Any, tracker: Tracker, test_host: str, tmp_path: Path, route: str) -> None:
    """route engine: docker pause + Engine API checkpoints; gated (the capture default):
    runc checkpoints started first and held at CRIU's pre-dump hook, then the cgroup-freezer
    freeze of the whole host, then the dumps in parallel. Both must restore."""
    client = lab
    host = test_host
    redis = f"persona-{host}-redis"
    time.sleep(1.0)
    ticks_before = int(redis_cli(client, redis, "GET", "demo:worker:ticks"))
    intro_before = demo.introspect(client, host)
    assert ticks_before > 0
    assert redis_cli(client, redis, "GET", "demo:worker:reconnects") == ""

    # --- the cut: every container frozen at once, each dumped while frozen, all thawed; the
    # filesystem diffs are read inside it (what `persona capture` does)
    ms = members(client, host)
    cs = demo.host_containers(client, host)
    info = {c["Id"]: client.inspect_container(c["Id"]) for c in cs}
    (tmp_path / "fs").mkdir()

    def inside() -> None:
        snapshot_files(cs, info, tmp_path / "fs")

    if route == "engine":
        cut = consistent_cut(DockerEngine(client), plan_cut(ms), tmp_path / "ck", "c1",
                             inside=inside)
    else:
        ns = demo.netns_pid(client, host)
        cut = gated_cut(GatedEngine(client), plan_cut(ms), tmp_path / "ck", "c1", inside=inside,
                        netns_pid=ns)
        assert cut.prepare_ms > 0 and cut.lock_ms > 0 and not list(tmp_path.glob(".gate-*"))
        rules = subprocess.run(["nsenter", "-t", str(ns), "-n", "iptables", "-S", "INPUT"],
                               capture_output=True, text=True, check=True).stdout
        assert "persona-cut-lock" not in rules, "network lock left behind"
    for m in ms:  # nobody left frozen
        assert client.inspect_container(m.cid)["State"]["Paused"] is False
    ticks_at_cut = int(redis_cli(client, redis, "GET", "demo:worker:ticks"))
    assert set(cut.dump_ms) == {f"persona-{host}-{r}" for r in ("redis", "api", "worker")}

    ip = pause_ip(client, host)
    # --- the original dies (fenced) before the replacement appears: never two live copies
    for m in ms:
        client.remove_container(m.cid, force=True)

    # --- replacement: new pause container with the same IP, new (created, not started) others
    specs = {s.role: s for s in spec.demo_specs(host, ip=ip, with_load=False)}
    new_ids: dict[str, str] = {}
    pause = specs["pause"]
    new_ids["pause"] = demo.create_and_start(client, pause, None)
    tracker.containers.append(new_ids["pause"])
    for role in ("redis", "worker", "api"):
        s = specs[role]
        a = spec.create_args(s, new_ids["pause"])
        cid = client.create_container(
            image=a["image"], command=a["command"], name=a["name"], labels=a["labels"],
            host_config=client.create_host_config(**a["host_config"]))["Id"]
        new_ids[role] = cid
        tracker.containers.append(cid)
        DockerProvisioner(client).extract_fs(cid, tmp_path / "fs" / "filesystem" / f"{s.name}.tar")
        dst = Path("/var/lib/docker/containers") / cid / "checkpoints" / "c1"
        shutil.copytree(tmp_path / "ck" / s.name / "c1", dst)

    pid = int(client.inspect_container(new_ids["pause"])["State"]["Pid"])
    tracker.add_rule(pid, LOCK)  # netns lock: no RST to a peer not restored yet
    t0 = time.perf_counter()
    for role in ("redis", "worker", "api"):
        engine.start_from_checkpoint(client, new_ids[role], "c1")
    tracker.drop_rule(pid, LOCK)
    restore_ms = (time.perf_counter() - t0) * 1000

    # --- proof the processes were restored, not restarted, and their connections survived
    time.sleep(1.5)
    ticks_after = int(redis_cli(client, new_ids["redis"], "GET", "demo:worker:ticks"))
    assert ticks_after > ticks_at_cut >= ticks_before, (ticks_before, ticks_at_cut, ticks_after)
    assert redis_cli(client, new_ids["redis"], "GET", "demo:worker:reconnects") == "", \
        "the worker had to reconnect: its ESTABLISHED connection did not survive"
    assert int(redis_cli(client, new_ids["redis"], "DBSIZE")) >= 2000
    intro_after = demo.introspect(client, host)
    assert intro_after["started"] == intro_before["started"], "api restarted instead of restored"
    assert intro_after["requests"] > intro_before["requests"]
    body = json.loads(demo.http_get_in_netns(pid, "http://127.0.0.1:8080/item/7"))
    assert body["key"] == "7" and body["len"] > 0  # the api's pooled connections work
    after = demo.introspect(client, host)
    assert after["errors"] == 0
    print(f"freeze_ms={cut.freeze_ms:.0f} dump_ms={cut.dump_ms} restore_ms={restore_ms:.0f}")


def pause_ip(client: Any, host: str) -> str:
    for x in demo.host_containers(client, host):
        if x["Labels"].get(spec.ROLE_LABEL) == "pause":
            return str(x["NetworkSettings"]["Networks"][spec.NETWORK]["IPAddress"])
    raise AssertionError(f"host {host} has no pause container")
