"""A writer against the simulated control planes (`--k8s real`)' real etcd members, as their kube-apiservers write:
to each member with the client certificate Talos gives that node's kube-apiserver right now (the files
of the node's etcd PKI, read at every attempt: they change with the node's config), trying the next
member when one fails. It records every acknowledged write and the longest interval in which no
write succeeded anywhere (the unavailability window)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trustplan_sim.etcd import EtcdMember


def _context(member: EtcdMember) -> ssl.SSLContext:
    p = member.pki_path
    ctx = ssl.create_default_context(cafile=str(p("ca.crt")))
    ctx.load_cert_chain(p("apiserver-client.crt"), p("apiserver-client.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def call(member: EtcdMember, path: str, body: dict[str, object], timeout: float = 2.0) -> dict[str, object]:
    """POST to the member's JSON gateway with its node's kube-apiserver client certificate."""
    conn = http.client.HTTPSConnection(member.address, 2379, context=_context(member), timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}: {data[:120]!r}")
    answer: dict[str, object] = json.loads(data)
    return answer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Writer:
    members: Callable[[], list[EtcdMember]]
    acked: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    failures: int = 0
    longest_failed_window_s: float = 0.0
    longest_ack_gap_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        n, first_failure, last_ack = 0, None, time.monotonic()
        while not self._stop.is_set():
            key, value = f"/trustplan-writer/{n:08d}", f"v{n}"
            members = self.members()
            self.attempts += 1
            ok = False
            for k in range(len(members)):
                try:
                    call(members[(n + k) % len(members)], "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
                    ok = True
                    break
                except (OSError, ValueError):
                    continue
            now = time.monotonic()
            if ok:
                self.acked[key] = value
                self.longest_ack_gap_s = max(self.longest_ack_gap_s, now - last_ack)
                last_ack = now
                if first_failure is not None:
                    self.longest_failed_window_s = max(self.longest_failed_window_s, now - first_failure)
                    first_failure = None
                n += 1
                time.sleep(0.01)
            else:
                self.failures += 1
                first_failure = first_failure if first_failure is not None else now
                time.sleep(0.05)
        if first_failure is not None:
            self.longest_failed_window_s = max(self.longest_failed_window_s, time.monotonic() - first_failure)

    def lost(self, member: EtcdMember) -> list[str]:
        """Acknowledged keys `member` does not return with their value (a linearizable range read)."""
        prefix = "/trustplan-writer/"
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        answer = call(member, "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)}, timeout=30)
        kvs = answer.get("kvs") or []
        assert isinstance(kvs, list)
        stored = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode() for kv in kvs}
        return sorted(k for k, v in self.acked.items() if stored.get(k) != v)


__all__ = ["Writer", "call"]
