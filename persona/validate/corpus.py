"""The functional request corpus and the Diffy-style noise filter (pure).

A response is flattened into ``{field path: value}`` (plus ``status``). Two replays of the
corpus against the healthy original give the *noise* diff rate of each field; the replacement's
replay against the first gives the *raw* diff rate. A field differs for real only if
``raw > noise * (1 + relative)`` and ``raw - noise > absolute`` (Diffy: 20 % and 0.03 %).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ABSENT = "<absent>"

# Fields of /introspect that describe the service (config), not the process instance.
INTROSPECT_FIELDS = ("version", "config.", "config_sha256", "pool.size")


def build_corpus(items: int, seed: int, n_items: int = 40) -> list[dict[str, str]]:
    """A seeded corpus: health, introspected config, existing and missing items, unknown path.

    ``group`` is ``api`` (service behaviour) or ``state`` (answers that depend on the data).
    ``fields`` (comma-separated prefixes) limits which fields are compared, if set.
    """
    rng = np.random.default_rng(seed)
    keys = rng.choice(items, size=min(n_items, items), replace=False)
    corpus = [
        {"method": "GET", "path": "/healthz", "group": "api", "fields": ""},
        {
            "method": "GET",
            "path": "/introspect",
            "group": "api",
            "fields": ",".join(INTROSPECT_FIELDS),
        },
        {"method": "GET", "path": "/no-such-path", "group": "api", "fields": ""},
        {
            "method": "GET",
            "path": f"/item/missing-{int(rng.integers(1 << 30))}",
            "group": "api",
            "fields": "",
        },
    ]
    corpus += [
        {"method": "GET", "path": f"/item/{int(k)}", "group": "state", "fields": ""} for k in keys
    ]
    return corpus


def replayable(
    corpus: Sequence[Mapping[str, str]], allow_side_effects: bool = False
) -> list[Mapping[str, str]]:
    """Side-effecting requests (anything but GET/HEAD/OPTIONS) are excluded by default."""
    return [r for r in corpus if allow_side_effects or r["method"].upper() in SAFE_METHODS]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> ``{"a.b.0.c": leaf}``; empty containers are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1] if prefix else "": value}


def response_fields(status: int, body: bytes, fields: str = "") -> dict[str, Any]:
    """Flattened fields of one response (JSON bodies field by field, others as one blob)."""
    out: dict[str, Any] = {"status": status}
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if parsed is None and body:
        out["body"] = body.decode("utf-8", "replace")
    elif parsed is not None:
        out.update({f"body.{k}" if k else "body": v for k, v in flatten(parsed).items()})
    if fields:
        prefixes = [p for p in fields.split(",") if p]
        out = {
            k: v
            for k, v in out.items()
            if k == "status" or any(k[len("body.") :].startswith(p) for p in prefixes)
        }
    return out


def field_key(request: Mapping[str, str], name: str) -> str:
    """Fields are grouped per endpoint shape: ``/item/17`` and ``/item/4`` share ``/item/*``."""
    parts = request["path"].split("/")
    shape = "/".join(parts[:2]) + ("/*" if len(parts) > 2 else "")
    return f"{request['method']} {shape} {name}"


@dataclass(frozen=True)
class FieldDiff:
    field: str
    group: str
    compared: int
    raw: int
    noise: int
    significant: bool
    example: tuple[Any, Any] | None


def diff_fields(
    corpus: Sequence[Mapping[str, str]],
    primary: Sequence[Mapping[str, Any]],
    secondary: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    relative: float = 0.20,
    absolute: float = 0.0003,
    drift_scale: float = 1.0,
) -> list[FieldDiff]:
    """Per field: raw diffs (candidate vs primary) against noise diffs (secondary vs primary).

    ``drift_scale`` = (candidate time - primary time) / (secondary time - primary time). Noise
    that comes from the data changing over time (a worker rewriting items) grows with elapsed
    time: a field that changed on a fraction ``z`` of requests between the two baseline
    replays is expected to have changed on ``1 - (1 - z) ** drift_scale`` of them by the
    candidate's replay. Noise that is not time-driven (``z`` = 0 or 1) is unaffected.
    """
    if not (len(corpus) == len(primary) == len(secondary) == len(candidate)):
        raise ValueError("corpus and the three replays must have the same length")
    stats: dict[tuple[str, str], list[Any]] = {}
    for req, p, s, c in zip(corpus, primary, secondary, candidate, strict=True):
        for name in sorted(set(p) | set(s) | set(c)):
            group = req.get("group", "api")
            row = stats.setdefault((group, field_key(req, name)), [0, 0, 0, None])
            pv, sv, cv = p.get(name, ABSENT), s.get(name, ABSENT), c.get(name, ABSENT)
            row[0] += 1
            if cv != pv:
                row[1] += 1
                if row[3] is None:
                    row[3] = (pv, cv)
            if sv != pv:
                row[2] += 1
    out = []
    for (group, key), (n, raw, noise, example) in sorted(stats.items()):
        r, z = raw / n, noise / n
        if drift_scale > 1.0 and 0 < noise < n:
            # extrapolating an observed drift rate: from its one-sided 95 % upper bound
            # (Clopper-Pearson). A field that never changed between the replays stays exact.
            z_ub = float(beta_dist.ppf(0.95, noise + 1, n - noise))
            z = 1.0 - (1.0 - z_ub) ** drift_scale
        sig = r > z * (1 + relative) and (r - z) > absolute
        out.append(FieldDiff(key, group, n, raw, noise, sig, example if raw else None))
    return out
