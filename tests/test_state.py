"""Persisted state: atomic writes, the cross-process lock, crash safety."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from hybridnb.core.spec import parse_lab
from hybridnb.errors import StateError
from hybridnb.state import StateStore

NET = parse_lab({"network": {"subnet": "10.50.0.0/16"}}).network


def _allocate_many(state_dir: str, prefix: str, n: int, queue) -> None:
    store = StateStore(state_dir)
    got = [store.allocate("race", f"{prefix}{i}", "host", NET) for i in range(n)]
    queue.put(got)


def test_two_processes_never_share_an_address(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate_many, args=(str(tmp_path), p, 500, queue))
             for p in ("a", "b")]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    every = results[0] + results[1]
    assert len(every) == 1000
    assert len(set(every)) == 1000, "duplicate addresses handed out"
    saved = StateStore(tmp_path).read("race")["addresses"]
    assert len(saved) == 1000 and sorted(saved.values()) == sorted(every)


def _write_forever(state_dir: str) -> None:
    store = StateStore(state_dir)
    i = 0
    while True:
        i += 1
        data = {"version": 1, "lab": "crash", "addresses": {f"n{j}": f"10.0.{j % 250}.{i % 250}"
                                                            for j in range(2000)},
                "resources": {}, "spec": None, "kinds": {}, "counter": i}
        store.write("crash", data)


def test_sigkill_during_writes_leaves_a_readable_file(tmp_path):
    ctx = mp.get_context("fork")
    store = StateStore(tmp_path)
    store.write("crash", {"version": 1, "lab": "crash", "addresses": {}, "resources": {}})
    rng = random.Random(7)
    for _ in range(20):
        p = ctx.Process(target=_write_forever, args=(str(tmp_path),))
        p.start()
        time.sleep(rng.uniform(0.005, 0.08))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        data = store.read("crash")                 # must parse: old or new, never half
        assert data["lab"] == "crash"
    # temp files of killed writers may remain; they never shadow the state
    assert json.loads((tmp_path / "crash.json").read_text())["version"] == 1


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StateError) as info:
        StateStore(tmp_path).read("bad")
    assert "not valid JSON" in info.value.message and info.value.hint


def test_lock_times_out_with_a_clear_error(tmp_path):
    store = StateStore(tmp_path)
    with store.lock("busy"):
        ctx = mp.get_context("fork")
        q = ctx.Queue()

        def try_lock():
            try:
                with StateStore(tmp_path).lock("busy", timeout=0.2):
                    q.put("got it")
            except StateError as exc:
                q.put(exc.message)
        p = ctx.Process(target=try_lock)
        p.start()
        p.join()
        assert "locked by another process" in q.get()


def test_state_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_STATE_DIR", str(tmp_path / "x"))
    assert StateStore().dir == tmp_path / "x"
    monkeypatch.delenv("HYBRIDNB_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert StateStore().dir == tmp_path / "xdg" / "hybridnb"


def test_owners_join_each_spread_labs_share_on_the_same_target(tmp_path):
    """Leftovers are judged against every lab that may own objects on a target: the labs of
    the state directory and each spread lab's record of its share on *that* target only."""
    from hybridnb.state import StateStore, host_store, owners

    here = {"name": "sandbox:x", "netns": "hnb-sbx-x", "docker_url": "unix:///x",
            "libvirt_uri": None}
    there = {**here, "name": "remote:b", "netns": None, "docker_url": "unix:///b"}
    store = StateStore(tmp_path)
    store.write("one", {"version": 1, "lab": "one", "resources": {"bridge/br1": {"status": "created"}}})
    store.write("sp", {"version": 1, "lab": "sp", "hosts": {"a": "sandbox x", "b": "unix:///b"}})
    host_store(tmp_path, "a").write("sp", {"version": 1, "lab": "sp", "target": here,
                                           "resources": {"bridge/brsp": {}, "vxlan/vx": {}}})
    host_store(tmp_path, "b").write("sp", {"version": 1, "lab": "sp", "target": there,
                                           "resources": {"container/c2": {}}})
    host_store(tmp_path, "a").write("gone", {"version": 1, "lab": "gone", "target": here,
                                             "resources": {"bridge/brg": {}}})
    (tmp_path / "hosts" / "a" / "bad.json").write_text("{not json")
    got = owners(store, here)
    assert sorted(got) == ["gone", "one", "sp"]
    assert sorted(got["sp"]["resources"]) == ["bridge/brsp", "vxlan/vx"]
    assert sorted(got["one"]["resources"]) == ["bridge/br1"]
    assert sorted(owners(store, there)["sp"]["resources"]) == ["container/c2"]
    assert "gone" not in owners(store, there)
