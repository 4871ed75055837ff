"""Benchmark: single-env step rate of persona/Restore-v0 next to Gymnasium's CartPole-v1.

Both envs are created with ``gym.make`` (same wrapper stack) and stepped in this process
with random valid actions (ours from ``action_masks()``). Prints steps/s, microseconds per
step and the ratio, and writes ``bench_env.json`` into a run folder.
Target: a Restore-v0 step costs at most 15x a CartPole-v1 step.

    python -m experiments.bench_env [--steps 20000] [--scenario URI] [--out runs]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers persona/Restore-v0)
from agents.report import new_run_dir
from envs.restore_env import DEFAULT_SCENARIO, RestoreEnv

TARGET_RATIO = 15.0


def bench_cartpole(steps: int, seed: int) -> float:
    env = gym.make("CartPole-v1")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, size=steps)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            env.reset()
    return (time.perf_counter() - t0) / steps


def bench_restore(steps: int, seed: int, scenario: str) -> tuple[float, int]:
    env = gym.make("persona/Restore-v0", scenario=scenario)
    base = env.unwrapped
    assert isinstance(base, RestoreEnv)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    episodes = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        valid = np.flatnonzero(base.action_masks())
        a = valid[int(rng.integers(valid.size))]
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            episodes += 1
            env.reset()
    return (time.perf_counter() - t0) / steps, episodes


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs for each env")
    ap.add_argument("--out", default="runs")
    args = ap.parse_args(argv)
    cp = min(bench_cartpole(args.steps, args.seed) for _ in range(args.repeats))
    ours_runs = [bench_restore(args.steps, args.seed, args.scenario) for _ in range(args.repeats)]
    ours, episodes = min(ours_runs)
    ratio = ours / cp
    result = {
        "scenario": args.scenario,
        "steps": args.steps,
        "cartpole_us_per_step": cp * 1e6,
        "cartpole_steps_per_s": 1 / cp,
        "restore_us_per_step": ours * 1e6,
        "restore_steps_per_s": 1 / ours,
        "restore_episodes": episodes,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "python": platform.python_version(),
    }
    print(f"CartPole-v1        {cp * 1e6:8.2f} us/step  {1 / cp:10.0f} steps/s")
    print(
        f"persona/Restore-v0 {ours * 1e6:8.2f} us/step  {1 / ours:10.0f} steps/s  ({args.scenario})"
    )
    print(
        f"ratio {ratio:.1f}x (target <= {TARGET_RATIO:.0f}x): {'OK' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    run = new_run_dir(args.out, "bench_env")
    (run / "bench_env.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {Path(run) / 'bench_env.json'}")
    return result


if __name__ == "__main__":
    main()
