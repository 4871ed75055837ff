"""``persona capture`` and ``persona watch``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from persona.errors import CaptureError, PersonaError


def _print_summary(s: dict[str, Any]) -> None:
    click.echo(f"host {s['host']}  version {s['version']}  store {s['store']}")
    click.echo(f"freeze {s['freeze_ms']:.0f} ms  (pause {s['timings']['pause_ms']:.0f} ms, "
               f"dumps {', '.join(f'{k}={v:.0f}' for k, v in s['timings']['dump_ms'].items())} ms, "
               f"thaw {s['timings']['thaw_ms']:.0f} ms); capture total {s['timings']['total_ms']:.0f} ms")
    by_kind: dict[str, list[int]] = {}
    for c in s["components"]:
        by_kind.setdefault(c["kind"], []).append(c["size_bytes"])
    for kind, sizes in sorted(by_kind.items()):
        click.echo(f"  {kind:14s} {len(sizes):3d} component(s) {sum(sizes) / 1e6:9.2f} MB")
    click.echo(f"  kernel modules: {s['kernel_modules']}")
    click.echo(f"  total {s['total_bytes'] / 1e6:.2f} MB")


def _route(name: str, **kw: Any) -> Any:
    """CaptureOptions for a --cut route."""
    from persona.capture.run import CaptureOptions
    if name == "fast":
        return CaptureOptions(freeze="freezer", dump="gated", **kw)
    return CaptureOptions(freeze="engine", dump="engine", **kw)


@click.command("capture")
@click.option("--host", required=True, help="Host name (label persona.host), e.g. demo.")
@click.option("--store", "store_url", default=None,
              help="Persona store URL: a path or s3://bucket/prefix?endpoint=... (created when "
                   "the location is empty; default $PERSONA_STORE or /var/lib/persona/store).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the capture summary as JSON ('-' for stdout).")
@click.option("--window", type=float, default=1.0, show_default=True,
              help="Seconds of resource sampling before the cut.")
@click.option("--cut", "cut_route", type=click.Choice(["fast", "engine"]), default="fast",
              show_default=True,
              help="fast: cgroup freezer + runc checkpoints started before the freeze and "
                   "held at CRIU's pre-dump hook (short freeze); engine: docker pause + the "
                   "Engine API checkpoint route.")
def capture(host: str, store_url: str | None, json_out: Path | None, window: float,
            cut_route: str) -> None:
    """Capture one version of a live host's persona (consistent cut + every facet)."""
    from persona.capture.run import capture_host
    from persona.capture.sink import open_sink
    from persona.lab import engine
    if window <= 0:
        raise CaptureError(f"--window must be > 0 seconds, got {window}")
    client = engine.connect()
    rep = capture_host(client, host, open_sink(store_url),
                       _route(cut_route, window_s=window))
    if json_out is not None and str(json_out) == "-":
        click.echo(json.dumps(rep.summary, indent=1))
        return
    _print_summary(rep.summary)
    if json_out is not None:
        json_out.write_text(json.dumps(rep.summary, indent=1) + "\n")
        click.echo(f"json: {json_out}")


@click.command("watch")
@click.option("--host", required=True, help="Host name (label persona.host), e.g. demo.")
@click.option("--interval", default="30s", show_default=True, help="e.g. 30s, 2m, 1h.")
@click.option("--store", "store_url", default=None,
              help="Persona store URL (path or s3://...); default $PERSONA_STORE or "
                   "/var/lib/persona/store.")
@click.option("--count", type=int, default=None, help="Stop after this many captures.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one JSON line per capture (version, reason, freeze_ms).")
@click.option("--cut", "cut_route", type=click.Choice(["fast", "engine"]), default="fast",
              show_default=True, help="See persona capture --help.")
def watch(host: str, interval: str, store_url: str | None, count: int | None,
          log_path: Path | None, cut_route: str) -> None:
    """Capture at an interval and on engine events / config file changes."""
    from persona.capture.run import capture_host, host_members
    from persona.capture.sink import open_sink
    from persona.capture.watch import Watcher, parse_interval
    from persona.lab import engine, spec
    try:
        every = parse_interval(interval)
    except ValueError as e:
        raise CaptureError(f"--interval: {e}") from None
    client = engine.connect()
    sink = open_sink(store_url)
    host_members(client, host)  # unknown host -> clear error before watching
    ev_client = engine.connect(timeout=None)  # type: ignore[arg-type]
    events = ev_client.events(decode=True, filters={"label": f"{spec.HOST_LABEL}={host}"})

    def read_configs() -> dict[str, bytes]:
        from persona.capture import probe
        out = {}
        for c in client.containers(filters={"label": f"{spec.HOST_LABEL}={host}"}):
            paths = c["Labels"].get(spec.CONFIG_LABEL, "")
            if not paths:
                continue
            pid = int(client.inspect_container(c["Id"])["State"]["Pid"])
            for p in paths.split(","):
                out[f"{c['Names'][0]}:{p}"] = probe.read_in_root(pid, p)
        return out

    w = Watcher(host, every, events, read_configs)
    n = 0
    try:
        for trig in w.triggers(max_count=count):
            try:
                tag = "trigger:" + trig.reason.split(":")[0]
                rep = capture_host(client, host, sink, _route(cut_route, tags=(tag,)))
                rec = {"version": rep.version, "reason": trig.reason,
                       "freeze_ms": round(rep.freeze_ms, 1),
                       "total_bytes": rep.summary["total_bytes"]}
            except PersonaError as e:
                rec = {"version": None, "reason": trig.reason, "error": str(e)}
            n += 1
            line = json.dumps(rec)
            click.echo(line)
            sys.stdout.flush()
            if log_path is not None:
                with log_path.open("a") as f:
                    f.write(line + "\n")
    finally:
        w.stop.set()
        events.close()
