"""The ``persona store`` command line, including the exact forms other tools call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona.cli import cli

from .conftest import tree_bytes


def _persona(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from persona.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_exact_forms_end_to_end(tmp_path: Path, image_versions: list[Path]) -> None:
    url = str(tmp_path / "store")
    assert _persona("store", "init", url).returncode == 0
    for d in image_versions[:2]:
        r = _persona("store", "put", "--store", url, "--host", "web-1", str(d))
        assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = _persona(
        "store", "restore", "--store", url, "--host", "web-1", "--version", "latest", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert tree_bytes(out) == tree_bytes(image_versions[1])
    r = _persona(
        "store",
        "restore",
        "--store",
        url,
        "--host",
        "web-1",
        "--version",
        "1",
        str(tmp_path / "o1"),
    )
    assert r.returncode == 0 and tree_bytes(tmp_path / "o1") == tree_bytes(image_versions[0])
    r = _persona("store", "verify", "--store", url, "--read-data")
    assert r.returncode == 0, r.stdout + r.stderr
    # corrupt one pack: verify must fail (non-zero) and name the damage
    pack = max(
        (p for p in (tmp_path / "store" / "data").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    r = _persona("store", "verify", "--store", url, "--read-data")
    assert r.returncode != 0
    assert pack.name in r.stderr and "snapshot" in r.stderr
    pack.unlink()
    r = _persona("store", "verify", "--store", url)
    assert r.returncode != 0 and "missing" in r.stderr
    # errors are one clear line, exit status 2
    r = _persona("store", "init", "bogus://x")
    assert (
        r.returncode == 2 and "unknown store URL scheme" in r.stderr and "Traceback" not in r.stderr
    )


def test_cli_commands_json(tmp_path: Path, image_versions: list[Path]) -> None:
    runner = CliRunner()
    url = str(tmp_path / "s")

    def run(*args: str) -> str:
        res = runner.invoke(cli, list(args), catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    run("store", "init", url)
    for i, d in enumerate(image_versions):
        out = json.loads(
            run(
                "store",
                "put",
                "--store",
                url,
                "--host",
                "h",
                "--tag",
                f"t{i}",
                "--meta",
                f"kernel=6.{i}",
                "--json",
                str(d),
            )
        )
        assert out["version"] == i + 1 and out["bytes"] > 0
    rows = json.loads(run("store", "ls", "--store", url, "--json"))
    assert [r["version"] for r in rows] == [1, 2, 3]
    rows = json.loads(run("store", "ls", "--store", url, "--meta", "kernel=6.1", "--json"))
    assert [r["version"] for r in rows] == [2]
    rows = json.loads(run("store", "ls", "--store", url, "--tag", "t2", "--json"))
    assert [r["version"] for r in rows] == [3]
    assert "web" not in run("store", "ls", "--store", url)
    show = json.loads(
        run("store", "show", "--store", url, "--host", "h", "--version", "2", "--json")
    )
    assert show["meta"] == {"kernel": "6.1"} and show["tags"] == ["t1"]
    assert "pages-1.img" in run("store", "show", "--store", url, "--host", "h", "--files")
    d = json.loads(run("store", "diff", "--store", url, "--host", "h", "1", "3", "--json"))
    assert {c["path"] for c in d["changes"]} == {"pages-1.img", "fs/rootfs-diff.tar"}
    assert 0 < d["changed_bytes"] < (image_versions[0] / "pages-1.img").stat().st_size
    st = json.loads(run("store", "stats", "--store", url, "--json"))
    assert st["versions"] == 3 and st["dedup_ratio"] > 1
    pr = json.loads(
        run("store", "prune", "--store", url, "--keep-last", "1", "--dry-run", "--json")
    )
    assert [v["version"] for v in pr["forget"]] == [1, 2]
    assert (
        len(json.loads(run("store", "ls", "--store", url, "--json"))) == 3
    )  # dry run changed nothing
    run("store", "prune", "--store", url, "--keep-within", "1h", "--no-gc")
    assert len(json.loads(run("store", "ls", "--store", url, "--json"))) == 3  # all are young
    run("store", "prune", "--store", url, "--keep-last", "2")
    assert len(json.loads(run("store", "ls", "--store", url, "--json"))) == 2
    gcr = json.loads(run("store", "gc", "--store", url, "--grace", "0s", "--json"))
    assert set(gcr) >= {"deleted_packs", "freed_bytes"}
    assert json.loads(run("store", "verify", "--store", url, "--read-data", "--json"))["ok"]


@pytest.mark.parametrize(
    "cmd", ["init", "put", "ls", "show", "diff", "restore", "verify", "prune", "gc", "stats"]
)
def test_every_command_has_help(cmd: str) -> None:
    res = CliRunner().invoke(cli, ["store", cmd, "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output


def test_cli_encrypted_store(tmp_path: Path, image_versions: list[Path]) -> None:
    runner = CliRunner()
    key = tmp_path / "key"
    key.write_text("s3cret")
    url = str(tmp_path / "s")
    assert (
        runner.invoke(cli, ["store", "init", url, "--encrypt", "--key-file", str(key)]).exit_code
        == 0
    )
    r = runner.invoke(
        cli,
        [
            "store",
            "put",
            "--store",
            url,
            "--key-file",
            str(key),
            "--host",
            "h",
            str(image_versions[0]),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["store", "ls", "--store", url], env={"PERSONA_STORE_KEY": "nope"})
    assert r.exit_code != 0 and "wrong encryption key" in str(r.exception)


def test_put_metadata_options_are_queryable(tmp_path: Path, image_versions: list[Path]) -> None:
    runner = CliRunner()
    url = str(tmp_path / "s")

    def run(*args: str) -> str:
        res = runner.invoke(cli, list(args), catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    run("store", "init", url)
    run("store", "put", "--store", url, "--host", "web", str(image_versions[0]))
    run(
        "store", "put", "--store", url, "--host", "db", "--kernel", "6.1.0", "--criu", "4.2",
        "--app", "nginx=1.25", "--dep", "libssl=3.0", "--meta", "role=primary", str(image_versions[0]),
    )  # fmt: skip
    rows = json.loads(
        run(
            "store",
            "ls",
            "--store",
            url,
            "--meta",
            "app.nginx=1.25",
            "--meta",
            "criu=4.2",
            "--json",
        )
    )
    assert [
        (r["host"], r["meta"]["dep.libssl"], r["meta"]["kernel"], r["meta"]["role"]) for r in rows
    ] == [("db", "3.0", "6.1.0", "primary")]
    assert [
        r["host"] for r in json.loads(run("store", "ls", "--store", url, "--since", "1h", "--json"))
    ] == [
        "db",
        "web",
    ]
    assert (
        json.loads(
            run("store", "ls", "--store", url, "--since", "1s", "--meta", "kernel=5", "--json")
        )
        == []
    )
    bad = runner.invoke(
        cli,
        [
            "store",
            "put",
            "--store",
            url,
            "--host",
            "x",
            "--meta",
            "novalue",
            str(image_versions[0]),
        ],
    )
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output
