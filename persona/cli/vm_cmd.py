"""``persona vm``: the VM mode (QEMU guests on Debian's cloud kernel; see docs/vm.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.group()
def vm() -> None:
    """VM mode: build the image, run the original -> replacement round trip."""


@vm.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print the image facts as JSON.")
def build(as_json: bool) -> None:
    """Install QEMU if missing, fetch Debian's cloud kernel + busybox, build the cached image."""
    from persona.vm import host, image, qemu
    t = time.monotonic()
    image.ensure_qemu()
    img = image.build_image(host.module_names(host.VM_HOST))
    acc, why = qemu.choose_accel(img)
    facts = {"image": str(img.dir), "cached": img.cached, "kernel": img.kernel_release,
             "kernel_package": img.kernel_package, "modules": sorted(img.modules),
             "initrd_bytes": img.initrd.stat().st_size, "kernel_bytes": img.kernel.stat().st_size,
             "accel": acc, "accel_reason": why, "seconds": round(time.monotonic() - t, 2)}
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for k, v in facts.items():
        click.echo(f"{k:15} {v}")


@vm.command("roundtrip")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the two captures (default: a temp folder).")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto")
@click.option("--memory", "memory_mb", type=int, default=256, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the timings, module table and apply steps here.")
@click.option("--no-criu", is_flag=True,
              help="Image without CRIU: the service is a (reported) cold start.")
def roundtrip_cmd(out: Path | None, accel: str, memory_mb: int, json_out: Path | None,
                  no_criu: bool) -> None:
    """Boot original + replacement, capture the original (modules included), apply it to the
    replacement in plan order, capture the replacement and compare. Exit 1 on a difference."""
    from persona.vm import image, provision
    image.ensure_qemu()
    rt = provision.roundtrip(out, accel=accel, memory_mb=memory_mb, log=click.echo,
                             with_criu=not no_criu)
    click.echo("kernel modules (load order, parameters):")
    for name, params in provision.vm_apply.module_table(rt.original):
        click.echo(f"  {name:16} {' '.join(f'{k}={v}' for k, v in params.items())}")
    click.echo("replacement /proc/modules after apply:")
    for line in rt.proc_modules_after.splitlines():
        click.echo(f"  {line}")
    proc = rt.original.component("demo.process")
    click.echo(f"process memory: {proc.attributes.get('memory_state')}")
    click.echo(f"replacement process step: {rt.trace.steps[-1].action}")
    click.echo("timings: " + ", ".join(f"{k}={v}" for k, v in rt.timings.items()))
    click.echo(f"captures in {rt.out_dir}")
    if json_out:
        json_out.write_text(json.dumps(rt.summary(), indent=2, default=str) + "\n")
    if rt.mismatches:
        for m in rt.mismatches:
            click.echo(f"MISMATCH {m}", err=True)
        raise SystemExit(1)
    click.echo("replacement matches the original: module order, parameters, network, sysctl, "
               "files, config, service command and cgroup limits")


@vm.command("defaults")
def defaults() -> None:
    """Load each VM-host module without parameters in a scratch guest; print the defaults."""
    from persona.vm import host, provision
    spec = host.VM_HOST
    d = provision.module_defaults(host.module_names(spec))
    for m in spec.modules:
        for k, v in m.params.items():
            click.echo(f"{m.name:14} {k:16} default {d[m.name].get(k, '?'):8} VM host {v}")
