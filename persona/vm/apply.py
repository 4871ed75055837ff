"""Apply a captured VM persona to a fresh replacement guest, in plan order, and verify it.

The plan is the manifest's dependency order (ties keep captured order, so kernel modules go
first, in load order). Each step is one agent request; kernel modules are ``insmod``-ed one by
one with their captured parameters (not ``modprobe``: the order is the captured one, and a
missing dependency fails loudly instead of being pulled in). Afterwards the replacement is
captured with the same code as the original and :func:`compare` lists every difference.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from persona.errors import RestoreError
from persona.model import ComponentKind, PersonaManifest
from persona.provision.plan import Plan, captured_order_plan, check_plan
from persona.vm.host import Guest, criu_restore_script, insmod_line, start_in_cgroup


@dataclass(frozen=True)
class Step:
    component: str
    kind: str
    action: str
    seconds: float
    detail: str
    started: float = 0.0  # time.monotonic() when the step began


@dataclass
class ApplyTrace:
    steps: list[Step] = field(default_factory=list)
    total_s: float = 0.0

    def seconds(self, kind: str) -> float:
        return round(sum(s.seconds for s in self.steps if s.kind == kind), 3)


def resequence_modules(m: PersonaManifest, p: Plan) -> Plan:
    """The plan with its kernel-module slots refilled in captured load order (a policy may
    order independent modules freely; the kernel gets them as captured). Other steps keep
    their positions; the result is checked with the provisioner's ``check_plan``."""
    steps = list(p.steps)
    slots = [i for i, s in enumerate(steps) if s.kind == ComponentKind.KERNEL_MODULE.value]
    by_pos = sorted((steps[i] for i in slots),
                    key=lambda s: int(m.component(s.component).attributes["load_position"]))
    for i, s in zip(slots, by_pos, strict=True):
        steps[i] = s
    out = replace(p, steps=tuple(steps))
    check_plan(m, out)
    return out


def plan(m: PersonaManifest, p: Plan | None = None) -> list[str]:
    """The order apply follows: ``p`` (default: the captured-order plan) with kernel modules
    in captured load order."""
    return list(resequence_modules(m, p or captured_order_plan(m)).order)


def prefix_len(mask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen


def network_script(attrs: Mapping[str, Any]) -> str:
    lines = []
    for iface, mac in sorted(attrs.get("links", {}).items()):
        lines += [f"ip link set {iface} down", f"ip link set {iface} address {mac}"]
    for a in attrs.get("addresses", []):
        if a["iface"] == "lo" or a["family"] != "inet":
            continue
        lines += [f"ip addr replace {a['addr']}/{a['prefix']} dev {a['iface']}",
                  f"ip link set {a['iface']} up"]
    for r in attrs.get("routes", []):
        if r["iface"] == "lo":
            continue
        dst = f"{r['destination']}/{prefix_len(r['mask'])}"
        via = "" if r["gateway"] == "0.0.0.0" else f" via {r['gateway']}"
        lines.append(f"ip route replace {dst}{via} dev {r['iface']} metric {r['metric']}")
    return "\n".join(["set -e", *lines])


def apply_vm(g: Guest, m: PersonaManifest, data_dir: Path,
             module_paths: Mapping[str, str], p: Plan | None = None) -> ApplyTrace:
    """Apply ``m`` (captured into ``data_dir``) to guest ``g`` following plan ``p`` (the
    provisioner's :class:`~persona.provision.plan.Plan`; default: captured order). Raises
    RestoreError on a failed step. A process step restores the captured cgroup limits; the
    plan's allocation level is recorded, not applied (the VM keeps its captured settings)."""
    tr = ApplyTrace()
    t_all = time.monotonic()
    for st in resequence_modules(m, p or captured_order_plan(m)).steps:
        name = st.component
        c = m.component(name)
        a = c.attributes
        t = time.monotonic()
        if c.kind == ComponentKind.KERNEL_MODULE:
            mod = name.removeprefix("kmod.")
            if mod not in module_paths:
                raise RestoreError(f"{name}: the replacement image has no module {mod!r}; "
                                   "rebuild it with this module (persona vm build)")
            script = insmod_line(module_paths[mod], a.get("parameters", {}))
            action = f"insmod at position {a['load_position']}"
        elif c.kind == ComponentKind.NETWORK:
            script, action = network_script(a), "addresses + routes"
        elif c.kind == ComponentKind.CONFIG and "sysctls" in a:
            script = "set -e\n" + "\n".join(f"sysctl -w {k}='{v}'" for k, v in a["sysctls"].items())
            action = "sysctl -w"
        elif c.kind == ComponentKind.FILESYSTEM:
            tar = (data_dir / c.data[0]).read_bytes() if c.data else b""
            rm = " ".join(f"'{p}'" for p in a.get("deleted", []))
            mk = " ".join(f"'{p}'" for p in a.get("runtime_dirs", []))
            script = "set -e\n" + ('tar -xf "$PERSONA_DATA" -C /\n' if tar else "") + (
                f"rm -f {rm}\n" if rm else "") + (f"mkdir -p {mk}\n" if mk else "")
            tr.steps.append(_run(g, name, c.kind, "unpack diff + deletions", script, t, tar))
            continue
        elif c.kind == ComponentKind.CONFIG:
            for path, meta in a.get("files", {}).items():
                rel = next(d for d in c.data if d.endswith(path.strip("/").replace("/", "__")))
                raw = (data_dir / rel).read_bytes()
                d = path.rsplit("/", 1)[0] or "/"
                out = _run(g, name, c.kind, f"write {path}",
                           f"mkdir -p {d} && cp \"$PERSONA_DATA\" {path} && sha256sum {path}",
                           time.monotonic(), raw)
                if not out.detail.startswith(meta["sha256"]):
                    raise RestoreError(f"{name}: {path} has sha256 {out.detail[:12]} in the "
                                       f"replacement, captured {meta['sha256'][:12]}")
            tr.steps.append(Step(name, c.kind.value, "write + verify files",
                                 round(time.monotonic() - t, 3), f"{len(a.get('files', {}))} files",
                                 t))
            continue
        elif c.kind == ComponentKind.PROCESS:
            limits = a.get("cgroup_limits", {})
            why_cold = "no CRIU images captured"
            if c.data:
                r = g.run(criu_restore_script(a["cgroup"], limits), 120,
                          (data_dir / c.data[0]).read_bytes())
                if r.rc == 0:
                    tr.steps.append(Step(name, c.kind.value,
                                         f"warm: CRIU restore into cgroup (plan level {st.level})",
                                         round(time.monotonic() - t, 3), r.text.strip()[:200],
                                         t))
                    continue
                why_cold = ("CRIU restore failed: "
                            + r.stderr.decode("utf-8", "replace").strip()[-200:])
            script = start_in_cgroup(a["cgroup"], limits, a["cmdline"])
            script += f"\nsleep 0.3\ncat /sys/fs/cgroup/{a['cgroup']}/cgroup.procs"
            action = f"cold start in cgroup ({why_cold}; plan level {st.level})"
        else:
            raise RestoreError(f"{name}: no VM apply step for kind {c.kind.value}")
        tr.steps.append(_run(g, name, c.kind, action, script, t))
    tr.total_s = round(time.monotonic() - t_all, 3)
    return tr


def _run(g: Guest, name: str, kind: ComponentKind, action: str, script: str, t: float,
         data: bytes = b"") -> Step:
    r = g.run(script, 60, data)
    if r.rc != 0:
        err = r.stderr.decode("utf-8", "replace").strip()[-300:]
        raise RestoreError(f"{name}: {action} failed in {g.name} (exit {r.rc}): {err}")
    return Step(name, kind.value, action, round(time.monotonic() - t, 3), r.text.strip()[:200], t)


# ---------------------------------------------------------------- verification (pure)
def module_table(m: PersonaManifest) -> list[tuple[str, dict[str, str]]]:
    """[(module, parameters)] in captured load order."""
    ks = [c for c in m.components if c.kind == ComponentKind.KERNEL_MODULE]
    ks.sort(key=lambda c: int(c.attributes["load_position"]))
    return [(c.name.removeprefix("kmod."), dict(c.attributes.get("parameters", {}))) for c in ks]


def compare(orig: PersonaManifest, repl: PersonaManifest) -> list[str]:
    """Every facet where the replacement differs from the original ([] = same persona)."""
    out: list[str] = []
    a, b = module_table(orig), module_table(repl)
    if [n for n, _ in a] != [n for n, _ in b]:
        out.append(f"kernel module load order: original {[n for n, _ in a]}, "
                   f"replacement {[n for n, _ in b]}")
    pb_by = dict(b)
    for n, pa in a:
        if n not in pb_by:
            continue  # reported with the order
        pb = pb_by[n]
        for k in sorted(set(pa) | set(pb)):
            if pa.get(k) != pb.get(k):
                out.append(f"kmod.{n} parameter {k}: original {pa.get(k)!r}, "
                           f"replacement {pb.get(k)!r}")

    def attr(m: PersonaManifest, comp: str, key: str) -> Any:
        try:
            return m.component(comp).attributes.get(key)
        except KeyError:
            return None

    checks = [("network", "addresses"), ("network", "links"), ("network", "drivers"),
              ("network", "routes"), ("network", "listening"),
              ("sysctl", "sysctls"), ("rootfs.filesystem", "added"),
              ("rootfs.filesystem", "changed"), ("rootfs.filesystem", "deleted"),
              ("rootfs.filesystem", "sha256"), ("rootfs.filesystem", "runtime_dirs"), ("demo.config", "files"),
              ("demo.process", "cmdline"), ("demo.process", "cgroup_limits")]
    for label in ("guest_cpus", "guest_mem_total_kb"):  # the replacement's size
        la, lb = orig.host.labels.get(label), repl.host.labels.get(label)
        if la != lb:
            out.append(f"host {label}: original {la!r}, replacement {lb!r}")
    for comp, key in checks:
        va, vb = attr(orig, comp, key), attr(repl, comp, key)
        if va != vb:
            out.append(f"{comp}.{key}: original {va!r}, replacement {vb!r}")
    return out
