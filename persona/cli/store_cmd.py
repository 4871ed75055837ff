"""``persona store ...``: versioned, deduplicated persona storage (see docs/store.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from persona.errors import StoreError

if TYPE_CHECKING:
    from persona.store.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])


def _store_opt(f: F) -> F:
    f = click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the encryption passphrase (else $PERSONA_STORE_KEY / $PERSONA_STORE_KEY_FILE).",
    )(f)
    return click.option(
        "--store",
        "store_url",
        required=True,
        envvar="PERSONA_STORE",
        help="Store URL: a directory, file:///path, s3://bucket/prefix?endpoint=http://host:port, memory://name."
        " [env: PERSONA_STORE]",
    )(f)


def _json_opt(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def _open(url: str, key_file: str | None) -> Repository:
    from persona.store import Repository

    return Repository.open(url, key_file=key_file)


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _ts(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it or it.startswith("="):
            raise click.BadParameter(f"{it!r}: use KEY=VALUE", param_hint="--meta")
        k, v = it.split("=", 1)
        out[k] = v
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def store() -> None:
    """Versioned, deduplicated, delta-compressed persona storage (local directory or S3)."""


@store.command("init")
@click.argument("url")
@click.option(
    "--encrypt", is_flag=True, help="Encrypt everything (AES-256-GCM) with the store key."
)
@click.option(
    "--key-file", type=click.Path(dir_okay=False), default=None, help="File holding the passphrase."
)
@click.option(
    "--pack-size", type=click.IntRange(min=64 * 1024), default=16 * 1024 * 1024, show_default=True
)
@_json_opt
def init_cmd(url: str, encrypt: bool, key_file: str | None, pack_size: int, as_json: bool) -> None:
    """Create an empty store at URL."""
    from persona.store import Repository

    repo = Repository.init(url, encrypt=encrypt, key_file=key_file, pack_size=pack_size)
    if as_json:
        _emit(
            {
                "location": repo.backend.location,
                "id": repo.config["id"],
                "encrypted": repo.encrypted,
            }
        )
    else:
        click.echo(
            f"created {'encrypted ' if repo.encrypted else ''}store {repo.config['id']} at {repo.backend.location}"
        )


@store.command("put")
@_store_opt
@click.option("--host", required=True, help="Host whose persona this is (versions are per host).")
@click.option("--tag", "tags", multiple=True, help="Tag the version (repeatable).")
@click.option("--meta", "meta", multiple=True, help="KEY=VALUE metadata (repeatable).")
@click.option("--kernel", default=None, help="Kernel version of the captured host (meta 'kernel').")
@click.option("--criu", default=None, help="CRIU version used for the dump (meta 'criu').")
@click.option(
    "--app", "apps", multiple=True, help="NAME=VERSION of an application (meta 'app.NAME')."
)
@click.option(
    "--dep", "deps", multiple=True, help="NAME=VERSION of a dependency (meta 'dep.NAME')."
)
@click.option(
    "--no-delta", is_flag=True, help="Do not delta-compress against the previous version."
)
@_json_opt
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def put_cmd(
    store_url: str,
    key_file: str | None,
    host: str,
    tags: tuple[str, ...],
    meta: tuple[str, ...],
    kernel: str | None,
    criu: str | None,
    apps: tuple[str, ...],
    deps: tuple[str, ...],
    no_delta: bool,
    as_json: bool,
    paths: tuple[str, ...],
) -> None:
    """Store DIR (its contents) or several files/folders (each under its own name) as the
    next version of HOST. Query the metadata later with `ls --meta`."""
    from persona.store import PutOptions, put

    md = _parse_meta(meta)
    md.update({f"app.{k}": v for k, v in _parse_meta(apps).items()})
    md.update({f"dep.{k}": v for k, v in _parse_meta(deps).items()})
    if kernel:
        md["kernel"] = kernel
    if criu:
        md["criu"] = criu
    repo = _open(store_url, key_file)
    t0 = time.perf_counter()
    source: str | list[str] = paths[0] if len(paths) == 1 else list(paths)
    v = put(repo, source, host, PutOptions(tags=tags, meta=md, delta=not no_delta))
    dt = time.perf_counter() - t0
    snap = repo.load_snapshot(v.snapshot)
    info = {
        "host": v.host,
        "version": v.version,
        "snapshot": v.snapshot,
        "seconds": round(dt, 3),
        **snap.stats,
    }
    if as_json:
        _emit(info)
    else:
        st = snap.stats
        click.echo(
            f"{host} version {v.version} (snapshot {v.snapshot[:12]}): {_human(st['bytes'])} in"
            f" {st['files']} files, added {_human(st['added_bytes'])}"
            f" ({st['new_blobs']} new chunks, {st['delta_blobs']} deltas) in {dt:.2f}s"
        )


def _matches(snap: Any, tags: tuple[str, ...], meta: dict[str, str]) -> bool:
    return all(t in snap.tags for t in tags) and all(snap.meta.get(k) == v for k, v in meta.items())


@store.command("ls")
@_store_opt
@click.option("--host", default=None, help="Only this host.")
@click.option(
    "--tag", "tags", multiple=True, help="Only versions with this tag (repeatable: all must match)."
)
@click.option(
    "--meta", "meta", multiple=True, help="Only versions with KEY=VALUE metadata (repeatable)."
)
@click.option("--since", default=None, help="Only versions newer than a duration ago, e.g. 7d.")
@_json_opt
def ls_cmd(
    store_url: str,
    key_file: str | None,
    host: str | None,
    tags: tuple[str, ...],
    meta: tuple[str, ...],
    since: str | None,
    as_json: bool,
) -> None:
    """List versions (filter by host, tags, metadata, age)."""
    from persona.store import parse_duration

    repo = _open(store_url, key_file)
    want_meta = _parse_meta(meta)
    cutoff = time.time_ns() - int(parse_duration(since) * 1e9) if since else None
    rows: list[dict[str, Any]] = []
    for v in repo.list_versions(host):
        if cutoff is not None and v.time_ns < cutoff:
            continue
        snap = repo.load_snapshot(v.snapshot)
        if not _matches(snap, tags, want_meta):
            continue
        rows.append(
            {
                "host": v.host,
                "version": v.version,
                "time": _ts(v.time_ns),
                "snapshot": v.snapshot,
                "size": snap.size,
                "added_bytes": snap.stats.get("added_bytes", 0),
                "tags": list(snap.tags),
                "meta": snap.meta,
            }
        )
    if as_json:
        _emit(rows)
        return
    click.echo(
        f"{'host':<16} {'ver':>4}  {'time':<20} {'snapshot':<12} {'size':>10} {'added':>10}  tags"
    )
    for r in rows:
        click.echo(
            f"{r['host']:<16} {r['version']:>4}  {r['time']:<20} {r['snapshot'][:12]:<12}"
            f" {_human(r['size']):>10} {_human(r['added_bytes']):>10}  {','.join(r['tags'])}"
        )


@store.command("show")
@_store_opt
@click.option("--host", required=True)
@click.option(
    "--version", "version", default="latest", show_default=True, help="Version number or 'latest'."
)
@click.option("--files", "show_files", is_flag=True, help="Also list the files.")
@_json_opt
def show_cmd(
    store_url: str, key_file: str | None, host: str, version: str, show_files: bool, as_json: bool
) -> None:
    """Show one version's metadata (and files)."""
    repo = _open(store_url, key_file)
    v = repo.resolve(host, version)
    snap = repo.load_snapshot(v.snapshot)
    doc = {
        "host": v.host,
        "version": v.version,
        "time": _ts(v.time_ns),
        "snapshot": v.snapshot,
        **snap.to_json(),
    }
    if not show_files:
        doc["files"] = len(snap.files)
    if as_json:
        _emit(doc)
        return
    click.echo(f"{v.host} version {v.version}  snapshot {v.snapshot}")
    click.echo(f"  time    {_ts(v.time_ns)}")
    click.echo(f"  parent  {snap.parent or '-'}")
    click.echo(f"  tags    {', '.join(snap.tags) or '-'}")
    for k, val in sorted(snap.meta.items()):
        click.echo(f"  meta    {k}={val}")
    for stat_name, count in sorted(snap.stats.items()):
        click.echo(f"  {stat_name:<12} {count}")
    if show_files:
        for f in snap.files:
            extra = f" -> {f.target}" if f.type == "symlink" else ""
            click.echo(f"  {f.type:<7} {f.mode:04o} {f.size:>12}  {f.path}{extra}")


@store.command("diff")
@_store_opt
@click.option("--host", required=True)
@click.argument("old")
@click.argument("new", default="latest")
@_json_opt
def diff_cmd(
    store_url: str, key_file: str | None, host: str, old: str, new: str, as_json: bool
) -> None:
    """Differences between versions OLD and NEW (default: latest) of HOST."""
    from persona.store.diff import diff_snapshots

    repo = _open(store_url, key_file)
    repo.load_index()
    va, vb = repo.resolve(host, old), repo.resolve(host, new)
    d = diff_snapshots(
        repo.load_snapshot(va.snapshot), repo.load_snapshot(vb.snapshot), repo.read_extent_map
    )
    if as_json:
        _emit({"old": va.version, "new": vb.version, **d.to_json()})
        return
    click.echo(f"{host}: version {va.version} -> {vb.version}")
    for c in d.changes:
        click.echo(
            f"  {c.kind:<9} {c.path}  ({_human(c.old_size)} -> {_human(c.new_size)}, {_human(c.changed_bytes)} changed)"
        )
    for k, (a, b) in d.meta_changes.items():
        click.echo(f"  meta      {k}: {a} -> {b}")
    click.echo(f"  {d.unchanged} unchanged, {_human(d.changed_bytes)} changed in total")


@store.command("restore")
@_store_opt
@click.option("--host", required=True)
@click.option(
    "--version", "version", default="latest", show_default=True, help="Version number or 'latest'."
)
@_json_opt
@click.argument("directory", type=click.Path(file_okay=False))
def restore_cmd(
    store_url: str, key_file: str | None, host: str, version: str, as_json: bool, directory: str
) -> None:
    """Restore a version of HOST into DIRECTORY, byte-identical."""
    from persona.store import restore

    repo = _open(store_url, key_file)
    v = repo.resolve(host, version)
    t0 = time.perf_counter()
    r = restore(repo, v, directory)
    dt = time.perf_counter() - t0
    if as_json:
        _emit(
            {
                "host": host,
                "version": v.version,
                "snapshot": v.snapshot,
                "files": r.files,
                "bytes": r.bytes,
                "seconds": round(dt, 3),
            }
        )
    else:
        click.echo(
            f"restored {host} version {v.version}: {r.files} files, {_human(r.bytes)} in {dt:.2f}s to {directory}"
        )


@store.command("verify")
@_store_opt
@click.option(
    "--read-data", is_flag=True, help="Read and re-hash every pack and chunk (slow, thorough)."
)
@_json_opt
@click.pass_context
def verify_cmd(
    ctx: click.Context, store_url: str, key_file: str | None, read_data: bool, as_json: bool
) -> None:
    """Check the store; exit status 1 when anything is wrong."""
    from persona.store import verify

    repo = _open(store_url, key_file)
    rep = verify(repo, read_data=read_data)
    if as_json:
        _emit(rep.to_json())
    else:
        for w in rep.warnings:
            click.echo(f"warning: {w}")
        for e in rep.errors:
            click.echo(f"error: {e}", err=True)
        c = rep.counts
        click.echo(
            f"{'ok' if rep.ok else 'FAILED'}: {c.get('versions', 0)} versions, {c.get('packs', 0)} packs,"
            f" {c.get('blobs', 0)} chunks{' (all data read)' if read_data else ''}; {len(rep.errors)} errors"
        )
    if not rep.ok:
        # SystemExit, not ctx.exit: persona's main() runs click with standalone_mode=False,
        # where click turns ctx.exit(1) into a return value and the status would be lost
        raise SystemExit(1)


@store.command("prune")
@_store_opt
@click.option("--host", default=None, help="Only prune this host's versions.")
@click.option(
    "--keep-last", type=int, default=None, help="Keep the N newest versions of each host."
)
@click.option("--keep-within", default=None, help="Keep versions younger than this, e.g. 7d, 12h.")
@click.option("--dry-run", is_flag=True, help="Only show what would be forgotten.")
@click.option("--gc/--no-gc", "run_gc", default=True, show_default=True, help="Run gc afterwards.")
@_json_opt
def prune_cmd(
    store_url: str,
    key_file: str | None,
    host: str | None,
    keep_last: int | None,
    keep_within: str | None,
    dry_run: bool,
    run_gc: bool,
    as_json: bool,
) -> None:
    """Forget versions outside a retention policy (the latest of each host is always kept)."""
    from persona.store import Policy, gc, parse_duration, prune

    policy = Policy(keep_last, parse_duration(keep_within) if keep_within else None)
    repo = _open(store_url, key_file)
    res = prune(repo, policy, host=host, dry_run=dry_run)
    gcres = gc(repo, dry_run=dry_run).to_json() if run_gc else None
    if as_json:
        _emit(
            {
                "keep": [v.__dict__ for v in res.keep],
                "forget": [v.__dict__ for v in res.forget],
                "dry_run": dry_run,
                "gc": gcres,
            }
        )
        return
    for v in res.forget:
        click.echo(
            f"{'would forget' if dry_run else 'forgot'} {v.host} version {v.version} ({_ts(v.time_ns)})"
        )
    click.echo(
        f"kept {len(res.keep)} versions, {'would forget' if dry_run else 'forgot'} {len(res.forget)}"
    )
    if gcres:
        click.echo(
            f"gc: deleted {gcres['deleted_packs']} packs, repacked {gcres['repacked_packs']}, freed {_human(gcres['freed_bytes'])}"
        )


@store.command("gc")
@_store_opt
@click.option(
    "--grace", default="1h", show_default=True, help="Never delete objects younger than this."
)
@click.option("--dry-run", is_flag=True)
@_json_opt
def gc_cmd(store_url: str, key_file: str | None, grace: str, dry_run: bool, as_json: bool) -> None:
    """Remove packs, snapshots and temporary files that no version needs."""
    from persona.store import gc, parse_duration

    grace_s = 0.0 if grace.strip() in ("0", "0s") else parse_duration(grace)
    repo = _open(store_url, key_file)
    res = gc(repo, grace_s=grace_s, dry_run=dry_run)
    if as_json:
        _emit(res.to_json())
    else:
        click.echo(
            f"{'would delete' if dry_run else 'deleted'} {res.deleted_packs} packs (repacked {res.repacked_packs}),"
            f" {res.deleted_snapshots} snapshots, {res.deleted_temp_files} temp files; freed {_human(res.freed_bytes)};"
            f" kept {res.kept_young_packs} young packs"
        )


@store.command("stats")
@_store_opt
@_json_opt
def stats_cmd(store_url: str, key_file: str | None, as_json: bool) -> None:
    """Sizes, counts and the deduplication ratio."""
    repo = _open(store_url, key_file)
    st = repo.stats()
    if as_json:
        _emit(st)
        return
    click.echo(f"store        {st['location']}{' (encrypted)' if st['encrypted'] else ''}")
    click.echo(
        f"versions     {st['versions']} ({', '.join(f'{h}: {n}' for h, n in st['hosts'].items()) or '-'})"
    )
    click.echo(f"packs        {st['packs']} ({_human(st['stored_bytes'])} stored)")
    click.echo(f"chunks       {st['blobs']} {st['blob_kinds']}")
    click.echo(f"logical      {_human(st['logical_bytes'])} across all versions")
    ratio = st["dedup_ratio"]
    click.echo(f"ratio        {ratio:.1f}x" if ratio else "ratio        -")


__all__ = ["StoreError", "store"]
