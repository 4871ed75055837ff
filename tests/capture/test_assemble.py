"""Manifest assembly from observations (pure) and the `persona capture --json` contract."""

from __future__ import annotations

from persona.capture import parse
from persona.capture.assemble import ContainerObs, HostObs, build_manifest, summary_json
from persona.model import ComponentKind, manifest_from_json

USAGE = {"cpu_usage_cores": 0.2, "cpu_peak_cores": 0.4, "memory_bytes": 10, "memory_peak_bytes": 20,
         "io_read_bps": 0.0, "io_write_bps": 1.0, "window_s": 1.0, "samples": 5}


def obs(role: str, process: bool = True, cfg: bool = False) -> ContainerObs:
    name = f"persona-h-{role}"
    return ContainerObs(
        name=name, cid=role * 3, role=role, image="img", image_id="sha256:1", command=("x",),
        fs_added=1, fs_changed=2, fs_deleted=("/tmp/gone",), fs_archive=f"filesystem/{name}.tar",
        fs_bytes=10240, process={"memory_pages": 3} if process else None,
        process_data=f"process/{name}/checkpoint" if process else None,
        process_bytes=12345 if process else 0, usage=USAGE, cpu_limit=0.5, mem_limit=1 << 27,
        config_files={"/etc/x.json": {"sha256": "ab", "size": 7, "data": f"config/{name}/etc/x.json"}}
        if cfg else {}, live_settings={"pool": {"size": 4}} if cfg else None)


def host_obs() -> HostObs:
    mods = parse.modules_in_load_order(
        [("b", 10, 0, (), "Live"), ("a", 20, 1, ("b",), "Live")], {"a": {"p": "1"}})
    return HostObs(
        host="h", captured_at="2026-01-01T00:00:00Z", kernel="6.18", criu_version="4.2.1",
        docker_version="20.10", freeze_ms=123.4,
        containers=(obs("pause", process=False), obs("redis"), obs("api", cfg=True), obs("worker")),
        network={"addresses": [], "routes": [], "listening": ["127.0.0.1:6379"], "established": 4,
                 "joins": [{"client": "persona-h-api", "server": "persona-h-redis"},
                           {"client": "persona-h-worker", "server": "persona-h-redis"},
                           {"client": None, "server": "persona-h-api"}]},
        network_data="network.json", network_bytes=100, modules=tuple(mods), modules_note="2 modules",
        cpuinfo_data="cpuinfo.img", peak_requests_per_s=40.0, window_s=1.0)


def test_manifest_has_every_kind_and_dependency_edges() -> None:
    m = build_manifest(host_obs())
    kinds = {c.kind for c in m.components}
    assert kinds == set(ComponentKind)
    api = m.component("api.process")
    assert set(api.depends_on) == {"api.filesystem", "api.config", "network", "redis.process"}
    assert "redis.process" in m.component("worker.process").depends_on
    assert m.component("kmod.b").depends_on == ("kmod.a",)  # a is used by b
    assert "pause.process" not in m.names
    order = m.topological_order()
    assert order.index("redis.process") < order.index("api.process")
    assert api.resources is not None and api.resources.cpu_limit_cores == 0.5
    assert m.host.dependencies["api.process"] == "redis.process"


def test_manifest_json_round_trip_validates() -> None:
    m = build_manifest(host_obs())
    assert manifest_from_json(m.to_json()) == m


def test_summary_json_contract() -> None:
    m = build_manifest(host_obs())
    s = summary_json(m, "v1", 123.45, "file:///x", {"timings": {}})
    assert {"host", "version", "freeze_ms", "components"} <= set(s)
    assert s["host"] == "h" and s["version"] == "v1" and s["freeze_ms"] == 123.5
    for c in s["components"]:
        assert {"name", "kind", "size_bytes", "depends_on"} <= set(c)
        assert c["kind"] in {k.value for k in ComponentKind}
    assert s["total_bytes"] == sum(c.size_bytes for c in m.components)
