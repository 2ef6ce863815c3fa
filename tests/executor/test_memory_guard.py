"""The memory guard with forked `def main` workers: each process counted once, by what it costs.

Before: the zygote's tree was counted with its workers inside it and each worker again on its
own, copy-on-write pages once per worker; with ACTIONPROXY_MEMORY_LIMIT at 90% of 256 MiB, 16
concurrent trivial runs lost about 4 per burst, and the zygote was the process killed. Real
proxies, real forks; the action carries 48 MiB of ballast loaded before the fork, so resident
sizes add up to far over the limit while the memory really used stays under it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import Proxy

LIMIT = str(241172480)  # 90% of a 256 MiB container
EXHAUSTED = "The action exhausted its memory and was aborted."
BALLASTED = """
import os, time
BALLAST = b"x" * (48 << 20)  # resident in the zygote, shared with every worker it forks

def main(args):
    grown = b"y" * args.get("grow", 0)  # the worker's own memory
    time.sleep(args.get("sleep", 1))
    return {"pid": os.getpid(), "zygote": os.getppid(), "grown": len(grown)}
"""


def burst(proxy: Proxy, payloads: list[dict]) -> list[tuple[int, dict]]:
    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(lambda payload: proxy.run(payload, timeout=60), payloads))


def test_shared_pages_of_forked_workers_count_once(start_proxy) -> None:
    """Three bursts of 16 concurrent 1 s runs on 16 workers: every run answers, nothing is
    killed, and every worker comes from the same zygote."""
    proxy = start_proxy(env={"ACTIONPROXY_MEMORY_LIMIT": LIMIT, "ACTIONPROXY_MAX_WORKERS": "16"})
    assert proxy.init(BALLASTED) == (200, {"ok": True})
    zygotes = set()
    for _ in range(3):
        results = burst(proxy, [{}] * 16)
        assert [status for status, _ in results] == [200] * 16, results
        zygotes |= {body["zygote"] for _, body in results}
    assert len(zygotes) == 1, zygotes
    _, err = proxy.streams()
    assert "over the limit" not in err, err


def test_the_worker_that_grew_is_killed_not_the_zygote(start_proxy) -> None:
    """One worker takes 300 MiB while 8 others sleep: it alone fails with the out-of-memory
    message; the others answer, and the zygote that forked them all still forks the next."""
    proxy = start_proxy(env={"ACTIONPROXY_MEMORY_LIMIT": LIMIT, "ACTIONPROXY_MAX_WORKERS": "16"})
    assert proxy.init(BALLASTED) == (200, {"ok": True})
    results = burst(proxy, [{"grow": 300 << 20, "sleep": 5}] + [{"sleep": 3}] * 8)
    assert results[0] == (502, {"error": EXHAUSTED})
    assert [status for status, _ in results[1:]] == [200] * 8, results
    zygotes = {body["zygote"] for _, body in results[1:]}
    status, after = proxy.run({"sleep": 0})
    assert status == 200 and zygotes == {after["zygote"]}
    _, err = proxy.streams()
    assert err.count("over the limit") == 1, err
