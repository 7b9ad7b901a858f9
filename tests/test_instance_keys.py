"""Instance keys: a valid key is remembered for a while, a revoked one never outlives it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import request
from spotrun.auth.instance_keys import InstanceKeys
from spotrun.spec import parse_spec
from spotrun.store import Store


def _attempts(store: Store, name: str, n: int) -> None:
    """A job with ``n`` attempts (keys belong to an attempt)."""
    store.create_job(name, f"arn:{name}", parse_spec(request(name)).to_api(), time.time())
    for _ in range(n):
        att = store.new_attempt(name, time.time(), None, True, 3.0)
        store.update_attempt(name, att.generation, state="ended", ended_at=time.time())


def _counting(keys: InstanceKeys) -> list[str]:
    """Count the key reads that reach the store."""
    reads: list[str] = []
    read = keys.tables.instance_key

    def counted(key_id: str):  # type: ignore[no-untyped-def]
        reads.append(key_id)
        return read(key_id)

    keys.tables.instance_key = counted  # type: ignore[method-assign]
    return reads


def test_a_valid_key_is_read_from_the_store_once_per_cache_period(
    tmp_path: Path, store: Store
) -> None:
    _attempts(store, "job-a", 1)
    keys = InstanceKeys(store, tmp_path, cache_seconds=0.3)
    key_id, secret = keys.mint("job-a", 1, ["algo-1"])["algo-1"]
    reads = _counting(keys)
    for _ in range(5):
        cred = keys.check(key_id)
        assert cred is not None and cred.secret == secret
    assert reads == [key_id]
    time.sleep(0.35)
    assert keys.check(key_id) is not None
    assert reads == [key_id, key_id]
    # made-up ids are never remembered: each costs a read, and none grows the cache
    for _ in range(3):
        assert keys.check("SPAG" + "X" * (len(key_id) - 4)) is None
    assert len(reads) == 5


def test_revoking_refuses_at_once_here_and_within_the_cache_period_elsewhere(
    tmp_path: Path, store: Store
) -> None:
    _attempts(store, "job-b", 3)
    here = InstanceKeys(store, tmp_path, cache_seconds=0.5)
    elsewhere = InstanceKeys(store, tmp_path, cache_seconds=0.5)  # another server's ring
    made = here.mint("job-b", 2, ["algo-1", "algo-2"])
    other = here.mint("job-b", 3, ["algo-1"])["algo-1"][0]
    for key_id, _ in made.values():
        assert here.check(key_id) is not None and elsewhere.check(key_id) is not None
    assert here.check(other) is not None
    here.revoke("job-b", 2)
    for key_id, _ in made.values():
        assert here.check(key_id) is None
    assert here.check(other) is not None  # another attempt's key is untouched
    time.sleep(0.55)
    for key_id, _ in made.values():
        assert elsewhere.check(key_id) is None


@pytest.mark.parametrize("cache_seconds", [0.0])
def test_without_a_cache_every_check_reads_the_store(
    tmp_path: Path, store: Store, cache_seconds: float
) -> None:
    _attempts(store, "job-c", 1)
    keys = InstanceKeys(store, tmp_path, cache_seconds=cache_seconds)
    key_id, _ = keys.mint("job-c", 1, ["algo-1"])["algo-1"]
    reads = _counting(keys)
    keys.check(key_id)
    keys.check(key_id)
    assert reads == [key_id, key_id]
