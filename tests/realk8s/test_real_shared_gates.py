"""Issue 22 item 3 on real kube-apiservers (the session's story, credstory.py): the gates of the
aggregator CA and the service-account key are answered by every API server and by the nodes'
Talos API, not by the configs alone. After the rotation the same checks pass with the new CA and
key and refuse the removed ones and ones the cluster never accepted, so a skipped gate or a wrong
CA/key fails."""

from __future__ import annotations

import pytest
from credstory import Story

pytestmark = pytest.mark.realk8s


def test_every_phase_asked_every_api_server(story: Story) -> None:
    assert story.apply1 is not None and story.apply2 is not None
    steps = (*story.apply1.steps, *story.apply2.steps)
    api = [s for s in steps if s.kind == "gate" and "(Kubernetes API)" in str(s.detail)]
    assert {(s.pki, s.phase) for s in api} >= {
        (k, p) for k in ("aggregator", "serviceaccount") for p in ("accept", "swap", "remove")
    }
    assert all(s.outcome == "ok" and "on 2 API servers" in str(s.detail) for s in api)


def test_the_api_servers_own_front_proxy_certs_come_from_the_new_ca(story: Story) -> None:
    assert story.apply1 is not None
    own = [s for s in story.apply1.steps if s.kind == "gate" and "own front-proxy client certs" in str(s.detail)]
    assert [s.phase for s in own] == ["swap", "remove"] and all(s.outcome == "ok" for s in own)
    passes = story.after2["passes"]
    assert [k for k in passes if "own front-proxy" in k] and all(v == "" for k, v in passes.items() if "own" in k)
    old = [v for k, v in story.refused.items() if "own front-proxy cert from the old CA" in k]
    assert len(old) == 2 and all("is not issued by old" in v for v in old)


def test_new_ca_and_key_pass_old_and_foreign_are_refused(story: Story) -> None:
    passes = story.after2["passes"]
    assert passes and all(v == "" for v in passes.values()), passes
    assert story.after2["new_ca"] in story.after2["configmap"]
    front = [v for k, v in story.refused.items() if "front-proxy," in k]
    tokens = [v for k, v in story.refused.items() if "token of the" in k]
    assert len(front) == 4 and all("not authenticated" in v for v in front)
    assert len(tokens) == 4 and all("was refused" in v for v in tokens)
