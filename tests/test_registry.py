"""The process's registry of loaded networks and probes: made once per key, made again on a new version,
forgotten with its owner, trimmed to `keep`, and cleared for tests."""

import gc
import threading
import time

from dfer_cli.runtime import registry


class _Owner:
    pass


def test_an_object_is_made_once_per_key_and_again_after_clear():
    made = []
    first = registry.get("thing", "a", lambda: made.append("a") or object())
    assert registry.get("thing", "a", lambda: made.append("again") or object()) is first
    registry.get("thing", "b", lambda: made.append("b") or object())
    assert made == ["a", "b"] and sorted(registry.held("thing")) == ["a", "b"]
    registry.clear()
    assert registry.held("thing") == [] and registry.get("thing", "a", object) is not first


def test_a_new_version_makes_it_again():
    one = registry.get("versioned", None, object, version=1)
    assert registry.get("versioned", None, object, version=1) is one
    assert registry.get("versioned", None, object, version=2) is not one


def test_an_owned_object_goes_with_its_owner():
    owner = _Owner()
    registry.get("owned", None, object, owner=owner)
    assert registry.held("owned") == [None]
    del owner
    gc.collect()
    assert registry.held("owned") == []


def test_keep_lets_the_least_recently_used_go():
    for key in ("a", "b", "c"):
        registry.get("few", key, object, keep=2)
    assert registry.held("few") == ["b", "c"]
    registry.get("few", "b", object, keep=2)  # used: now the most recent
    registry.get("few", "d", object, keep=2)
    assert registry.held("few") == ["b", "d"]


def test_cached_functions_and_drop():
    calls = []

    @registry.cached("squares")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9 and calls == [3]
    registry.drop("squares", ((3,), ()))
    assert square(3) == 9 and calls == [3, 3]


def test_a_second_caller_waits_for_the_first_to_make_it():
    made, results = [], []

    def slow():
        made.append(1)
        time.sleep(0.2)
        return object()

    threads = [threading.Thread(target=lambda: results.append(registry.get("slow", None, slow))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(made) == 1 and len(results) == 3 and all(r is results[0] for r in results)
