"""The blackbox runtime: the dockerskeleton's rules (spec b.9, cases f.6), in parallel.

Every test drives a real `actionproxy serve --runtime blackbox` over real HTTP and real
`exec` processes. Concurrency is proven by data (filesystem barriers: each exec marks its
arrival in a folder and waits until all have arrived, with a 30 s cap that answers an error
instead), process cleanup by polling for the pids to be gone (with a cap), never by timing.

Stream checks look only at what was written after a mark (`Mark`), so that the blocks of a
test's own earlier runs (its set-up) do not count.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import BASH_WAIT_FOR, SENTINEL, Proxy, process_gone, wait_until, zip_b64

TARGETS = ("host", "container")  # every test runs against a host proxy and the runtime image

NOT_A_DICT = "The action did not return a dictionary or array."
BAD_ARGUMENT = "The action did not receive a dictionary or array as an argument."
COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."
REINIT = "Cannot initialize the action more than once."
STUB_ERROR = "This is a stub action. Replace it with custom logic."
COMMAND_EXITED = "command exited"
MAX_ARG = 131071  # the longest JSON of `value` passed as $1
MODE = "ACTIONPROXY_BLACKBOX_MODE"

# f.6.70: the skeleton's example zip: one log line, then the result.
ZIP_EXEC = """#!/bin/bash
echo "This is an example zip used with the docker skeleton action."
echo '{ "msg": "hello zip" }'
"""

# f.6.71: where it runs, and a file of its own zip read by a relative path.
WHERE_EXEC = """#!/bin/bash
echo "{\\"PWD\\": \\"$PWD\\", \\"pwd\\": \\"$(pwd)\\", \\"data\\": \\"$(cat data/hello.txt)\\"}"
"""

# $1 (absent past MAX_ARG), stdin and the last line echoed back as the result.
ARGS_EXEC = """#!/bin/bash
stdin=$(cat)
echo "argc $#"
printf '{"argc": %d, "stdin_bytes": %d, "arg_is_stdin": %s, "arg": %s}\\n' \\
  $# ${#stdin} "$([[ $# -eq 1 && $1 == "$stdin" ]] && echo true || echo false)" "${1:-null}"
"""

# f.6.73 in its original form: the input, whatever its shape, is the result.
ECHO_EXEC = """#!/bin/bash
echo "$1"
"""

# Filesystem barrier for one-shot processes: `$1` is {"dir":..,"n":..,"i":..}.
BARRIER_EXEC = "#!/bin/bash" + BASH_WAIT_FOR + r"""
[[ $1 =~ \"dir\":\"([^\"]+)\" ]] && dir=${BASH_REMATCH[1]}
[[ $1 =~ \"n\":([0-9]+) ]] && n=${BASH_REMATCH[1]}
[[ $1 =~ \"i\":([0-9]+) ]] && i=${BASH_REMATCH[1]}
touch "$dir/$i"
wait_for "$dir" '*' "$n"
echo "log $i"
echo "{\"i\":$i,\"seen\":$seen,\"pid\":$$}"
"""

# At most ACTIONPROXY_MAX_WORKERS at once: `alive.<i>` exists while an exec runs; each
# counts the living at arrival; the first `n` wait until `n` have arrived.
BOUNDED_EXEC = "#!/bin/bash" + BASH_WAIT_FOR + r"""
[[ $1 =~ \"dir\":\"([^\"]+)\" ]] && dir=${BASH_REMATCH[1]}
[[ $1 =~ \"n\":([0-9]+) ]] && n=${BASH_REMATCH[1]}
[[ $1 =~ \"i\":([0-9]+) ]] && i=${BASH_REMATCH[1]}
touch "$dir/alive.$i"
alive=("$dir"/alive.*)  # counted before arriving: nobody leaves until all have arrived
touch "$dir/arrived.$i"
wait_for "$dir" 'arrived.*' "$n"
rm "$dir/alive.$i"
echo "{\"i\":$i,\"alive\":${#alive[@]},\"arrived\":$seen}"
"""

CONTEXT_EXEC = """#!/bin/bash
sleep 0.0$((RANDOM % 5))
echo "{\\"id\\": \\"$__OW_ACTIVATION_ID\\", \\"key\\": \\"${__OW_API_KEY-unset}\\", \\"deadline\\": \\"$__OW_DEADLINE\\", \\"greeting\\": \\"$GREETING\\"}"
"""

# 100-byte lines (99 + newline), as many as asked, then the result.
CHATTY_EXEC = r"""#!/bin/bash
[[ $1 =~ \"lines\":([0-9]+) ]] && lines=${BASH_REMATCH[1]}
yes "$(printf '%099d' 7)" | head -n "$lines"
echo "{\"lines\":$lines}"
"""

# A background child (same process group) and a long foreground sleep, pids in files;
# {"quick":...} answers at once.
STUCK_EXEC = r"""#!/bin/bash
[[ $1 =~ \"dir\":\"([^\"]+)\" ]] && dir=${BASH_REMATCH[1]}
if [[ $1 == *quick* ]]; then echo '{"quick":true}'; exit 0; fi
sleep 300 &
echo $! > "$dir/child.pid"
echo $$ > "$dir/exec.pid"
if [[ $1 == *leave* ]]; then echo '{"left":true}'; exit 0; fi
sleep 300
echo '{"error":"was not killed at its deadline"}'
"""

# A v1 action loop with warm state: `count` lives as long as the process. Also a barrier
# ({"dir","n"}) and a crash on demand. `|| [[ -n $line ]]` reads a last line without a
# newline, which is how one-shot mode hands the value over on stdin.
LOOP_EXEC = "#!/bin/bash" + BASH_WAIT_FOR + r"""
count=0
while read -r line || [[ -n $line ]]; do
  count=$((count + 1))
  echo "call $count pid $$"
  id=none
  [[ $line =~ \"id\":\ *\"([A-Za-z0-9_-]+)\" ]] && id=${BASH_REMATCH[1]}
  if [[ $line =~ \"crash\":\ *true ]]; then kill -9 $$; fi
  seen=0
  if [[ $line =~ \"dir\":\ *\"([^\"]+)\" ]]; then
    dir=${BASH_REMATCH[1]}
    [[ $line =~ \"n\":\ *([0-9]+) ]] && n=${BASH_REMATCH[1]}
    touch "$dir/$id"
    wait_for "$dir" '*' "$n"
  fi
  echo "{\"count\":$count,\"pid\":$$,\"id\":\"$id\",\"seen\":$seen}" >&3
  line=
done
"""


# ---------------------------------------------------------------- helpers

class Mark:
    """The proxy's streams from now on, once `sentinels` earlier blocks are written."""

    def __init__(self, proxy: Proxy, sentinels: int = 0) -> None:
        self.proxy = proxy
        wait_until(lambda: all(s.count(SENTINEL) >= sentinels for s in proxy.streams(settle=0)),
                   "the earlier log blocks")
        self.out_at, self.err_at = (len(s) for s in proxy.streams())

    def streams(self) -> tuple[str, str]:
        out, err = self.proxy.streams()
        return out[self.out_at:], err[self.err_at:]

    def check(self, sentinels: int = 1) -> tuple[str, str]:
        """Like Proxy.check_streams, for what came after the mark."""
        out, err = self.streams()
        assert out.count(SENTINEL) == sentinels, out
        assert err.count(SENTINEL) == sentinels, err
        return out.replace(SENTINEL, "").strip(), err.replace(SENTINEL, "").strip()






def deadline_in(ms: int) -> str:
    return str(int(time.time() * 1000) + ms)


def empty_dir(tmp_path: Path) -> str:
    folder = tmp_path / f"barrier-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return str(folder)


def blackbox(start_proxy, env: dict[str, str] | None = None) -> Proxy:
    return start_proxy(runtime="blackbox", env=env)


def started(proxy: Proxy, code: str, env: dict | None = None) -> Proxy:
    assert proxy.init(code, env=env) == (200, {"ok": True})
    return proxy


def run_threaded(proxy: Proxy, payloads: list[dict], timeout: float = 60) -> list[tuple[int, Any]]:
    """POST every payload to /run at once from its own thread; results in payload order."""
    with ThreadPoolExecutor(len(payloads)) as pool:
        futures = [pool.submit(proxy.post, "/run", p, timeout) for p in payloads]
        return [(status, parsed) for status, parsed, _ in (f.result() for f in futures)]


def blocks(stream: str) -> list[str]:
    parts = stream.split(SENTINEL + "\n")
    assert parts[-1] == "", f"output after the last sentinel: {parts[-1][:200]!r}"
    return parts[:-1]


# ---------------------------------------------------------------- f.6: the stub and init rules

def test_65_run_without_init_runs_the_stub(start_proxy) -> None:
    """f.6.65: /run before any /init runs the stub exec: 200, its error object, its explanation on stdout."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    assert proxy.run({}) == (200, {"error": STUB_ERROR})
    out, err = mark.check()
    assert "This is a stub action" in out
    assert err == ""


@pytest.mark.parametrize("init", [{"code": None}, {}], ids=["66-null-code", "67-empty"])
def test_66_67_init_without_code_keeps_the_stub(start_proxy, init: dict) -> None:
    """f.6.66/67: /init with code null, or `{}`, answers 200 and /run still runs the stub; a second /init is refused."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    status, body, _ = proxy.post("/init", {"value": init} if init else {})
    assert (status, body) == (200, {"ok": True})
    assert proxy.run({}) == (200, {"error": STUB_ERROR})
    out, _ = mark.check()
    assert "This is a stub action" in out
    assert proxy.init(ZIP_EXEC) == (403, {"error": REINIT})
    assert proxy.run({}) == (200, {"error": STUB_ERROR})


def test_68_bad_run_argument_is_404_with_empty_logs(start_proxy) -> None:
    """f.6.68: run {"value":"A"} answers 404; the streams get nothing but one sentinel each."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    status, body, _ = proxy.post("/run", {"value": "A"})
    assert (status, body) == (404, {"error": BAD_ARGUMENT})
    assert mark.check() == ("", "")


def test_70_zip_with_exec_at_its_root(start_proxy) -> None:
    """f.6.70: a zip with `exec` at its root (binary, no main) runs; its stdout lines are logs, stderr is empty."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    status, body, _ = proxy.post("/init", {"value": {"code": zip_b64({"exec": ZIP_EXEC}, {"exec": 0o755}),
                                                     "binary": True}})
    assert (status, body) == (200, {"ok": True})
    assert proxy.run({"msg": "hello zip"}) == (200, {"msg": "hello zip"})
    assert mark.check() == ("This is an example zip used with the docker skeleton action.", "")


def test_70_zip_exec_without_mode_bits_runs(start_proxy) -> None:
    """A zip whose `exec` has no execute bit (Python's extractall drops them in the skeleton) still runs."""
    proxy = blackbox(start_proxy)
    assert proxy.init(zip_b64({"exec": ZIP_EXEC}, {"exec": 0o644}), binary=True) == (200, {"ok": True})
    assert proxy.run({}) == (200, {"msg": "hello zip"})


@pytest.mark.host_only("asserts that the exec runs in the host folder passed as ACTIONPROXY_ACTION_DIR (a container has its own /tmp/actions)")
def test_71_working_directory_is_the_action_folder(start_proxy, tmp_path: Path) -> None:
    """f.6.71: $PWD and `pwd` agree, are the folder the code was written to (the skeleton's /action), and files of the zip are readable by relative path."""
    action_dir = tmp_path / "actions"
    proxy = blackbox(start_proxy, env={"ACTIONPROXY_ACTION_DIR": str(action_dir)})
    code = zip_b64({"exec": WHERE_EXEC, "data/hello.txt": "from the zip"}, {"exec": 0o755})
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    status, body = proxy.run({})
    assert status == 200, body
    assert body["PWD"] == body["pwd"], body
    folder = Path(body["pwd"])
    assert folder.parent.resolve() == action_dir.resolve(), body
    assert (folder / "exec").read_text() == WHERE_EXEC
    assert body["data"] == "from the zip"


def test_72_array_result(start_proxy) -> None:
    """f.6.72: an exec whose last line is a JSON array returns it."""
    proxy = started(blackbox(start_proxy), '#!/bin/bash\necho "not the result"\necho \'["a", "b", {"c": 1}]\'\n')
    mark = Mark(proxy)
    assert proxy.run({}) == (200, ["a", "b", {"c": 1}])
    assert mark.check() == ("not the result", "")


def test_73_array_input_arrives_as_dollar_1(start_proxy) -> None:
    """f.6.73: an array value arrives as $1 (and the exec can return it unchanged)."""
    proxy = started(blackbox(start_proxy), ECHO_EXEC)
    assert proxy.run(["x", 1, {"y": None}]) == (200, ["x", 1, {"y": None}])
    assert proxy.run([]) == (200, [])


@pytest.mark.host_only("asserts that the exec runs in the host folder it was installed in (a container mounts it at /action)")
def test_preinstalled_exec_runs_without_init(start_proxy, tmp_path: Path) -> None:
    """An image built FROM the blackbox one puts `exec` in the action folder: it runs with no /init, in that folder."""
    action_dir = tmp_path / "preinstalled"
    action_dir.mkdir()
    (action_dir / "exec").write_text(WHERE_EXEC)
    (action_dir / "exec").chmod(0o755)
    (action_dir / "data").mkdir()
    (action_dir / "data" / "hello.txt").write_text("pre-installed")
    proxy = blackbox(start_proxy, env={"ACTIONPROXY_ACTION_DIR": str(action_dir)})
    status, body = proxy.run({})
    assert status == 200, body
    assert body["data"] == "pre-installed"
    assert Path(body["pwd"]).resolve() == action_dir.resolve()
    assert proxy.init(None) == (200, {"ok": True})  # no code keeps it
    assert proxy.run({})[1]["data"] == "pre-installed"


def test_second_init_is_403(start_proxy) -> None:
    """A second /init after one with code answers 403 and the first action keeps running."""
    proxy = started(blackbox(start_proxy), ZIP_EXEC)
    status, body = proxy.init(ECHO_EXEC)
    assert (status, body) == (403, {"error": REINIT})
    assert proxy.run({}) == (200, {"msg": "hello zip"})


def test_zip_without_exec_is_502(start_proxy) -> None:
    """A zip without `exec` at its root fails /init with 502 and says why on stderr; a good /init then works."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    code = zip_b64({"bin/exec": ZIP_EXEC, "README": "no exec here"}, {"bin/exec": 0o755})
    assert proxy.init(code, binary=True) == (502, {"error": COMPILE_FAILED})
    _, err = mark.check()
    assert "exec" in err, err
    assert proxy.init(ZIP_EXEC) == (200, {"ok": True})
    assert proxy.run({}) == (200, {"msg": "hello zip"})


@pytest.mark.parametrize("last", ["this is not json", '{"almost": json}', '"a string"', "42", "null"])
def test_last_line_not_an_object_is_502_and_logged(start_proxy, last: str) -> None:
    """A last line that is not a JSON object or array answers exactly NOT_A_DICT; that line is in the stdout log."""
    script = f"#!/bin/bash\necho 'first line'\necho '{last}'\n"
    proxy = started(blackbox(start_proxy), script)
    mark = Mark(proxy)
    status, body, raw = proxy.post("/run", {"value": {}})
    assert status == 502 and raw == json.dumps({"error": NOT_A_DICT}, separators=(",", ":")).encode(), raw
    out, err = mark.check()
    assert out == f"first line\n{last}"
    assert err == ""


def test_exit_without_output_is_502_with_the_exit_code_logged(start_proxy) -> None:
    """An exec that exits 3 without output answers 502 NOT_A_DICT; stderr logs name the exit code; the next run works."""
    proxy = started(blackbox(start_proxy), '#!/bin/bash\n[[ $1 == *ok* ]] && { echo \'{"ok":1}\'; exit 0; }\n'
                                           'echo "going down" >&2\nexit 3\n')
    mark = Mark(proxy)
    assert proxy.run({}) == (502, {"error": NOT_A_DICT})
    out, err = mark.check()
    assert out == ""
    assert "going down" in err and "exit code 3" in err, err
    assert proxy.run({"ok": True}) == (200, {"ok": 1})


def test_value_in_dollar_1_and_on_stdin(start_proxy) -> None:
    """Up to 131071 bytes of JSON the value is $1 and on stdin; longer, it is on stdin only."""
    proxy = started(blackbox(start_proxy), ARGS_EXEC)
    small = {"name": "Ada", "list": [1, 2]}
    compact = json.dumps(small, separators=(",", ":"))
    assert proxy.run(small) == (200, {"argc": 1, "stdin_bytes": len(compact), "arg_is_stdin": True, "arg": small})
    fits = {"s": "x" * (MAX_ARG - 8)}  # {"s":"..."} is exactly MAX_ARG bytes
    status, body = proxy.run(fits)
    assert status == 200, body
    assert (body["argc"], body["stdin_bytes"], body["arg_is_stdin"], body["arg"]) == (1, MAX_ARG, True, fits)
    large = {"s": "x" * 300_000}
    assert proxy.run(large) == (200, {"argc": 0, "stdin_bytes": 300_008, "arg_is_stdin": False, "arg": None})
    over = {"s": "x" * (MAX_ARG - 7)}
    assert proxy.run(over)[1]["argc"] == 0


def test_value_the_exec_never_reads(start_proxy) -> None:
    """An 8 MB value the exec never reads from stdin does not block it or the proxy."""
    proxy = started(blackbox(start_proxy), "#!/bin/sh\necho '{\"ignored\": true}'\n")
    assert proxy.run({"s": "x" * 8_000_000}) == (200, {"ignored": True})
    assert proxy.run({}) == (200, {"ignored": True})


@pytest.mark.parametrize("tail", ["\\n\\n   \\n", ""], ids=["blank-lines-after", "no-newline"])
def test_result_is_the_last_non_blank_line(start_proxy, tail: str) -> None:
    """Blank lines after the result are not the result; a result without a final newline is one."""
    proxy = started(blackbox(start_proxy), f"#!/bin/bash\necho log\nprintf '{{\"a\": 1}}{tail}'\n")
    mark = Mark(proxy)
    assert proxy.run({}) == (200, {"a": 1})
    assert mark.check() == ("log", "")


def test_text_without_a_shebang_fails_at_run(start_proxy) -> None:
    """Like the skeleton: any text is written as `exec` (init 200); one the kernel cannot run answers 502 COMPILE_FAILED, with the reason logged."""
    proxy = blackbox(start_proxy)
    mark = Mark(proxy)
    assert proxy.init('echo \'{"a": 1}\'\n') == (200, {"ok": True})
    assert proxy.run({}) == (502, {"error": COMPILE_FAILED})
    _, err = mark.check()
    assert "Exec format error" in err, err


def test_init_env_reaches_the_exec(start_proxy) -> None:
    """The /init env is in every activation's environment."""
    proxy = started(blackbox(start_proxy), CONTEXT_EXEC, env={"GREETING": "hi there"})
    status, body = proxy.run({}, activation_id="a1")
    assert status == 200 and body["greeting"] == "hi there" and body["id"] == "a1", body


# ---------------------------------------------------------------- parallel, per-activation context

def test_sixteen_activations_run_at_once(start_proxy, tmp_path: Path) -> None:
    """16 activations are 16 exec processes at once (each waits until all 16 exist), each with its own input and log block; the skeleton serialises them."""
    n = 16
    proxy = started(blackbox(start_proxy), BARRIER_EXEC)
    mark = Mark(proxy)
    folder = empty_dir(tmp_path)
    results = run_threaded(proxy, [{"value": {"dir": folder, "n": n, "i": i}} for i in range(n)])
    assert [(s, b["i"], b["seen"]) for s, b in results] == [(200, i, n) for i in range(n)], results
    assert len({b["pid"] for _, b in results}) == n
    out, err = mark.streams()
    assert sorted(blocks(out)) == sorted(f"log {i}\n" for i in range(n))
    assert blocks(err) == [""] * n


def test_at_most_max_workers_processes_at_once(start_proxy, tmp_path: Path) -> None:
    """With ACTIONPROXY_MAX_WORKERS=4, 12 concurrent activations run 4 at a time: 4 are alive together, never 5."""
    limit, n = 4, 12
    proxy = started(blackbox(start_proxy, env={"ACTIONPROXY_MAX_WORKERS": str(limit)}), BOUNDED_EXEC)
    folder = empty_dir(tmp_path)
    results = run_threaded(proxy, [{"value": {"dir": folder, "n": limit, "i": i}} for i in range(n)])
    assert all(status == 200 and body["arrived"] >= limit for status, body in results), results
    assert max(body["alive"] for _, body in results) == limit, results


def test_context_env_is_per_activation(start_proxy) -> None:
    """32 concurrent activations each see their own __OW_ACTIVATION_ID (and deadline, api key); a field not sent is not inherited."""
    n = 32
    proxy = started(blackbox(start_proxy), CONTEXT_EXEC)
    deadline = int(time.time() * 1000) + 120_000
    payloads = [{"value": {"i": i}, "activation_id": uuid.uuid4().hex, "api_key": f"key-{i}",
                 "deadline": str(deadline + i)} for i in range(n)]
    results = run_threaded(proxy, payloads)
    expected = [(200, {"id": p["activation_id"], "key": p["api_key"], "deadline": p["deadline"], "greeting": ""})
                for p in payloads]
    assert results == expected
    status, body = proxy.run({}, activation_id="no-key")
    assert (status, body["id"], body["key"]) == (200, "no-key", "unset"), body


# ---------------------------------------------------------------- streaming, bounded logs

def test_huge_output_is_streamed_and_logs_are_truncated(start_proxy) -> None:
    """50 MB of stdout lines with a 100 kB log limit: the result comes back, the log is cut with the notice, and the proxy never holds the output."""
    lines, limit = 500_000, 100_000
    proxy = started(blackbox(start_proxy, env={"ACTIONPROXY_LOG_LIMIT": str(limit)}), CHATTY_EXEC)
    assert proxy.run({"lines": 10}) == (200, {"lines": 10})
    me = psutil.Process(proxy.process.pid)
    before = me.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    mark = Mark(proxy, sentinels=1)
    try:
        result = proxy.run({"lines": lines}, timeout=120)
    finally:
        done.set()
        sampler.join()
    assert result == (200, {"lines": lines})
    out, err = mark.check()
    assert len(out) <= limit, len(out)
    assert set(out.splitlines()[:-1]) == {"0" * 98 + "7"}
    assert f"Logs were truncated because the total bytes size exceeds the limit of {limit} bytes." in err
    growth = peak[0] - before
    assert growth < 20 * 1024 * 1024, f"the proxy grew by {growth} bytes for {lines * 100} bytes of output"


# ---------------------------------------------------------------- deadlines, process groups

@pytest.mark.host_only("polls the host's /proc for pids the exec reports from inside its pid namespace")
def test_deadline_kills_the_exec_and_its_process_group(start_proxy, tmp_path: Path) -> None:
    """At its deadline an exec is killed with the child it left in the background; the next run works."""
    proxy = started(blackbox(start_proxy), STUCK_EXEC)
    folder = Path(empty_dir(tmp_path))
    status, body = proxy.run({"dir": str(folder)}, deadline=deadline_in(1000))
    assert status == 502 and "deadline" in body["error"] and "killed" in body["error"], body
    exec_pid = int((folder / "exec.pid").read_text())
    child_pid = int((folder / "child.pid").read_text())
    wait_until(lambda: process_gone(exec_pid), f"exec {exec_pid} being killed")
    wait_until(lambda: process_gone(child_pid), f"its background child {child_pid} being killed")
    assert proxy.run({"quick": True}) == (200, {"quick": True})


@pytest.mark.host_only("polls the host's /proc for a pid the exec reports from inside its pid namespace")
def test_children_left_behind_are_killed_after_the_result(start_proxy, tmp_path: Path) -> None:
    """An exec that answers and exits while its background child still holds stdout: the result comes back and the child is killed."""
    proxy = started(blackbox(start_proxy), STUCK_EXEC)
    folder = Path(empty_dir(tmp_path))
    assert proxy.run({"dir": str(folder), "leave": True}) == (200, {"left": True})
    child_pid = int((folder / "child.pid").read_text())
    wait_until(lambda: process_gone(child_pid), f"the background child {child_pid} being killed")


# ---------------------------------------------------------------- action-loop mode

def check_loop_mode(proxy: Proxy, tmp_path: Path) -> None:
    """Warm state across sequential activations, then 8 at once in 8 pooled processes."""
    first = [proxy.run({"id": f"s{i}"}) for i in range(3)]
    assert [(s, b["count"], b["id"]) for s, b in first] == [(200, 1, "s0"), (200, 2, "s1"), (200, 3, "s2")], first
    warm_pid = first[0][1]["pid"]
    assert {b["pid"] for _, b in first} == {warm_pid}
    n = 8
    folder = empty_dir(tmp_path)
    ids = [f"c{i}" for i in range(n)]
    results = run_threaded(proxy, [{"value": {"id": i, "dir": folder, "n": n}} for i in ids])
    assert [(s, b["id"], b["seen"]) for s, b in results] == [(200, i, n) for i in ids], results
    assert len({b["pid"] for _, b in results}) == n, "one process per concurrent activation"
    counts = sorted((b["pid"] == warm_pid, b["count"]) for _, b in results)
    assert counts == [(False, 1)] * (n - 1) + [(True, 4)], counts


def test_loop_mode_from_the_container_env(start_proxy, tmp_path: Path) -> None:
    """ACTIONPROXY_BLACKBOX_MODE=loop on the container: the exec is a pool of long-lived v1 action-loop processes."""
    proxy = started(blackbox(start_proxy, env={MODE: "loop"}), LOOP_EXEC)
    check_loop_mode(proxy, tmp_path)


def test_loop_mode_from_the_init_env(start_proxy, tmp_path: Path) -> None:
    """ACTIONPROXY_BLACKBOX_MODE=loop in the action's /init env selects the action-loop mode for that action."""
    proxy = started(blackbox(start_proxy), LOOP_EXEC, env={MODE: "loop"})
    check_loop_mode(proxy, tmp_path)


def test_loop_script_without_loop_mode_runs_once_per_activation(start_proxy) -> None:
    """Without the setting a loop script is a one-shot exec: a new process per activation reads the value from stdin
    (one line, no newline), has no fd 3, prints only a log line, so each run is 502 NOT_A_DICT with count 1."""
    proxy = started(blackbox(start_proxy), LOOP_EXEC)
    mark = Mark(proxy)
    pids = []
    for i in range(3):
        assert proxy.run({"id": f"x{i}"}) == (502, {"error": NOT_A_DICT})
    out, err = mark.streams()
    for block in blocks(out):
        assert block.startswith("call 1 pid "), block
        pids.append(block.split()[-1])
    assert len(pids) == 3 and len(set(pids)) == 3, out
    err_blocks = blocks(err)
    assert len(err_blocks) == 3 and all("Bad file descriptor" in b for b in err_blocks), err


def test_loop_mode_container_still_runs_the_stub_as_a_one_shot(start_proxy) -> None:
    """f.6.65 with ACTIONPROXY_BLACKBOX_MODE=loop on the container: the stub is ours and not an action loop, so /run
    before any /init still answers 200 with its error object; a later /init with a loop action runs in loop mode."""
    proxy = blackbox(start_proxy, env={MODE: "loop"})
    assert proxy.run({}, timeout=30) == (200, {"error": STUB_ERROR})
    assert proxy.init(LOOP_EXEC) == (200, {"ok": True})
    assert [proxy.run({"id": "after"})[1]["count"] for _ in range(2)] == [1, 2]


def test_loop_mode_container_runs_a_preinstalled_loop_exec(start_proxy, tmp_path: Path) -> None:
    """A pre-installed `exec` in a loop-mode container is an action loop without any /init: warm state is kept."""
    action_dir = tmp_path / "preinstalled"
    action_dir.mkdir()
    (action_dir / "exec").write_text(LOOP_EXEC)
    (action_dir / "exec").chmod(0o755)
    proxy = blackbox(start_proxy, env={"ACTIONPROXY_ACTION_DIR": str(action_dir), MODE: "loop"})
    results = [proxy.run({"id": f"p{i}"}) for i in range(3)]
    assert [(s, b["id"], b["count"]) for s, b in results] == [(200, "p0", 1), (200, "p1", 2), (200, "p2", 3)], results
    assert len({b["pid"] for _, b in results}) == 1


def test_loop_mode_crash_fails_only_its_activation(start_proxy) -> None:
    """A loop process killed by SIGKILL mid-activation fails that activation with "command exited"; the next run works."""
    proxy = started(blackbox(start_proxy), LOOP_EXEC, env={MODE: "loop"})
    assert proxy.run({"id": "before"})[1]["count"] == 1
    status, body = proxy.run({"id": "boom", "crash": True})
    assert status == 400 and body["error"].startswith(COMMAND_EXITED), (status, body)
    assert "SIGKILL" in body["error"], body
    status, body = proxy.run({"id": "after"})
    assert (status, body["id"], body["count"]) == (200, "after", 1), body


# A v2 action-loop executable that answers its first RUN with a header announcing more than a
# frame may carry, then, right where the proxy's first read of the stream ends, a well-formed
# DONE for the same activation: bytes after a protocol error that must never count.
BAD_FRAMES_EXEC = r"""#!/usr/bin/env python3
import os, struct
H = struct.Struct(">BII")
SCRATCH = %d
os.write(3, b'{"ok": true, "protocol": 2}\n')
buf = b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    while len(buf) >= 9 and len(buf) >= 9 + H.unpack_from(buf)[2]:
        kind, ident, length = H.unpack_from(buf)
        buf = buf[9 + length:]
        if kind == ord("R"):
            bad = H.pack(ord("D"), ident, (1 << 30) + 1)
            fake = b'{"fake":true}'
            os.write(3, bad + b" " * (SCRATCH - len(bad)) + H.pack(ord("D"), ident, len(fake)) + fake)
"""


def test_bytes_after_a_protocol_error_settle_nothing(start_proxy) -> None:
    """After a frame that breaks the protocol, the rest of the stream is discarded, not decoded:
    a result-shaped frame after it does not answer the activation; the error does, and the next
    activation runs on a new process."""
    from actionproxy.executor import frames

    proxy = started(blackbox(start_proxy, env={MODE: "loop", "OW_WAIT_FOR_ACK": "1"}), BAD_FRAMES_EXEC % frames.SCRATCH)
    status, body = proxy.run({"n": 1})
    assert status != 200 and body != {"fake": True}, (status, body)
    _, err = proxy.streams()
    assert "protocol error from the action" in err
