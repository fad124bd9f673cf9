"""The Kubernetes state lock (trustplan.state.lease) on a fake API server with a fake clock: it works
the way client-go's leader election does, so a skewed clock, either way, cannot take a held lease;
a holder that cannot renew within its deadline (an API server or etcd down longer than a lease) loses
the lock and never writes the state; a release removes only a lease that is still ours. The same on
the real kube-apiserver: tests/kube/test_state_backend.py."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from trustplan.state import Holder, KubernetesStateSpec
from trustplan.state.kubernetes import KubernetesState
from trustplan.state.lease import LeaseLock
from waiting import FakeClock

from trustplan.errors import StateError

SPEC = KubernetesStateSpec(namespace="trustplan", name="state", lease_seconds=15, retry_seconds=0)


class Down(ApiException):
    def __init__(self) -> None:
        super().__init__(status=503, reason="Service Unavailable (etcd is down)")


class FakeAPI:
    """One Lease and one Secret, with resourceVersions and 409s as the API server gives them;
    `down` makes every call fail as an API server without etcd does."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.versions = itertools.count(1)
        self.down = False
        self.secret_writes = 0

    # the KubeAPI protocol
    def core(self) -> FakeAPI:
        return self

    def coordination(self) -> FakeAPI:
        return self

    def describe_error(self, exc: BaseException) -> str:
        return str(exc)

    def _get(self, kind: str) -> Any:
        if self.down:
            raise Down()
        if kind not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[kind])

    def _put(self, kind: str, body: Any, create: bool) -> Any:
        if self.down:
            raise Down()
        current = self.objects.get(kind)
        if create and current is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        if not create and (current is None or body.metadata.resource_version != current.metadata.resource_version):
            raise ApiException(status=409 if current is not None else 404, reason="Conflict")
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(next(self.versions))
        for field in ("renew_time", "acquire_time"):  # the client hands MicroTime strings; reads give datetimes
            value = getattr(body.spec, field, None) if kind == "lease" else None
            if isinstance(value, str):
                setattr(body.spec, field, dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC))
        self.objects[kind] = body
        return copy.deepcopy(body)

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("lease")

    def create_namespaced_lease(self, namespace: str, body: Any, **_: Any) -> Any:
        return self._put("lease", body, create=True)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        return self._put("lease", body, create=False)

    def delete_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        current = self._get("lease")
        if body.preconditions.resource_version != current.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        del self.objects["lease"]

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("secret")

    def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> Any:
        self.secret_writes += 1
        return self._put("secret", body, create=True)

    def replace_namespaced_secret(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        self.secret_writes += 1
        return self._put("secret", body, create=False)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def skewed(seconds: float) -> Any:
    return lambda: utc_now() + dt.timedelta(seconds=seconds)


def held(api: FakeAPI, clock: FakeClock, skew: float = 0) -> tuple[LeaseLock, Holder]:
    """A holder whose wall clock is `skew` seconds off, holding the lease (without its renewal thread:
    the tests renew it as the thread would)."""
    lock = LeaseLock(SPEC, api, clock=clock, wall=skewed(skew), sleep=clock.sleep)
    holder = lock._acquire(Holder.me("apply"), 0)
    lock.holder = holder
    return lock, holder


@pytest.mark.parametrize("holder_skew, taker_skew", [(-120, 0), (0, 120), (120, 0), (0, -120), (-10, 0)],
                         ids=["holder-120s-behind", "taker-120s-ahead", "holder-120s-ahead", "taker-120s-behind",
                              "holder-10s-behind"])
def test_a_held_lease_cannot_be_taken_whatever_the_clocks_say(holder_skew: float, taker_skew: float) -> None:
    """The taker waits two whole leases; the holder renews every 5 s (a third of its lease), each
    renewal with its own skewed wall clock. The lease is never taken."""
    api, clock = FakeAPI(), FakeClock()
    holding, holder = held(api, clock, holder_skew)

    class Renewing(FakeClock):
        def sleep(self, seconds: float) -> None:
            end = clock.now + seconds
            while clock.now < end:
                clock.now = min(end, clock.now + 0.5)
                if clock.now - holding._renewed_at >= 5:
                    assert holding.renew(holder)

    ticks = Renewing()
    taker = LeaseLock(SPEC, api, clock=clock, wall=skewed(taker_skew), sleep=ticks.sleep)
    with pytest.raises(StateError, match=rf"state is locked by .*pid .*lock ID {holder.lock_id}"):
        taker._acquire(Holder.me("apply"), 30)
    assert clock.now >= 30
    holding.check_held()  # still ours


@pytest.mark.parametrize("taker_skew", [-120, 120])
def test_an_abandoned_lease_is_taken_after_one_lease_of_the_takers_own_time(taker_skew: float) -> None:
    api, clock = FakeAPI(), FakeClock()
    _, gone = held(api, clock)  # a holder that stopped renewing (killed)
    taker = LeaseLock(SPEC, api, clock=clock, wall=skewed(taker_skew), sleep=clock.sleep)
    with pytest.raises(StateError, match="state is locked by"):
        taker._acquire(Holder.me("apply"), 0)  # seen once: not yet
    start = clock.now
    mine = taker._acquire(Holder.me("apply"), 30)
    assert 15 <= clock.now - start <= 16.5  # one lease after it first saw the record unchanged
    assert mine.lock_id != gone.lock_id


def test_renewal_failing_past_its_deadline_loses_the_lock_and_no_state_is_written(tmp_path: Path) -> None:
    """etcd (or the API server) down for 25 s, longer than the 15 s lease: the renewals fail, each on its
    own, and 10 s (two thirds of the lease) after the last renewal the lock is lost. The state write that
    follows is refused and kept in a rescue file; the Secret is never written."""
    api, clock = FakeAPI(), FakeClock()
    store = KubernetesState(SPEC, tmp_path, api)
    store._lease = lock = LeaseLock(SPEC, api, clock=clock, sleep=clock.sleep)
    holder = lock._acquire(Holder.me("apply"), 0)
    lock.holder = holder
    doc = store.read("demo")
    api.down = True
    for _ in range(25):  # the renewal thread's attempts, one a second
        clock.now += 1
        if not lock.renew(holder):
            break
    assert lock.lost is not None and "could not be renewed within 10s" in lock.lost
    api.down = False  # back: the write would reach it, but the lock may be another's by now
    doc = dataclasses.replace(doc, serial=1, lineage="lin")
    with pytest.raises(StateError, match=r"the state was not written: the state lock was lost .*saved to"):
        store.write(doc)
    assert api.secret_writes == 0
    assert (tmp_path / "trustplan.state.rescue.1.json").exists()


def test_a_holder_whose_renewals_hang_does_not_write_past_its_deadline(tmp_path: Path) -> None:
    """The renewal thread stuck (no attempt came back): the write itself sees the deadline passed."""
    api, clock = FakeAPI(), FakeClock()
    store = KubernetesState(SPEC, tmp_path, api)
    store._lease = lock = LeaseLock(SPEC, api, clock=clock, sleep=clock.sleep)
    lock.holder = lock._acquire(Holder.me("apply"), 0)
    doc = store.read("demo")
    clock.now += 10.5
    doc = dataclasses.replace(doc, serial=1, lineage="lin")
    with pytest.raises(StateError, match="could not be renewed within 10s"):
        store.write(doc)
    assert api.secret_writes == 0


def test_a_write_within_the_deadline_goes_through() -> None:
    api, clock = FakeAPI(), FakeClock()
    store = KubernetesState(SPEC, Path("/nonexistent"), api)
    store._lease = lock = LeaseLock(SPEC, api, clock=clock, sleep=clock.sleep)
    holder = lock._acquire(Holder.me("apply"), 0)
    lock.holder = holder
    doc = store.read("demo")
    for _ in range(6):  # renewed every 5 s for 30 s: held all along
        clock.now += 5
        assert lock.renew(holder)
    doc = dataclasses.replace(doc, serial=1, lineage="lin")
    store.write(doc)
    assert api.secret_writes == 1


def test_release_removes_only_a_lease_that_is_still_ours() -> None:
    api, clock = FakeAPI(), FakeClock()
    lock, holder = held(api, clock)
    del api.objects["lease"]  # someone else's lease now (force-unlocked, then taken)
    other = LeaseLock(SPEC, api, clock=clock, sleep=clock.sleep)
    theirs = other._acquire(Holder.me("apply"), 0)
    assert not lock.renew(holder) and lock.lost is not None and "now held by" in lock.lost
    lock._release(holder)
    assert api._get("lease").metadata.annotations["trustplan.dev/holder"].count(theirs.lock_id) == 1
    # a stale read of our own lease cannot delete a newer one either (resourceVersion precondition)
    stale = api._get("lease")
    other.renew(theirs)
    with pytest.raises(ApiException, match="Conflict"):
        other._delete_lease(stale)

