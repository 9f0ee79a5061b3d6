"""The remote compile cache against a real redis-server on a loopback port.

Most tests use a cheap cacheable backend (tests/support/packaged_backend.py) whose
compiles can take a set time and are counted; one test goes through
AOTInductor. "Machines" are processes with their own local folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import redis
import torch

import fxdelegate
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.passes.compile.remote_cache import PREFIX
from packaged_backend import DistinctBlocks, register
from redis_server import RedisServer, free_port

WORKER = os.path.join(os.path.dirname(__file__), "..", "support", "remote_cache_worker.py")
REGIONS = 6  # DistinctBlocks: six distinct regions
SECRET = "fleet-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def store(server):
    client = redis.Redis.from_url(server.url)
    client.flushall()
    return client


@pytest.fixture
def compile_log(tmp_path, monkeypatch):
    path = tmp_path / "compiles.log"
    monkeypatch.setenv("FXDELEGATE_TEST_COMPILE_LOG", str(path))
    register()
    return path


def _compiles(path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    return [(int(p), name) for p, name in (line.split() for line in path.read_text().splitlines())]


def _program():
    torch.manual_seed(0)
    model = DistinctBlocks().eval()
    x = torch.randn(3, 8)
    return model, x, torch.export.export(model, (x,))


def _lower(server, local, **options):
    model, x, ep = _program()
    secret = options.pop("secret", SECRET)
    prog = fxdelegate.lower(
        ep,
        backend="packaged",
        exclude_ops=["aten.relu"],
        cache_dir=str(local),
        remote_cache=fxdelegate.RemoteCacheOptions(server.url, secret=secret, **options),
        compile_workers=1,
        strict=True,
    )
    torch.testing.assert_close(prog(x), model(x))
    return prog


def _worker(config: dict, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def _entries(store) -> list[str]:
    return sorted(k.decode()[len(PREFIX + "entry:") :] for k in store.keys(PREFIX + "entry:*"))


def test_a_second_machine_compiles_nothing(server, store, compile_log, tmp_path):
    config = {"url": server.url, "local": str(tmp_path / "first")}
    first = _result(_worker(config))
    assert set(first["sources"].values()) == {"compiled, published"}
    assert first["stats"]["published"] == REGIONS
    second = _result(_worker({**config, "local": str(tmp_path / "second")}))
    assert set(second["sources"].values()) == {"remote hit"}
    assert second["stats"]["compiled"] == 0 and second["stats"]["remote_hits"] == REGIONS
    assert "remote hit" in second["report"] and "(6 of them remote)" in second["report"]
    compiles = _compiles(compile_log)
    assert len(compiles) == REGIONS and {pid for pid, _ in compiles} == {first["pid"]}
    # A remote hit lands in the local folder: a third lowering there is all local.
    third = _lower(server, tmp_path / "second")
    assert {r.compile for r in third.partitions} == {"local hit"}


def test_a_local_hit_the_store_lacks_is_published(server, store, compile_log, tmp_path):
    # A machine whose folder was filled before it joined the fleet shares what it has.
    model, x, ep = _program()
    alone = fxdelegate.lower(
        ep, backend="packaged", exclude_ops=["aten.relu"], cache_dir=str(tmp_path / "first")
    )
    torch.testing.assert_close(alone(x), model(x))
    assert _entries(store) == []
    joined = _lower(server, tmp_path / "first")
    assert {r.compile for r in joined.partitions} == {"local hit, published"}
    assert len(_entries(store)) == REGIONS
    assert f"({REGIONS} local, published to the store)" in joined.report()
    before = len(_compiles(compile_log))
    other = _lower(server, tmp_path / "second")
    assert {r.compile for r in other.partitions} == {"remote hit"}
    assert len(_compiles(compile_log)) == before == REGIONS
    # Once the store has them, a local hit publishes nothing again.
    again = _lower(server, tmp_path / "first")
    assert {r.compile for r in again.partitions} == {"local hit"}


def _tamper_and_relower(server, store, tmp_path, compile_log, tamper, warning, **options):
    _lower(server, tmp_path / "first")
    key = _entries(store)[0]
    tamper(store, key)
    before = len(_compiles(compile_log))
    with pytest.warns(fxdelegate.RemoteCacheWarning, match=warning):
        prog = _lower(server, tmp_path / "second", **options)  # checks the outputs too
    compiled = [r.name for r in prog.partitions if r.compile.startswith("compiled")]
    return compiled, len(_compiles(compile_log)) - before


def _flip_a_byte(store, key):
    chunk = sorted(store.keys(f"{PREFIX}chunk:{key}:*"))[0]
    data = bytearray(store.get(chunk))
    data[len(data) // 2] ^= 0xFF
    store.set(chunk, bytes(data))


def _truncate_a_chunk(store, key):
    chunk = sorted(store.keys(f"{PREFIX}chunk:{key}:*"))[-1]
    store.set(chunk, store.get(chunk)[:-10])


def _alter_the_header(store, key):
    record = json.loads(store.get(f"{PREFIX}entry:{key}"))
    record["header"]["meta"]["backend_meta"] = {"device": "cpu", "extra": 1}
    store.set(f"{PREFIX}entry:{key}", json.dumps(record))


def _drop_the_signature(store, key):
    record = json.loads(store.get(f"{PREFIX}entry:{key}"))
    del record["hmac"]
    store.set(f"{PREFIX}entry:{key}", json.dumps(record))


def _copy_under_another_key(store, key):
    other = next(k for k in _entries(store) if k != key)
    store.set(f"{PREFIX}entry:{key}", store.get(f"{PREFIX}entry:{other}"))


@pytest.mark.parametrize(
    "tamper, warning",
    [
        (_flip_a_byte, "truncated or altered"),
        (_truncate_a_chunk, "truncated or altered"),
        (_alter_the_header, "signature does not match"),
        (_drop_the_signature, "not signed"),
        (_copy_under_another_key, "stored for another key"),
    ],
)
def test_a_bad_entry_is_never_loaded(server, store, tmp_path, compile_log, tamper, warning):
    compiled, compiles = _tamper_and_relower(server, store, tmp_path, compile_log, tamper, warning)
    assert len(compiled) == 1 and compiles == 1  # that region only, compiled locally


def test_a_wrong_secret_compiles_everything_locally(server, store, tmp_path, compile_log):
    compiled, compiles = _tamper_and_relower(
        server,
        store,
        tmp_path,
        compile_log,
        lambda store, key: None,
        "signature does not match",
        secret="another-secret",
    )
    assert len(compiled) == REGIONS and compiles == REGIONS


def test_large_entries_are_stored_in_chunks_with_a_ttl(server, store, tmp_path, compile_log):
    _lower(server, tmp_path / "first", chunk_bytes=1000, ttl_seconds=3600)
    key = _entries(store)[0]
    chunks = store.keys(f"{PREFIX}chunk:{key}:*")
    record = json.loads(store.get(f"{PREFIX}entry:{key}"))
    assert len(chunks) == record["header"]["chunks"] > 1
    assert all(len(store.get(c)) <= 1000 for c in chunks)
    assert 0 < store.ttl(f"{PREFIX}entry:{key}") <= 3600
    assert all(0 < store.ttl(c) <= 3600 for c in chunks)
    prog = _lower(server, tmp_path / "second", chunk_bytes=1000)
    assert {r.compile for r in prog.partitions} == {"remote hit"}


def test_a_remote_cache_without_a_secret_is_refused(server, monkeypatch):
    monkeypatch.delenv("FXDELEGATE_CACHE_SECRET", raising=False)
    monkeypatch.delenv("FXDELEGATE_CACHE_INSECURE", raising=False)
    _, _, ep = _program()
    with pytest.raises(InvalidArgumentError, match="FXDELEGATE_CACHE_SECRET"):
        fxdelegate.lower(ep, backend="reference", remote_cache=server.url)
    with pytest.raises(InvalidArgumentError, match="redis://"):
        fxdelegate.lower(ep, backend="reference", remote_cache="http://cache:80")
    with pytest.raises(InvalidArgumentError, match="remote_cache must be"):
        fxdelegate.lower(ep, backend="reference", remote_cache=6379)


def test_the_environment_names_the_cache_and_insecure_is_an_explicit_opt_out(
    server, store, tmp_path, compile_log, monkeypatch
):
    monkeypatch.setenv("FXDELEGATE_REMOTE_CACHE", server.url)
    monkeypatch.delenv("FXDELEGATE_CACHE_SECRET", raising=False)
    monkeypatch.setenv("FXDELEGATE_CACHE_INSECURE", "1")
    _, _, ep = _program()
    prog = fxdelegate.lower(
        ep, backend="packaged", exclude_ops=["aten.relu"], cache_dir=str(tmp_path / "a")
    )
    assert {r.compile for r in prog.partitions} == {"compiled, published"}
    # Unsigned entries: a reader that has a secret refuses them.
    with pytest.warns(fxdelegate.RemoteCacheWarning, match="not signed"):
        _lower(server, tmp_path / "b")
    # remote_cache=False turns the environment's cache off.
    prog = fxdelegate.lower(
        ep,
        backend="packaged",
        exclude_ops=["aten.relu"],
        cache_dir=str(tmp_path / "c"),
        remote_cache=False,
    )
    assert {r.compile for r in prog.partitions} == {""}


def test_an_unreachable_server_gives_one_warning_and_a_local_compile(tmp_path, compile_log):
    class Nowhere:
        url = f"redis://127.0.0.1:{free_port()}/0"

    start = time.perf_counter()
    with pytest.warns(fxdelegate.RemoteCacheWarning, match="compiling locally") as caught:
        prog = _lower(Nowhere, tmp_path / "local", connect_timeout=0.5)
    assert time.perf_counter() - start < 30
    assert len([w for w in caught if issubclass(w.category, fxdelegate.RemoteCacheWarning)]) == 1
    assert {r.compile for r in prog.partitions} == {"compiled"}
    assert len(_compiles(compile_log)) == REGIONS


def test_the_server_killed_mid_run_ends_in_a_local_compile(tmp_path, compile_log, monkeypatch):
    server = RedisServer(str(tmp_path))
    monkeypatch.setenv("FXDELEGATE_TEST_COMPILE_SECONDS", "0.3")
    killer = threading.Timer(0.5, server.stop)  # during the second compile
    killer.start()
    try:
        with pytest.warns(fxdelegate.RemoteCacheWarning, match="failed"):
            prog = _lower(server, tmp_path / "local", timeout=2.0, connect_timeout=0.5)
    finally:
        killer.cancel()
        server.stop()
    sources = [r.compile for r in prog.partitions]
    assert "compiled, published" in sources and "compiled" in sources
    assert len(_compiles(compile_log)) == REGIONS


def test_a_dead_machines_claims_expire(server, store, tmp_path, compile_log):
    _lower(server, tmp_path / "first")
    keys = _entries(store)
    store.flushall()
    for key in keys:  # a machine that claimed every region, then died
        store.set(f"{PREFIX}claim:{key}", "dead", px=800)
    start = time.perf_counter()
    prog = _lower(server, tmp_path / "second")
    assert time.perf_counter() - start >= 0.8
    assert {r.compile for r in prog.partitions} == {"compiled, published"}


def test_a_waiter_compiles_itself_after_a_bounded_wait(server, store, tmp_path, compile_log):
    _lower(server, tmp_path / "first")
    keys = _entries(store)
    store.flushall()
    for key in keys:  # a machine that holds every claim and never publishes
        store.set(f"{PREFIX}claim:{key}", "stuck", px=60_000)
    start = time.perf_counter()
    prog = _lower(server, tmp_path / "second", wait_seconds=0.5)
    assert 0.5 <= time.perf_counter() - start < 30
    assert {r.compile for r in prog.partitions} == {"compiled, published"}


def test_concurrent_machines_split_the_regions_and_compile_each_once(
    server, store, tmp_path, compile_log
):
    env = {"FXDELEGATE_TEST_COMPILE_SECONDS": "0.6"}
    alone = _result(_worker({"url": server.url, "local": str(tmp_path / "alone")}, env))
    assert alone["stats"]["compiled"] == REGIONS
    store.flushall()
    compile_log.unlink()
    barrier = {"key": "test:barrier", "count": 3}
    processes = [
        _worker({"url": server.url, "local": str(tmp_path / f"m{i}"), "barrier": barrier}, env)
        for i in range(3)
    ]
    results = [_result(p) for p in processes]
    compiles = _compiles(compile_log)
    assert sorted(name for _, name in compiles) == sorted(alone["sources"])  # each region once
    compiled_by = [
        {name for name, source in r["sources"].items() if source.startswith("compiled")}
        for r in results
    ]
    assert sum(map(len, compiled_by)) == REGIONS
    assert set().union(*compiled_by) == set(alone["sources"])
    assert sum(1 for c in compiled_by if c) >= 2  # the work was split
    assert max(r["seconds"] for r in results) < alone["seconds"]
    for r in results:  # and every machine has every region
        assert set(r["sources"]) == set(alone["sources"])


def test_cli_cache_stats_and_clear(server, store, tmp_path, compile_log):
    _lower(server, tmp_path / "local")
    cli = [sys.executable, "-m", "fxdelegate.cli", "-q", "cache"]
    where = ["--dir", str(tmp_path / "local"), "--remote", server.url]
    done = subprocess.run([*cli, "stats", *where], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{REGIONS} entries" in done.stdout.splitlines()[0]
    assert f"remote {server.url}: {REGIONS} entries" in done.stdout
    done = subprocess.run([*cli, "clear", *where], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not store.keys(PREFIX + "*")
    done = subprocess.run([*cli, "stats", *where], capture_output=True, text=True)
    assert "0 entries" in done.stdout.splitlines()[0]


@pytest.mark.aoti
def test_aotinductor_regions_travel_between_machines(server, store, tmp_path):
    first = _result(
        _worker({"url": server.url, "local": str(tmp_path / "a"), "backend": "aoti", "workers": 2})
    )
    assert first["stats"]["compiled"] == first["stats"]["distinct"] > 0
    second = _result(_worker({"url": server.url, "local": str(tmp_path / "b"), "backend": "aoti"}))
    assert second["stats"]["compiled"] == 0
    assert second["stats"]["remote_hits"] == second["stats"]["distinct"]
    assert set(second["sources"].values()) == {"remote hit"}
