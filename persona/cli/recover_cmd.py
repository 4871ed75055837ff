"""``persona failover``, ``persona restore`` and ``persona bench failover``."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from persona.errors import ConfigError, PolicyError, RestoreError

FAULTS = ("starve", "bad-config", "broken-checkpoint")


def _check_policy(policy: str) -> str:
    from persona.provision.plan import is_onnx
    from persona.recovery.workflow import CAPTURED_ORDER, COLD
    if is_onnx(policy):
        if not policy.endswith(".onnx"):  # the search restorer (is_onnx)
            from agents.evaluate import load_policy

            load_policy(policy)  # a clear error for a bad spec or a missing file
        elif not Path(policy).exists():
            raise PolicyError(f"policy file {policy} does not exist; export one with persona export")
        return policy
    from agents.baselines import POLICIES
    if policy not in (*POLICIES, CAPTURED_ORDER, COLD):
        raise PolicyError(f"unknown policy {policy!r}; use a baseline "
                          f"({', '.join([*POLICIES, CAPTURED_ORDER, COLD])}), FILE.onnx or "
                          "search:FILE.onnx@MODEL.json")
    return policy


def _emit(result: dict[str, Any], json_out: Path | None) -> None:
    if json_out is not None and str(json_out) == "-":
        click.echo(json.dumps(result, indent=1))
        return
    ph = result["phases"]
    click.echo(f"host {result['host']}  policy {result['policy']}  validated {result['validated']}"
               f"  warm {result['warm']}  ttr {result['ttr_s']} s")
    click.echo("  " + "  ".join(f"{k} {v:.2f}" for k, v in ph.items()))
    for a in result["attempts"]:
        click.echo(f"  attempt {a['number']}: {a['method']} version {a['version']} -> {a['outcome']}"
                   + (f" ({a['error']})" if a.get("error") else ""))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
        click.echo(f"json: {json_out}")


def _fault_opts(fault: str | None, manifest: Any) -> Any:
    """ApplyOptions carrying a deliberate fault for the first attempt (tests, demos)."""
    from persona.provision.apply import ApplyOptions
    if fault is None:
        return ApplyOptions()
    if fault == "starve":
        api = next(c.name for c in manifest.components if c.name.endswith("api.process"))
        return ApplyOptions(cpu_override={api: 0.02})
    if fault == "bad-config":
        return ApplyOptions(config_override={"/etc/demo/api.json": json.dumps(
            {"pool_size": 1, "redis_timeout_s": 0.05, "work_rounds": 200000,
             "features": {"cache_hot_items": False, "checksum_responses": False}}).encode()})
    return ApplyOptions(break_checkpoint=True)


def _latest_manifest(source: Any, host: str, version: str | None = None) -> Any:
    from persona.model import load_manifest
    vs = source.versions(host)
    if not vs:
        raise RestoreError(f"no persona of {host} in {source.url}; capture one first: "
                           f"persona capture --host {host} --store {source.url}")
    v = vs[-1] if version in (None, "latest") else version
    with tempfile.TemporaryDirectory(prefix="persona-manifest-") as d:
        return load_manifest(source.fetch(host, str(v), Path(d)) / "manifest.json")


@click.command("failover")
@click.option("--host", required=True, help="Host to watch and recover, e.g. demo.")
@click.option("--policy", required=True, help="Baseline name, captured-order, cold-start or FILE.onnx.")
@click.option("--store", "store_url", default=None,
              help="Persona store (default $PERSONA_STORE or /var/lib/persona/store).")
@click.option("--inject-failure", is_flag=True, help="Kill the host (SIGKILL) after 1 s of watching.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result JSON here ('-' for stdout).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--validate-budget", type=float, default=12.0, show_default=True,
              help="Seconds for the validation suite (4-90).")
@click.option("--capture/--no-capture", default=True, show_default=True,
              help="Capture a fresh version before watching (as continuous capture would); "
                   "--no-capture recovers from what the store already has.")
@click.option("--trace-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write restore traces and the verdict here.")
@click.option("--fault", type=click.Choice(FAULTS), default=None,
              help="Deliberately break the first restore attempt (to exercise validation/rollback).")
def failover(host: str, policy: str, store_url: str | None, inject_failure: bool,
             json_out: Path | None, seed: int, validate_budget: float, capture: bool,
             trace_dir: Path | None, fault: str | None) -> None:
    """Watch HOST, detect its failure, fence it, recover it from its persona, validate."""
    from persona.lab import engine
    from persona.provision.plan import host_ip
    from persona.recovery import live
    from persona.recovery.source import open_source
    from persona.recovery.workflow import RecoveryOptions
    policy = _check_policy(policy)
    client = engine.connect()
    if capture:
        # baseline first (from the healthy original), then the freshest persona: the state the
        # replacement comes back with is as close as possible to what the baseline saw
        ip = live.running_host_ip(client, host)
        source = open_source(store_url) if _store_exists(store_url) else None
        if source is None or source.read_meta(host, live.BASELINE_META) is None:
            baseline = live.record(client, host, ip, seed, validate_budget)
        else:
            baseline = None
        capture_version(client, host, store_url)
        source = open_source(store_url)
        if baseline is not None:
            source.write_meta(host, live.BASELINE_META, baseline.to_dict())
    source = open_source(store_url)
    manifest = _latest_manifest(source, host)
    ip = host_ip(manifest)
    baseline = live.ensure_baseline(client, source, host, ip, seed, validate_budget)
    hooks = live.LiveHooks(client, ip, baseline, seed, validate_budget,
                           trace_dir / "verdict" if trace_dir else None)
    ropts = RecoveryOptions(policy=policy, seed=seed, first_attempt=_fault_opts(fault, manifest),
                            injected=fault is not None, trace_dir=trace_dir)
    res = live.failover(client, host, source, manifest, hooks, ropts, inject_failure)
    _emit(res.to_dict(), json_out)
    if not res.validated:
        sys.exit(1)


def _store_exists(store_url: str | None) -> bool:
    from persona.capture.sink import DEFAULT_STORE
    from persona.recovery.source import is_store
    return is_store(store_url or DEFAULT_STORE)


def capture_version(client: Any, host: str, store_url: str | None) -> str:
    from persona.capture.run import CaptureOptions, capture_host
    from persona.capture.sink import open_sink
    return capture_host(client, host, open_sink(store_url), CaptureOptions()).version


@click.command("restore")
@click.option("--host", required=True)
@click.option("--version", default="latest", show_default=True, help="Store version to restore.")
@click.option("--policy", required=True, help="Baseline name, captured-order or FILE.onnx.")
@click.option("--store", "store_url", default=None)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Validate against the host's recorded baseline (needs one).")
@click.option("--validate-budget", type=float, default=12.0, show_default=True)
@click.option("--trace-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def restore(host: str, version: str, policy: str, store_url: str | None, json_out: Path | None,
            seed: int, validate: bool, validate_budget: float, trace_dir: Path | None) -> None:
    """Fence HOST (if anything of it still runs) and restore one persona version onto a
    replacement, following the policy's plan; validated against the recorded baseline."""
    import time

    from persona.lab import engine
    from persona.provision.engine import DockerProvisioner
    from persona.provision.plan import host_ip
    from persona.recovery import live
    from persona.recovery.fence import fence_host
    from persona.recovery.source import open_source
    from persona.recovery.workflow import RecoveryOptions, recover
    policy = _check_policy(policy)
    client = engine.connect()
    source = open_source(store_url)
    manifest = _latest_manifest(source, host, version)
    ip = host_ip(manifest)
    baseline = None
    if validate:
        d = source.read_meta(host, live.BASELINE_META)
        if d is None:
            raise ConfigError(f"no validation baseline for {host} in {source.url}; run "
                              "persona failover once (it records one) or pass --no-validate")
        baseline = live._baseline(d)
    hooks: Any = live.LiveHooks(client, ip, baseline, seed, validate_budget,
                                trace_dir / "verdict" if trace_dir else None)
    if not validate:
        hooks = live.NoValidation(hooks)
    f = fence_host(client, host)
    t0 = time.monotonic()
    res = recover(host, source, DockerProvisioner(client), hooks,
                  RecoveryOptions(policy=policy, version=version, seed=seed, cold_fallback=False,
                                  trace_dir=trace_dir), t0)
    res.fence = {"killed": list(f.killed), "duration_s": round(f.duration_s, 4)}
    out = res.to_dict()
    if not validate:
        out["validated"] = False
    _emit(out, json_out)
    if validate and not res.validated:
        sys.exit(1)


@click.group("bench")
def bench() -> None:
    """Live benchmarks."""


@bench.command("failover")
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--policy-file", default=None,
              help="Exported ONNX policy for the 'policy' method (default: newest runs/**/*.onnx).")
@click.option("--ip", default="10.77.0.70", show_default=True,
              help="Address of the benchmark host (hand experiments: 10.77.0.60-89).")
@click.option("--validate-budget", type=float, default=8.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def bench_failover(repeat: int, json_out: Path, policy_file: str | None, ip: str,
                   validate_budget: float, seed: int) -> None:
    """Time to recovery (injected kill -> validated service) for a cold start, captured order,
    critical-path and the exported policy, side by side, REPEAT times; JSON + plot."""
    from persona.recovery.bench import BenchConfig, run_bench
    if repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    res = run_bench(BenchConfig(repeat=repeat, ip=ip, policy_file=policy_file,
                                validate_budget_s=validate_budget, seed=seed, out=json_out))
    for m, r in res["methods"].items():
        click.echo(f"{m:16s} ttr median {r['ttr_median_s']} s  samples {r['ttr_s']}")
    click.echo(f"json: {json_out}  plot: {res.get('plot')}")
