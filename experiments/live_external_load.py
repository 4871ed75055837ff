"""Live restores of a demo-shaped host that serves an outside client while it is captured.

Brings up a fresh demo host with its own load client (a container outside the host sending
requests to it, like the lab's `persona-demo-load`), runs N live episodes of
``persona/RestoreLive-v0`` with one policy, and reports how many validated and why the others
did not (the CRIU restore log's error lines are in each trace). Everything it created is
removed at the end. This is the experiment behind the netns-lock fix in docs/live.md.

    python -m experiments.live_external_load --episodes 12 --out runs
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import secrets
from collections import Counter
from pathlib import Path

from agents.report import new_run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--policy", default="capture-order")
    ap.add_argument("--ip", default="10.77.0.241", help="the host's IP on the lab network")
    ap.add_argument("--client-ip", default="10.77.0.242", help="the load client's IP")
    ap.add_argument("--out", type=Path, default=Path("runs"))
    args = ap.parse_args(argv)

    import envs  # noqa: F401  (registers the ids)
    from agents.evaluate import load_policy, run_episode
    from envs.live import LiveConfig
    from envs.restore_env import RestoreEnv
    from persona.lab import demo, engine, spec
    from persona.recovery.fence import fence_host

    run = new_run_dir(args.out, "live_external_load")
    client = engine.connect()
    host = "xl" + secrets.token_hex(3)
    ids: dict[str, str] = {}
    load_id = None
    results = []
    try:
        for s in spec.demo_specs(host, ip=args.ip, with_load=True):
            if s.role == "load":
                s = dataclasses.replace(s, ip=args.client_ip)
            ids[s.name] = demo.create_and_start(client, s, ids.get(s.netns_of or ""))
            if s.role == "load":
                load_id = ids[s.name]
        demo.wait_ready(client, host, 300)
        live = LiveConfig(
            host=host, trace_dir=str(run / "traces"), remove_host=True, policy=args.policy
        )
        env = RestoreEnv(backend="live", live=live)
        pol = load_policy(args.policy)
        try:
            for k in range(args.episodes):
                r = run_episode(env, pol, k)
                results.append({"episode": k, "ttr": r.ttr, "validated": r.validated})
                print(k, f"{r.ttr:.2f}", r.validated, flush=True)
        finally:
            env.close()
    finally:
        if load_id is not None:
            with contextlib.suppress(Exception):
                client.remove_container(load_id, force=True)
        with contextlib.suppress(Exception):
            fence_host(client, host)
    errors: Counter[str] = Counter()
    for p in sorted((run / "traces").glob("*.json")):
        t = json.loads(p.read_text())
        if t["ended"] != "validated":
            errors[(t.get("error") or "not validated")[:160]] += 1
    summary = {
        "policy": args.policy,
        "episodes": len(results),
        "validated": sum(r["validated"] for r in results),
        "errors": dict(errors),
        "results": results,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"validated {summary['validated']} / {summary['episodes']}; errors: {dict(errors)}")
    print(f"wrote {run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
