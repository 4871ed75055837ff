"""Persona model: round-trips (property-based) and rejection of malformed manifests."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.errors import ManifestError
from persona.model import (
    KINDS,
    ROLES,
    SCHEMA_VERSION,
    Component,
    ComponentKind,
    HostInfo,
    LoadProfile,
    PersonaManifest,
    ResourceProfile,
    load_manifest,
    manifest_from_dict,
    manifest_from_json,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/_.", min_size=1, max_size=12)
floats = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=0, max_value=2**50)
str_maps = st.dictionaries(names, st.text(max_size=10), max_size=3)


@st.composite
def manifests(draw: Any) -> PersonaManifest:
    n = draw(st.integers(min_value=0, max_value=8))
    comp_names = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    comps = []
    for i, nm in enumerate(comp_names):
        deps = draw(st.lists(st.sampled_from(comp_names[:i]), unique=True, max_size=3)) if i else []
        kind = draw(st.sampled_from(KINDS))
        res = None
        if kind is ComponentKind.PROCESS and draw(st.booleans()):
            res = ResourceProfile(
                cpu_usage_cores=draw(floats),
                cpu_peak_cores=draw(floats),
                memory_bytes=draw(ints),
                memory_peak_bytes=draw(ints),
                io_read_bps=draw(floats),
                io_write_bps=draw(floats),
                cpu_limit_cores=draw(st.none() | st.floats(min_value=0.01, max_value=64)),
                memory_limit_bytes=draw(st.none() | st.integers(min_value=1, max_value=2**40)),
                window_s=draw(floats),
                samples=draw(st.integers(0, 10_000)),
            )
        comps.append(
            Component(
                name=nm,
                kind=kind,
                size_bytes=draw(ints),
                depends_on=tuple(deps),
                role=draw(st.sampled_from(ROLES)),
                resources=res,
                attributes=draw(
                    st.dictionaries(names, st.integers() | st.text(max_size=5), max_size=2)
                ),
                data=tuple(
                    draw(
                        st.lists(
                            names.filter(
                                lambda s: not s.startswith("/") and ".." not in s.split("/")
                            ),
                            max_size=2,
                        )
                    )
                ),
            )
        )
    order = draw(st.permutations(range(n)))  # any captured order, dependencies may point forward
    comps = [comps[i] for i in order]
    return PersonaManifest(
        host=HostInfo(
            name=draw(names),
            captured_at="2026-11-28T00:00:00Z",
            kernel=draw(st.text(max_size=8)),
            criu_version=draw(st.none() | st.just("4.2.1")),
            app_versions=draw(str_maps),
            dependencies=draw(str_maps),
            labels=draw(str_maps),
        ),
        components=tuple(comps),
        load=LoadProfile(
            peak_cpu_cores=draw(floats),
            peak_requests_per_s=draw(st.none() | floats),
            window_s=draw(floats),
        ),
    )


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_json_round_trip(m: PersonaManifest) -> None:
    again = manifest_from_json(m.to_json())
    assert again == m
    assert again.to_dict() == m.to_dict()


@settings(max_examples=60, deadline=None)
@given(manifests())
def test_topological_order_respects_dependencies(m: PersonaManifest) -> None:
    pos = {n: i for i, n in enumerate(m.topological_order())}
    assert sorted(pos) == sorted(m.names)
    for c in m.components:
        for d in c.depends_on:
            assert pos[d] < pos[c.name]


def _valid() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "host": {"name": "h1", "captured_at": "2026-11-28T00:00:00Z"},
        "load": {"peak_cpu_cores": 1.0},
        "components": [
            {"name": "fs", "kind": "filesystem", "size_bytes": 10},
            {"name": "cfg", "kind": "config", "size_bytes": 1, "depends_on": ["fs"]},
            {
                "name": "p",
                "kind": "process",
                "size_bytes": 100,
                "depends_on": ["cfg"],
                "role": "app",
                "resources": {
                    "cpu_usage_cores": 0.5,
                    "cpu_peak_cores": 0.8,
                    "memory_bytes": 100,
                    "memory_peak_bytes": 120,
                },
            },
        ],
    }


def test_valid_manifest_loads() -> None:
    m = manifest_from_dict(_valid())
    assert m.topological_order() == ("fs", "cfg", "p")
    assert m.component("p").is_process


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d.update(schema_version=99), "schema_version", "unsupported schema version"),
        (lambda d: d["components"][1].update(kind="daemon"), "components[1].kind", "unknown kind"),
        (
            lambda d: d["components"][0].update(size_bytes=-5),
            "components[0].size_bytes",
            "non-negative",
        ),
        (
            lambda d: d["components"][1].update(depends_on=["ghost"]),
            "components[1].depends_on[0]",
            "not a component",
        ),
        (
            lambda d: d["components"][0].update(depends_on=["p"]),
            "components[0].depends_on",
            "cycle",
        ),
        (lambda d: d["components"][2].update(name="fs"), "components[2].name", "duplicate"),
        (lambda d: d["components"][2].update(role="wizard"), "components[2].role", "unknown role"),
        (
            lambda d: d["components"][2]["resources"].update(cpu_usage_cores=-1),
            "components[2].resources.cpu_usage_cores",
            ">= 0",
        ),
        (
            lambda d: d["components"][2]["resources"].pop("memory_bytes"),
            "components[2].resources.memory_bytes",
            "required",
        ),
        (
            lambda d: d["components"][0].update(colour="red"),
            "components[0].colour",
            "unknown field",
        ),
        (
            lambda d: d["components"][0].update(data=["../../etc/passwd"]),
            "components[0].data[0]",
            "relative path",
        ),
        (lambda d: d["host"].pop("name"), "host.name", "required"),
        (lambda d: d.update(components={"a": 1}), "components", "must be list"),
        (lambda d: d["load"].update(peak_cpu_cores=float("nan")), "load.peak_cpu_cores", "finite"),
        (
            lambda d: d["components"][0].update(size_bytes=True),
            "components[0].size_bytes",
            "wrong type",
        ),
    ],
)
def test_malformed_manifest_names_the_field(mutate: Any, field: str, words: str) -> None:
    d = copy.deepcopy(_valid())
    mutate(d)
    with pytest.raises(ManifestError) as e:
        manifest_from_dict(d)
    assert e.value.field == field
    assert words in str(e.value)
    assert field in str(e.value)


def test_cycle_error_lists_the_cycle() -> None:
    d = _valid()
    d["components"][0]["depends_on"] = ["p"]
    with pytest.raises(
        ManifestError, match=r"fs -> p -> cfg -> fs|p -> cfg -> fs -> p|cfg -> fs -> p -> cfg"
    ):
        manifest_from_dict(d)


def test_load_and_save_files(tmp_path: Any) -> None:
    m = manifest_from_dict(_valid())
    path = tmp_path / "sub" / "manifest.json"
    m.save(path)
    assert load_manifest(path) == m
    assert not [p for p in path.parent.iterdir() if p.name != "manifest.json"]  # no temp files left
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match=r"bad\.json: not valid JSON"):
        load_manifest(bad)
    d = _valid()
    d["components"][1]["kind"] = "daemon"
    bad.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=r"bad.json: components\[1\].kind: unknown kind"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.json")
