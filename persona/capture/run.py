"""One capture of a live host: preflight, observe, consistent cut, decode, assemble, publish."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona.capture import parse, probe
from persona.capture.assemble import ContainerObs, HostObs, build_manifest, summary_json
from persona.capture.cut import Member, consistent_cut, gated_cut, plan_cut
from persona.capture.docker_engine import CRIU_LOG_NAME, DockerEngine, FastEngine, GatedEngine
from persona.capture.sink import VersionInfo, VersionSink, new_capture_id
from persona.errors import CaptureError, LabError
from persona.lab import criu_cache, demo, spec
from persona.lab.doctor import judge_criu

log = logging.getLogger("persona.capture")


@dataclass
class CaptureOptions:
    window_s: float = 1.0
    samples: int = 5
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    parallel_dumps: bool = True
    tags: tuple[str, ...] = ()  # extra store tags (``persona watch`` adds the trigger)
    freeze: str = "freezer"  # "freezer": cgroup freezer directly; "engine": docker pause API
    # "gated": runc checkpoints started before the freeze, held at CRIU's pre-dump hook;
    # "runc": runc checkpoints started after the freeze; "engine": the Engine API route
    dump: str = "gated"
    kdat_cache: bool = True  # install CRIU's kernel-feature cache for this boot first
    files_in_cut: bool = True  # filesystem diffs + config files read while the host is frozen


@dataclass
class CaptureReport:
    host: str
    version: str
    freeze_ms: float
    store: str  # store URL; the version is ``persona store restore --store URL --host H --version V``
    summary: dict[str, Any] = field(default_factory=dict)


def preflight_criu() -> str:
    text: str | None
    try:
        text = probe.run_text(["criu", "--version"])
    except CaptureError:
        text = None
    chk = judge_criu(text)
    if not chk.ok:
        raise CaptureError(f"{chk.detail}; fix: {chk.fix}")
    return chk.detail.split()[-1]


def cut_engine(client: Any, opts: CaptureOptions) -> DockerEngine:
    """The engine adapter a cut runs against, per the freeze and dump routes chosen."""
    if opts.freeze == "engine" and opts.dump == "engine":
        return DockerEngine(client)
    if opts.dump == "gated":
        if opts.freeze != "freezer":
            raise CaptureError("gated dumps need freeze=freezer")
        return GatedEngine(client, cgroup_root=opts.cgroup_root)
    return FastEngine(client, freeze=opts.freeze, dump=opts.dump, cgroup_root=opts.cgroup_root)


def host_members(client: Any, host: str) -> list[dict[str, Any]]:
    cs = demo.host_containers(client, host)
    if not cs:
        known = sorted({c["Labels"].get(spec.HOST_LABEL, "?") for c in
                        client.containers(all=True, filters={"label": spec.HOST_LABEL})})
        raise CaptureError(f"unknown host {host!r}: no container has label {spec.HOST_LABEL}={host}"
                           f"; known hosts: {', '.join(known) or 'none (run: persona lab up)'}")
    down = [c["Names"][0].lstrip("/") + f" ({c['State']})" for c in cs if c["State"] != "running"]
    if down:
        raise CaptureError(f"host {host!r} is not fully running: {', '.join(down)}; "
                           "restart it (persona lab up) before capturing")
    return cs


def _live_settings(client: Any, pid: int, url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    try:
        return dict(json.loads(demo.http_get_in_netns(pid, url)))
    except (LabError, ValueError) as e:
        raise CaptureError(f"introspection endpoint {url} failed: {e}") from e


def capture_host(client: Any, host: str, sink: VersionSink,
                 opts: CaptureOptions | None = None) -> CaptureReport:
    opts = opts or CaptureOptions()
    criu_version = preflight_criu()
    if opts.kdat_cache:
        try:
            criu_cache.ensure_kdat_cache()
        except LabError as e:  # only slower without it
            log.warning("no CRIU kdat cache (%s): every dump probes the kernel again", e)
    cs = host_members(client, host)
    info = {c["Id"]: client.inspect_container(c["Id"]) for c in cs}
    staging = sink.begin(host)
    try:
        return _capture(client, host, sink, opts, cs, info, staging, criu_version)
    except CaptureError as e:
        sink.abort(staging)
        gone = _not_running(client, cs)
        if gone:
            raise CaptureError(f"{', '.join(gone)} stopped during the capture of {host!r} ({e}); "
                               "nothing was stored and the host was unfrozen; restart it "
                               "(persona lab up) and retry") from e
        raise
    except BaseException:
        sink.abort(staging)
        raise


def _not_running(client: Any, cs: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in cs:
        try:
            st = client.inspect_container(c["Id"])["State"]
            if not st.get("Running"):
                out.append(f"{c['Names'][0].lstrip('/')} ({st.get('Status')})")
        except Exception:
            out.append(f"{c['Names'][0].lstrip('/')} (removed)")
    return out


def _capture(client: Any, host: str, sink: VersionSink, opts: CaptureOptions,
             cs: list[dict[str, Any]], info: dict[str, Any], staging: Path,
             criu_version: str) -> CaptureReport:
    t_start = time.perf_counter()
    pause = next((c for c in cs if c["Labels"].get(spec.ROLE_LABEL) == "pause"), cs[0])
    ns_pid = int(info[pause["Id"]]["State"]["Pid"])
    api_url = next((c["Labels"][spec.INTROSPECT_LABEL] for c in cs
                    if spec.INTROSPECT_LABEL in c["Labels"]), None)

    # ---- resources over a window (before the cut), and request rate from introspection
    live0 = _live_settings(client, ns_pid, api_url)
    t0 = time.monotonic()
    samples = probe.sample_window([c["Id"] for c in cs], opts.window_s, opts.samples,
                                  lambda cid: probe.cgroup_sample(cid, opts.cgroup_root))
    live1 = _live_settings(client, ns_pid, api_url)
    rps = None
    if live0 and live1 and "requests" in live0:
        rps = (live1["requests"] - live0["requests"]) / max(1e-6, time.monotonic() - t0)

    # ---- network: tables of the host's namespace, sockets joined to components
    tables = probe.netns_tables(ns_pid, opts.proc_root)
    pids = {c["Names"][0].lstrip("/"): probe.cgroup_pids(c["Id"], opts.cgroup_root) for c in cs}
    owners = probe.socket_owners(pids, opts.proc_root)
    joins = parse.join_connections(tables["sockets"], owners)
    net = {
        "addresses": tables["addresses"],
        "routes": [r.__dict__ for r in tables["routes"]],
        "listening": sorted({f"{s.local}:{s.local_port}" for s in tables["sockets"]
                             if s.state == "LISTEN"}),
        "established": sum(s.state == "ESTABLISHED" for s in tables["sockets"]),
        "joins": [j.__dict__ for j in joins],
    }
    net_path = staging / "network.json"
    net_path.write_text(json.dumps({**net, "sockets": [s.__dict__ for s in tables["sockets"]],
                                    "socket_owners": {str(k): v for k, v in owners.items()}},
                                   indent=1))

    # ---- the consistent cut
    members = [Member(c["Id"], c["Names"][0].lstrip("/"), c["Labels"].get(spec.ROLE_LABEL, "?"))
               for c in cs]
    name = "p" + time.strftime("%H%M%S")
    cut_time_ns = time.time_ns()
    files: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}

    def read_files() -> None:
        files.update(snapshot_files(cs, info, staging, opts.proc_root))

    eng = cut_engine(client, opts)
    inside = read_files if opts.files_in_cut else None
    if isinstance(eng, GatedEngine):
        cut = gated_cut(eng, plan_cut(members), staging / "process", name, inside=inside,
                        netns_pid=ns_pid)
    else:
        cut = consistent_cut(eng, plan_cut(members), staging / "process", name,
                             parallel=opts.parallel_dumps, inside=inside)
    if not opts.files_in_cut:
        read_files()

    # ---- after thaw: decode images, filesystem diffs, config, metadata
    obs = []
    phases: dict[str, dict[str, float]] = {}
    for c in cs:
        cname = c["Names"][0].lstrip("/")
        ins = info[c["Id"]]
        role = c["Labels"].get(spec.ROLE_LABEL, "?")
        proc = None
        proc_data = None
        proc_bytes = 0
        ck = staging / "process" / cname / name
        if ck.is_dir():
            final = staging / "process" / cname / "checkpoint"
            ck.rename(final)
            proc = {**parse.criu_image_summary(probe.load_criu_images(final)),
                    "dump_ms": round(cut.dump_ms.get(cname, 0.0), 1),
                    "checkpoint_name": name}
            clog = final / CRIU_LOG_NAME
            if clog.exists():
                proc["criu_phases_ms"] = parse.criu_log_phases(clog.read_text(errors="replace"))
                phases[cname] = proc["criu_phases_ms"]
            if spec.READY_LABEL in c["Labels"]:
                proc["ready_file"] = c["Labels"][spec.READY_LABEL]
            proc_data = str(final.relative_to(staging))
            proc_bytes = probe.dir_size(final)
        diff = client.diff(c["Id"]) or []
        fs_rel, cfg_files = files[cname]
        live = live1 if spec.INTROSPECT_LABEL in c["Labels"] else None
        cpu_lim, mem_lim = probe.cgroup_limits(c["Id"], opts.cgroup_root)
        obs.append(ContainerObs(
            name=cname, cid=c["Id"], role=role, image=ins["Config"]["Image"], image_id=ins["Image"],
            command=tuple(ins["Config"].get("Cmd") or ()),
            fs_added=sum(d["Kind"] == 1 for d in diff), fs_changed=sum(d["Kind"] == 0 for d in diff),
            fs_deleted=tuple(sorted(d["Path"] for d in diff if d["Kind"] == 2)),
            fs_archive=fs_rel, fs_bytes=(staging / fs_rel).stat().st_size,
            process=proc, process_data=proc_data, process_bytes=proc_bytes,
            usage=parse.summarize_samples(samples[c["Id"]]), cpu_limit=cpu_lim, mem_limit=mem_lim,
            config_files=cfg_files, live_settings=live,
            app_version=(live or {}).get("version") if live else None))

    mods, note = probe.read_kernel_modules(opts.proc_root, opts.sys_root)
    probe.run_text(["criu", "cpuinfo", "dump", "-D", str(staging)])
    cpuinfo = "cpuinfo.img" if (staging / "cpuinfo.img").exists() else None
    v = client.version()
    h = HostObs(host=host, captured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                kernel=os.uname().release, criu_version=criu_version,
                docker_version=str(v.get("Version")), freeze_ms=cut.freeze_ms,
                containers=tuple(obs), network=net, network_data="network.json",
                network_bytes=net_path.stat().st_size, modules=tuple(mods), modules_note=note,
                cpuinfo_data=cpuinfo, peak_requests_per_s=rps, window_s=opts.window_s)
    manifest = build_manifest(h)
    manifest.save(staging / "manifest.json")
    timings = {"pause_ms": round(cut.pause_ms, 1), "thaw_ms": round(cut.thaw_ms, 1),
               "files_in_cut_ms": round(cut.inside_ms, 1) if opts.files_in_cut else None,
               "prepare_ms": round(cut.prepare_ms, 1), "netlock_ms": round(cut.lock_ms, 1),
               "criu_phases_ms": phases,
               "dump_ms": {k: round(x, 1) for k, x in cut.dump_ms.items()},
               "total_ms": 0.0}
    capture_id = new_capture_id()
    extra = {"capture_id": capture_id, "timings": timings,
             "cut": {"freeze": opts.freeze, "dump": opts.dump, "parallel": opts.parallel_dumps,
                     "files_in_cut": opts.files_in_cut}, "kernel_modules": note,
             "criu_version": criu_version}
    summary = summary_json(manifest, "", cut.freeze_ms, sink.url, extra)
    summary["version"] = None  # assigned by the store when the version is written
    (staging / "capture.json").write_text(json.dumps(summary, indent=1))
    vinfo = VersionInfo(time_ns=cut_time_ns, tags=("capture", *opts.tags),
                       meta=version_meta(manifest, summary, capture_id, str(v.get("Version"))))
    version = sink.publish(host, staging, vinfo)
    timings["total_ms"] = round((time.perf_counter() - t_start) * 1000, 1)
    summary["version"] = version
    return CaptureReport(host, version, cut.freeze_ms, sink.url, summary)


def snapshot_files(cs: list[dict[str, Any]], info: dict[str, Any], staging: Path,
                   proc_root: Path = Path("/proc")
                   ) -> dict[str, tuple[str, dict[str, dict[str, Any]]]]:
    """Per container: a tar of its overlay upper dir (its changes against the image, whiteouts
    kept) and its declared config files. Returns name -> (tar path, {config path: sha/size/data})."""
    out = {}
    (staging / "filesystem").mkdir(exist_ok=True)
    for c in cs:
        cname = c["Names"][0].lstrip("/")
        ins = info[c["Id"]]
        fs_rel = f"filesystem/{cname}.tar"
        upper = Path(ins["GraphDriver"]["Data"]["UpperDir"])
        with tarfile.open(staging / fs_rel, "w") as tar:
            tar.add(str(upper), arcname=".")
        cfg_files: dict[str, dict[str, Any]] = {}
        for path in filter(None, c["Labels"].get(spec.CONFIG_LABEL, "").split(",")):
            data = probe.read_in_root(int(ins["State"]["Pid"]), path, proc_root)
            st = probe.stat_in_root(int(ins["State"]["Pid"]), path, proc_root)
            rel = f"config/{cname}{path}"
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
            # mtime and mode are part of the file: apps watch mtimes to reload their config
            cfg_files[path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                               "data": rel, "mtime_ns": st.st_mtime_ns, "mode": st.st_mode & 0o7777}
        out[cname] = (fs_rel, cfg_files)
    return out


def version_meta(manifest: Any, summary: dict[str, Any], capture_id: str,
                 docker_version: str) -> dict[str, str]:
    """The store metadata of a capture (pure): host facts, app versions, dependencies, sizes."""
    hi = manifest.host
    meta = {"capture_id": capture_id, "captured_at": hi.captured_at, "kernel": hi.kernel,
            "criu": hi.criu_version, "docker": docker_version,
            "freeze_ms": f"{summary['freeze_ms']:.1f}",
            "size.total": str(summary["total_bytes"])}
    meta.update({f"app.{k}": str(x) for k, x in hi.app_versions.items()})
    for c in summary["components"]:
        meta[f"size.{c['name']}"] = str(c["size_bytes"])
        if c["depends_on"]:  # which component needs which (restore order)
            meta[f"needs.{c['name']}"] = ",".join(c["depends_on"])
    return meta


def remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
