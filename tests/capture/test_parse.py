"""Pure parsers against fixtures in the exact kernel formats (no daemon, no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.capture import parse, probe
from persona.errors import CaptureError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "procfs-kmods"

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9A3C 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:18EB 0100007F:9A3C 01 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 20 4 30 10 -1
   4: 0A004D0A:1F90 14004D0A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1
"""


def test_proc_net_tcp_addresses_ports_states() -> None:
    socks = parse.parse_proc_net_tcp(TCP)
    assert socks[0] == parse.TcpSocket("127.0.0.1", 6379, "0.0.0.0", 0, "LISTEN", 1001)
    assert socks[2].state == "ESTABLISHED" and socks[2].local_port == 0x9A3C
    assert socks[4].local == "10.77.0.10" and socks[4].remote == "10.77.0.20"


def test_proc_net_tcp6_address() -> None:
    text = ("  sl  local_address                         remote_address                        st\n"
            "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
            "00000000:00000000 00:00000000 00000000 0 0 77 1\n")
    (s,) = parse.parse_proc_net_tcp(text)
    assert s.local == "::1" and s.local_port == 8080 and s.inode == 77


def test_proc_net_tcp_rejects_garbage() -> None:
    with pytest.raises(CaptureError, match="not a /proc/net/tcp"):
        parse.parse_proc_net_tcp("hello\n")
    with pytest.raises(CaptureError, match="line 2 malformed"):
        parse.parse_proc_net_tcp("  sl local\n 0: zz\n")


def test_joins_pair_both_ends_and_name_owners() -> None:
    socks = parse.parse_proc_net_tcp(TCP)
    joins = parse.join_connections(socks, {2001: "worker", 3001: "redis", 2002: "api"})
    inner = [j for j in joins if j.client == "worker"]
    assert len(inner) == 1 and inner[0].server == "redis"
    assert inner[0].remote == "127.0.0.1:6379"
    outer = [j for j in joins if j.server == "api"]
    assert len(outer) == 1 and outer[0].client is None  # the load client lives outside


def test_routes() -> None:
    text = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
            "eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    r = parse.parse_proc_net_route(text)
    assert r[0].gateway == "10.77.0.1" and r[1].destination == "10.77.0.0"
    assert r[1].mask == "255.255.255.0"


def test_kernel_modules_from_fixture_root_in_load_order_with_params() -> None:
    mods, note = probe.read_kernel_modules(FIX / "proc", FIX / "sys")
    assert [m.name for m in mods] == ["e1000", "loop", "nf_defrag_ipv6", "nf_conntrack",
                                      "nf_nat", "xt_conntrack"]
    assert [m.load_position for m in mods] == list(range(6))
    by = {m.name: m for m in mods}
    assert by["loop"].parameters == {"max_loop": "8", "max_part": "0"}
    assert by["nf_conntrack"].parameters == {"acct": "Y", "hashsize": "65536"}
    assert by["nf_conntrack"].used_by == ("xt_conntrack", "nf_nat")
    deps = parse.module_dependencies(mods)
    assert deps["xt_conntrack"] == ("nf_conntrack",)
    assert deps["nf_conntrack"] == ("nf_defrag_ipv6",)
    assert "6 modules" in note


def test_kernel_modules_absent_is_a_note(tmp_path: Path) -> None:
    mods, note = probe.read_kernel_modules(tmp_path, tmp_path)
    assert mods == [] and "no loadable modules" in note


def test_proc_modules_malformed() -> None:
    with pytest.raises(CaptureError, match="line 1 malformed"):
        parse.parse_proc_modules("loop 40960\n")


def test_cgroup_files() -> None:
    assert parse.cpu_limit_cores("50000\n", "100000\n") == 0.5
    assert parse.cpu_limit_cores("-1\n", "100000\n") is None
    assert parse.memory_limit("9223372036854771712\n") is None
    assert parse.memory_limit("134217728\n") == 128 << 20
    blk = "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Total 12288\nTotal 12288\n"
    assert parse.blkio_bytes(blk) == (4096, 8192)


def test_summarize_samples_rates_and_peaks() -> None:
    s = [parse.CgroupSample(0.0, 0, 100, 150, 0, 0),
         parse.CgroupSample(1.0, 500_000_000, 300, 310, 1000, 0),
         parse.CgroupSample(2.0, 600_000_000, 200, 320, 1000, 4000)]
    r = parse.summarize_samples(s)
    assert r["cpu_usage_cores"] == pytest.approx(0.3)
    assert r["cpu_peak_cores"] == pytest.approx(0.5)
    assert r["memory_bytes"] == 200 and r["memory_peak_bytes"] == 320
    assert r["io_read_bps"] == 500 and r["io_write_bps"] == 2000
    with pytest.raises(CaptureError, match="at least 2"):
        parse.summarize_samples(s[:1])


def test_criu_image_summary() -> None:
    imgs = {
        "pstree.img": {"entries": [{"pid": 1, "ppid": 0, "threads": [1, 7]}]},
        "pagemap-1.img": {"entries": [{"pages_id": 1}, {"vaddr": 4096, "nr_pages": 3},
                                      {"vaddr": 65536, "nr_pages": 2}]},
        "files.img": {"entries": [{"type": "REG"}, {"type": "INETSK", "isk": {
            "src_port": 5, "dst_port": 6379, "state": 1, "ino": 9}}]},
    }
    s = parse.criu_image_summary(imgs)
    assert s["memory_pages"] == 5 and s["memory_bytes"] == 5 * 4096
    assert s["processes"] == [{"pid": 1, "ppid": 0, "threads": 2}]
    assert s["open_files_by_type"] == {"REG": 1, "INETSK": 1}
    assert s["inet_sockets"][0]["dst_port"] == 6379


def test_criu_log_phases_of_a_real_runc_dump() -> None:
    """A dump.log of one demo container (runc checkpoint --leave-running, CRIU 4.2.1)."""
    from persona.capture.parse import CRIU_LOG_MARKS, criu_log_phases

    text = (Path(__file__).parent / "data" / "runc-dump.log").read_text()
    ph = criu_log_phases(text)
    assert list(ph) == [p for p, _ in CRIU_LOG_MARKS]
    last = float(text.strip().splitlines()[-1][1:10])
    assert abs(sum(ph.values()) - last * 1000) < 0.5  # phases tile the whole dump
    assert ph["memory"] < 20 < ph["cgroups_mounts_ns"]  # this kind of dump is not memory-bound
    assert criu_log_phases("(00.000100) Running pre-dump scripts\nnoise\n") == {"start": 0.1}
    assert criu_log_phases("") == {}
