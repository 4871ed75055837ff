"""CRIU's kernel-feature cache (``/run/criu.kdat``).

Every ``criu dump`` first probes the kernel (vDSO, pagemap, sockets, CPU features: ~60-80 ms
here) unless ``/run/criu.kdat`` holds the result. CRIU writes that cache itself only when
``/run`` is a tmpfs (so it cannot outlive a boot); on this machine kind ``/run`` is on the root
disk, so every dump paid the probe, inside the frozen window. ``ensure_kdat_cache`` computes the
cache once per boot with ``criu check`` in a private mount namespace whose ``/run`` is a
tmpfs, and installs it, tagged with the boot id so that a new boot (maybe a new kernel)
recomputes it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from persona.errors import LabError

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
TMPFS_MAGIC = 0x01021994


def _is_tmpfs(path: Path) -> bool:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%t", str(path)], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return int(out, 16) == TMPFS_MAGIC


def ensure_kdat_cache(run_dir: Path = Path("/run")) -> str:
    """Make sure CRIU finds a kernel-feature cache for this boot; returns what was done."""
    cache, marker = run_dir / "criu.kdat", run_dir / "persona-criu-kdat.bootid"
    if _is_tmpfs(run_dir):
        return f"{run_dir} is a tmpfs: CRIU keeps its own cache"
    boot = BOOT_ID.read_text().strip()
    if cache.exists() and marker.exists() and marker.read_text().strip() == boot:
        return f"{cache} present for this boot"
    script = "mount -t tmpfs persona-kdat /run && criu check >/dev/null 2>&1; cat /run/criu.kdat"
    try:
        res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"cannot compute CRIU's kdat cache: {e}") from e
    if res.returncode != 0 or not res.stdout:
        raise LabError("cannot compute CRIU's kdat cache (criu check in a private /run): "
                       f"{res.stderr.decode(errors='replace')[-300:]}; run: criu check")
    tmp = run_dir / f".persona-criu-kdat.{os.getpid()}"
    tmp.write_bytes(res.stdout)
    os.chmod(tmp, 0o600)
    os.replace(tmp, cache)
    marker.write_text(boot + "\n")
    return f"{cache} computed for boot {boot[:8]}"
