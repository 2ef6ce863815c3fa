"""10,000 in flight: 10,000 concurrent /run activations that each wait 1 s in the action.

One fresh proxy per runtime (an async action: bench/actions/wait_async.py for python,
wait.js for nodejs; a runtime the proxy cannot serve yet is reported as not available), pinned
to the server CPU like every other point, with ACTIONPROXY_MAX_CONCURRENT raised to 20,000;
and, as the reference that is not judged, the bare aiohttp + uvloop server sleeping 1 s
in-process. The client is this process on the client CPU: uvloop and a bare asyncio.Protocol
per request, one connection per request (`Connection: close`), each request with its own
value {"i": n} and its own activation_id; an answer counts only if it is a 200 whose body is
exactly {"id": n}. Reported per server:

* wall: from the first connect sent to the last response received;
* peak RSS: the sum over the server's process tree (proxy, launcher, any workers), sampled
  every 50 ms with psutil on a thread from just before the first connect to the last answer;
* errors, latency percentiles, peak in flight (sent and not yet answered, at one time), and
  the CPU seconds the server and the client used, which show which side was the limit.

How the connects are paced: the proxy listens with a backlog of 1024, and a connect that
finds the accept queue full loses its SYN and waits >= 1 s for the retransmit, which would
distort the wall time. So the client reads the listener's accept-queue depth from
/proc/net/tcp (rx_queue of the LISTEN line) before each wave and opens only as many new
connections as keep (queued + handshakes not yet complete) <= WINDOW (768): the proxy always
has connections waiting, but the queue never overflows. The kernel's ListenOverflows and
ListenDrops counters over the run are recorded to show it (they are machine-wide).

Both processes need ~1 descriptor per connection: RLIMIT_NOFILE is raised here (to 65,536,
or to the hard limit without the privilege to go above it) before the servers start, and each
server inherits it.

Each server runs `rounds` times (fresh each time, servers taking turns); its record is the
median-wall round, with every round's wall, peak RSS and errors beside it, and how much of the
server CPU's busy time was not the server's (other processes, interrupts: a shared machine).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil
import uvloop

from servers import BENCH, HOST, Server

N = 10_000
WAIT_S = 1.0
MAX_CONCURRENT = 20_000
NOFILE = 65_536
WINDOW = 768  # connections allowed in the accept queue (backlog 1024) or mid-handshake at once
SAMPLE_S = 0.05
TIMEOUT_S = 60.0
TARGET_WALL_S, TARGET_RSS_MB = 3.49, 257  # OpenWhisk's Node.js runtime, concurrency on, this machine
RUNTIMES = {"python": BENCH / "actions" / "wait_async.py", "nodejs": BENCH / "actions" / "wait.js"}
# "bare" is the reference, not judged: aiohttp + uvloop sleeping in-process, no proxy or launcher
SERVERS = ("bare", *RUNTIMES)
MiB = 1024 * 1024


def raise_nofile(want: int = NOFILE) -> int:
    """Raise this process's descriptor limit (servers started later inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    unlimited = hard == resource.RLIM_INFINITY
    try:  # above the hard limit only with CAP_SYS_RESOURCE (root)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard if unlimited or hard >= want else want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the most allowed
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listener on 127.0.0.1:port. /proc/net/tcp
    lists listening sockets first, so this reads only the first lines however many are open."""
    suffix = f":{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split(None, 5)
            if fields[3] != "0A":
                break
            if fields[1] == f"0100007F{suffix}":
                return int(fields[4].split(":")[1], 16)
    raise RuntimeError(f"no listener for 127.0.0.1:{port} in /proc/net/tcp")


def tcp_counters() -> dict[str, int]:
    """TcpExt ListenOverflows and ListenDrops from /proc/net/netstat."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split(), values.split()))
            return {"listen_overflows": int(table["ListenOverflows"]), "listen_drops": int(table["ListenDrops"])}
    return {"listen_overflows": 0, "listen_drops": 0}


def cpu_busy(cpus: tuple[int, ...]) -> list[float]:
    """Seconds each CPU has spent not idle since boot, from /proc/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = list(map(int, fields))
            busy[int(name[3:])] = (sum(values[:8]) - values[3] - values[4]) / ticks  # minus idle, iowait
    return [busy[cpu] for cpu in cpus]


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(RSS summed over the process and all its descendants, number of processes)."""
    total = count = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
            count += 1
        except psutil.NoSuchProcess:
            pass
    return total, count


def requests(port: int, n: int) -> list[bytes]:
    """One /run request per activation, built before the clock starts."""
    deadline = str(int(time.time() * 1000) + 3_600_000)
    head = (f"POST /run HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            "Connection: close\r\nContent-Length: ")
    out = []
    for i in range(n):
        body = orjson.dumps({"value": {"i": i}, "namespace": "guest", "action_name": "wait",
                             "activation_id": f"{i:032x}", "deadline": deadline})
        out.append(f"{head}{len(body)}\r\n\r\n".encode() + body)
    return out


class Call(asyncio.Protocol):
    """One request on one connection: write on connect, read one response, close."""

    def __init__(self, request: bytes, done: asyncio.Future) -> None:
        self.request = request
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.length = -1  # body length once the head is in
        self.head_end = -1

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = end + 4
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
        if self.length >= 0 and len(self.buffer) >= self.head_end + self.length:
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            end = self.head_end + self.length if self.length >= 0 else len(self.buffer)
            self.done.set_result((time.perf_counter(), int(self.buffer[9:12]),
                                  bytes(self.buffer[self.head_end:end])))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.head_end >= 0 and self.length < 0:  # no Content-Length: the body ends at EOF
            self._finish()
        else:
            self.done.set_exception(exc or ConnectionError("closed before a full response"))


class Client:
    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.requests = requests(port, n)
        self.sent = [0.0] * n
        self.answered = [0.0] * n
        self.errors: Counter[str] = Counter()
        self.connecting = 0  # connects started whose handshake has not completed yet
        self.max_queue = 0
        self.waves = 0

    async def call(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.sent[i] = time.perf_counter()
        try:  # fire() counted this connect as under way
            await loop.create_connection(lambda: Call(self.requests[i], done), HOST, self.port)
        except OSError as exc:
            self.errors[f"connect: {type(exc).__name__}"] += 1
            return
        finally:
            self.connecting -= 1
        try:
            self.answered[i], status, body = await done
        except OSError as exc:
            self.errors[f"read: {type(exc).__name__}"] += 1
            return
        if status != 200:
            self.errors[f"HTTP {status}"] += 1
            return
        try:
            if orjson.loads(body) == {"id": i}:
                return
        except orjson.JSONDecodeError:
            pass
        self.errors["wrong body"] += 1

    async def fire(self) -> list[asyncio.Task]:
        """Open the N connections in waves that keep the accept queue from overflowing."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task] = []
        while len(tasks) < self.n:
            queued = accept_queue(self.port)
            self.max_queue = max(self.max_queue, queued)
            room = min(WINDOW - queued - self.connecting, self.n - len(tasks))
            if room <= 0:
                await asyncio.sleep(0.0005)
                continue
            self.waves += 1
            for i in range(len(tasks), len(tasks) + room):
                tasks.append(loop.create_task(self.call(i)))
            self.connecting += room  # until each handshake completes or fails, in call()
            await asyncio.sleep(0)
        return tasks


def _sample(root: psutil.Process, samples: list[tuple[float, int, int]], stop: threading.Event) -> None:
    """On a thread of its own, so that the client's busy loop does not stretch the interval."""
    while True:
        rss, count = tree_rss(root)
        samples.append((time.perf_counter(), rss, count))
        if stop.wait(SAMPLE_S):
            break
    rss, count = tree_rss(root)
    samples.append((time.perf_counter(), rss, count))


def _peak_in_flight(sent: list[float], answered: list[float]) -> int:
    """Most requests sent and not yet answered at one time (the client's view: an upper bound
    on the activations the action had in flight at once)."""
    events = sorted([(t, 1) for t in sent if t] + [(t, -1) for t in answered if t])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def _run(server: Server, n: int, cpus: tuple[int, int]) -> dict:
    client = Client(server.port, n)
    root = psutil.Process(server.process.pid)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(root, samples, stop), daemon=True)
    sampler.start()
    await asyncio.sleep(SAMPLE_S * 1.5)  # an idle sample or two first
    counters = tcp_counters()
    cpu_before, client_before, busy_before = server.cpu_seconds(), time.process_time(), cpu_busy(cpus)
    started = time.perf_counter()
    tasks = await client.fire()
    ramp = time.perf_counter() - started
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, TIMEOUT_S - ramp))
    for task in pending:
        task.cancel()
    if pending:
        client.errors["no answer in time"] += len(pending)
        await asyncio.wait(pending)
    finished = time.perf_counter()
    cpu_after, client_after, busy_after = server.cpu_seconds(), time.process_time(), cpu_busy(cpus)
    counters = {name: value - counters[name] for name, value in tcp_counters().items()}
    stop.set()
    sampler.join()

    t0 = min(t for t in client.sent if t)
    answered = sorted(t - t0 for t in client.answered if t)
    latencies = sorted(a - s for s, a in zip(client.sent, client.answered) if a)
    during = [rss for t, rss, _ in samples if started <= t <= finished] or [samples[-1][1]]
    idle = [rss for t, rss, _ in samples if t < started]
    gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    errors = sum(client.errors.values())
    return {
        "available": True,
        "requests": n,
        "ok": n - errors,
        "errors": errors,
        "error_kinds": dict(client.errors),
        "wall_s": round((max(client.answered) if answered else finished) - t0, 3),
        "connect_ramp_s": round(max(client.sent) - t0, 3),
        "connect_waves": client.waves,
        "peak_in_flight": _peak_in_flight(client.sent, client.answered),
        "max_accept_queue": client.max_queue,
        **counters,
        "latency_ms": ({"p50": round(statistics.median(latencies) * 1e3, 1),
                        "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1e3, 1),
                        "min": round(latencies[0] * 1e3, 1), "max": round(latencies[-1] * 1e3, 1)}
                       if latencies else {}),
        "peak_rss_mb": round(max(during) / MiB, 1),
        "idle_rss_mb": round(min(idle) / MiB, 1) if idle else None,
        "processes": max(count for _, _, count in samples),
        "rss_samples": len(samples),
        "max_sample_gap_ms": round(max(gaps) * 1e3, 1) if gaps else None,
        "server_cpu_s": {part: round(cpu_after[part] - cpu_before[part], 3) for part in cpu_after},
        "client_cpu_s": round(client_after - client_before, 3),
        # each CPU's busy time over the run, and what of the server CPU's was not the server's
        # (other processes, interrupts): the noise on a shared machine
        "cpu_busy_s": {"server": round(busy_after[0] - busy_before[0], 2),
                       "client": round(busy_after[1] - busy_before[1], 2),
                       "other_on_server_cpu": round(max(0.0, busy_after[0] - busy_before[0] - sum(
                           cpu_after[part] - cpu_before[part] for part in cpu_after)), 2)},
        # for the chart: share of connects sent / answers received by time (s from the first
        # connect) at each percent, and the RSS sum over time
        "sent_curve": _percentiles(sorted(s - t0 for s in client.sent if s), n),
        "answered_curve": _percentiles(answered, n),
        "rss_timeline": [[round(t - t0, 3), round(rss / MiB, 1)] for t, rss, _ in samples],
    }


def _percentiles(values: list[float], n: int) -> list[float]:
    """From sorted times: when 1 %, 2 %, ... of the n requests had got there (as far as they did)."""
    return [round(values[p * n // 100 - 1], 4) for p in range(1, 101) if p * n // 100 <= len(values)]


def _start(name: str, cpu: int) -> Server | dict:
    """A ready server, or why there is none ({"available": False, "reason": ...})."""
    if name == "bare":
        server = Server("bare", cpu, options=("--wait", str(WAIT_S)))
    else:
        server = Server("proxy", cpu, RUNTIMES[name], runtime=name,
                        env={"ACTIONPROXY_MAX_CONCURRENT": str(MAX_CONCURRENT)})
    try:
        server.wait_ready(timeout=30)
    except (RuntimeError, TimeoutError, OSError) as exc:
        stderr = server.stderr_tail()
        server.stop()
        tail = [line for line in stderr.splitlines() if line.strip() and "_OF_A_WHISK_ACTIVATION_" not in line]
        reason = str(exc).replace(stderr, "").strip()[:200] + (f" ({tail[-1].strip()})" if tail else "")
        if "invalid choice" in reason:
            reason = f"`actionproxy serve --runtime {name}` is not available yet ({reason.strip()})"
        return {"available": False, "reason": reason[:300]}
    return server


def _once(server: Server, n: int, cpus: tuple[int, int]) -> dict:
    gc.collect()
    gc.disable()  # no collector pauses in the client while 10,000 calls are open
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_run(server, n, cpus))
    finally:
        gc.enable()
    if result["errors"]:
        result["server_stderr_tail"] = server.stderr_tail(1000)
    return result


def measure(cpu: int, client_cpu: int, rounds: int = 3, names: tuple[str, ...] = SERVERS, n: int = N) -> dict:
    """The scenario `rounds` times for bare and each runtime in turn, each time on a fresh
    server. Each server's record is its median-wall round, with every round's wall, peak RSS
    and errors beside it. A runtime that cannot start is reported as not available instead of
    failing the run."""
    nofile = raise_nofile()
    if nofile < n + 1000:
        raise SystemExit(f"bench: RLIMIT_NOFILE is {nofile}; {n} connections in flight need more")
    results: dict = {"settings": {"requests": n, "wait_s": WAIT_S, "max_concurrent": MAX_CONCURRENT,
                                  "nofile": nofile, "window": WINDOW, "sample_ms": SAMPLE_S * 1e3,
                                  "rounds": rounds, "target_wall_s": TARGET_WALL_S,
                                  "target_rss_mb": TARGET_RSS_MB},
                     "servers": {}}
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(1, rounds + 1):
        for name in names:
            if name in results["servers"]:  # not available
                continue
            started = _start(name, cpu)
            if isinstance(started, dict):
                results["servers"][name] = started
                print(f"  {name:<8} not available: {started['reason']}", flush=True)
                continue
            try:
                result = _once(started, n, (cpu, client_cpu))
            finally:
                started.stop()
            runs[name].append(result)
            busy = result["cpu_busy_s"]
            print(f"  round {round_} {name:<8} wall {result['wall_s']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"errors {result['errors']} {result['error_kinds'] or ''}(connects over "
                  f"{result['connect_ramp_s']:.2f} s, listen overflows {result['listen_overflows']}, "
                  f"server CPU busy {busy['server']:.2f} s, other load there {busy['other_on_server_cpu']:.2f} s)",
                  flush=True)
    for name, done in runs.items():
        if name in results["servers"]:
            continue
        median = sorted(done, key=lambda r: r["wall_s"])[(len(done) - 1) // 2]
        results["servers"][name] = median | {"rounds": {
            "wall_s": [r["wall_s"] for r in done], "peak_rss_mb": [r["peak_rss_mb"] for r in done],
            "errors": [r["errors"] for r in done]}}
    return results
