"""Results out: the JSON record, the PNG chart and the summary table with the targets."""

from __future__ import annotations

from pathlib import Path

import orjson

SERVERS = ("bare", "proxy-async", "proxy-sync", "proxy-node")  # under load
PROXIES = SERVERS[1:]
COLD_PROXIES = ("proxy-async", "proxy-sync")  # cold start: the Python modes, then dedicated images
COLORS = {"bare": "#7f7f7f", "proxy-async": "#1f77b4", "proxy-sync": "#ff7f0e", "proxy-node": "#2ca02c",
          "python": "#1f77b4", "nodejs": "#2ca02c"}
TARGET_C1, TARGET_C16, TARGET_C256, TARGET_STRING = 0.76, 0.6, 0.6, 0.4


def add_ratios(points: list[dict]) -> None:
    """req/s of each proxy mode over bare at the same point: the numbers that survive a noisy VM."""
    for point in points:
        bare = point["servers"]["bare"]["rps"]
        point["ratio"] = {proxy: point["servers"][proxy]["rps"] / bare for proxy in PROXIES}


def targets(results: dict) -> list[dict]:
    """The issue's targets, judged per proxy mode and runtime for the parts that ran; reported,
    never enforced. `pass` is None for a runtime that is not available."""
    checks = []
    for proxy in PROXIES:  # in the order of before: load, then cold start, per proxy mode
        if "points" in results:
            checks += _load_targets(results["points"], proxy)
        if "coldstart" in results and proxy in COLD_PROXIES:
            # what an invoker waits for: the launcher starts beside the proxy on the same CPU,
            # so /init alone only shows how much of its start is left once the port answers
            cold = results["coldstart"]
            ratio = (cold[proxy]["spawn_to_first_result"]["median_ms"]
                     / cold["bare"]["listening"]["median_ms"])
            checks.append({"target": f"{proxy} spawn, /init, first result <= bare spawn to listening",
                           "value": f"{ratio:.2f}x", "pass": ratio <= 1.0})
    if "coldstart" in results:
        cold = results["coldstart"]
        bare = cold["bare"]["listening"]["median_ms"]
        for name, c in cold.items():
            if name.startswith("dedicated "):
                ratio = c["start_to_first_result"]["median_ms"] / bare
                checks.append({"target": f"{name} spawn to first result <= bare spawn to listening",
                               "value": f"{ratio:.2f}x", "pass": ratio <= 1.0})
    if "inflight" in results:
        checks += _inflight_targets(results["inflight"])
    return checks


def _inflight_targets(inflight: dict) -> list[dict]:
    settings = inflight["settings"]
    wall, rss, n = settings["target_wall_s"], settings["target_rss_mb"], settings["requests"]
    checks = []
    for name, r in inflight["servers"].items():
        if name == "bare":
            continue
        what = f"{name} {n:,} x {settings['wait_s']:g} s in flight"
        if not r["available"]:
            checks += [{"target": f"{what}: wall < {wall:g} s, 0 errors", "value": "not available", "pass": None},
                       {"target": f"{what}: peak RSS < {rss:g} MB", "value": "not available", "pass": None}]
            continue
        checks.append({"target": f"{what}: wall < {wall:g} s, 0 errors",
                       "value": f"{r['wall_s']:.2f} s, {r['errors']} errors",
                       "pass": r["wall_s"] < wall and r["errors"] == 0})
        checks.append({"target": f"{what}: peak RSS < {rss:g} MB", "value": f"{r['peak_rss_mb']:.0f} MB",
                       "pass": r["peak_rss_mb"] < rss})
    return checks


def _load_targets(points: list[dict], proxy: str) -> list[dict]:
    """Issue 10's goals: echo at c=1, 16 and 256 (0 errors), and the 1 MiB string at c=8."""
    by_label = {point["label"]: point for point in points}
    checks = []
    for label, target in (("c=1", TARGET_C1), ("c=16", TARGET_C16), ("c=256", TARGET_C256),
                          ("1MiB string c=8", TARGET_STRING)):
        ratio = by_label[label]["ratio"][proxy]
        errors = by_label[label]["servers"][proxy]["errors"]
        checks.append({"target": f"{proxy} {label} >= {target}x bare, 0 errors",
                       "value": f"{ratio:.2f}x, {errors} errors", "pass": ratio >= target and errors == 0})
    return checks


def write_json(results: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(results, option=orjson.OPT_INDENT_2)
    stamped = directory / f"{results['timestamp'].replace(':', '')}.json"
    stamped.write_bytes(data)
    (directory / "latest.json").write_bytes(data)
    return stamped


def _grouped(ax, points: list[dict], key: str, **bar) -> None:
    """One bar per server for each point, with proxy/bare ratios over the proxy bars."""
    width = 0.8 / len(SERVERS)
    for i, server in enumerate(SERVERS):
        xs = [x + (i - (len(SERVERS) - 1) / 2) * width for x in range(len(points))]
        bars = ax.bar(xs, [p["servers"][server][key] for p in points], width, color=COLORS[server],
                      label=server, **bar)
        if key == "rps" and server != "bare":
            ax.bar_label(bars, [f"{p['ratio'][server]:.2f}x" for p in points], fontsize=8)
    ax.set_xticks(range(len(points)), [p["label"].replace(" c=", "\nc=") for p in points])
    ax.grid(axis="y", alpha=0.3)


def _cold(cold_ax, cold: dict) -> None:
    entries = [("bare\nlistening", cold["bare"]["listening"], "bare")]
    entries += [(f"{p}\nlistening", cold[p]["listening"], p) for p in COLD_PROXIES]
    entries += [(f"{p}\nspawn→/init→result", cold[p]["spawn_to_first_result"], p) for p in COLD_PROXIES]
    values = [stats["median_ms"] for _, stats, _ in entries]
    bars = cold_ax.bar(range(len(values)), values, color=[COLORS[server] for _, _, server in entries])
    cold_ax.bar_label(bars, [f"{v:.1f}" for v in values], fontsize=8)
    cold_ax.axhline(cold["bare"]["listening"]["median_ms"], color="red", linestyle="--", linewidth=1,
                    label="target: bare spawn to listening")
    cold_ax.set_xticks(range(len(values)), [label for label, _, _ in entries], fontsize=8)
    cold_ax.set_yscale("log")
    cold_ax.set_title(f"cold start, median of {cold['bare']['listening']['n']} (ms, log)")
    cold_ax.legend(fontsize=8)


def _inflight_done(ax, inflight: dict) -> None:
    """Share of the requests sent (dotted) and answered (solid) against time from the first connect."""
    settings = inflight["settings"]
    for name, r in inflight["servers"].items():
        color = COLORS.get(name, "#9467bd")
        if not r["available"]:
            ax.plot([], [], color=color, label=f"{name}: not available")
            continue
        for curve, style, label in (("sent_curve", ":", None),
                                    ("answered_curve", "-", f"{name}: wall {r['wall_s']:.2f} s, "
                                                            f"{r['errors']} errors")):
            times = r[curve]
            ax.plot([0.0, *times], [0, *range(1, len(times) + 1)], style, color=color, label=label,
                    linewidth=1.2 if name == "bare" else 1.8)
    ax.axvline(settings["target_wall_s"], color="red", linestyle="--", linewidth=1,
               label=f"target {settings['target_wall_s']:g} s")
    ax.set_xlabel("s from the first connect")
    ax.set_ylabel("% of requests")
    ax.set_title(f"{settings['requests']:,} in flight x {settings['wait_s']:g} s: connects sent (dotted), "
                 f"answers (solid)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _inflight_rss(ax, inflight: dict) -> None:
    settings = inflight["settings"]
    for name, r in inflight["servers"].items():
        if not r["available"]:
            continue
        times, mb = zip(*r["rss_timeline"])
        ax.plot(times, mb, color=COLORS.get(name, "#9467bd"), linewidth=1.2 if name == "bare" else 1.8,
                label=f"{name}: peak {r['peak_rss_mb']:.0f} MB, {r['processes']} "
                      f"process{'es' if r['processes'] > 1 else ''}, "
                      f"peak in flight {r['peak_in_flight']:,}")
    ax.axhline(settings["target_rss_mb"], color="red", linestyle="--", linewidth=1,
               label=f"target {settings['target_rss_mb']:g} MB")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("s from the first connect")
    ax.set_ylabel("MB")
    ax.set_title(f"RSS summed over the server's process tree, every {settings['sample_ms']:g} ms",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def chart(results: dict, path: Path) -> None:
    """Whatever ran, two panels a row: req/s for small and large bodies, p50/p99 latency, cold
    start, and the in-flight scenario's answers over time and memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "points" in results:
        small = [p for p in results["points"] if p["body"] == "small"]
        large = [p for p in results["points"] if p["body"] != "small"]

        def small_rps(ax):
            _grouped(ax, small, "rps")
            ax.set_title("echo /run, small body: req/s (label = proxy / bare)")
            ax.set_ylabel("requests/s")
            ax.legend()

        def large_rps(ax):
            _grouped(ax, large, "rps")
            ax.set_title("echo /run, large body: req/s (label = proxy / bare)")
            ax.set_ylabel("requests/s")

        def latency(ax):
            _grouped(ax, results["points"], "p99_ms", alpha=0.35)
            _grouped(ax, results["points"], "p50_ms")
            ax.set_yscale("log")
            ax.set_title("latency: p50 solid, p99 light")
            ax.set_ylabel("ms (log)")
            ax.tick_params(axis="x", labelsize=8)

        panels += [small_rps, large_rps, latency]
    if "coldstart" in results:
        panels.append(lambda ax: _cold(ax, results["coldstart"]))
    if "inflight" in results:
        panels += [lambda ax: _inflight_done(ax, results["inflight"]),
                   lambda ax: _inflight_rss(ax, results["inflight"])]
    if not panels:  # a run of parts without a chart (launchers)
        return
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 5 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        panel(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    settings = results["settings"]
    clients = (["wrk"] if "points" in results else []) + (["in-flight asyncio client"] if "inflight" in results else [])
    load = f", {settings['seconds']} s per load point" if "points" in results else ""
    fig.suptitle(f"actionproxy bench {results['timestamp']}, {results['machine']['commit']} "
                 f"({results['machine']['cpu']}; servers on CPU {settings['server_cpu']}, "
                 f"{' and '.join(clients) or 'clients'} on CPU {settings['client_cpu']}{load})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(results: dict) -> str:
    lines: list[str] = []
    if "points" in results:
        lines += _load_summary(results["points"])
    if "coldstart" in results:
        cold = results["coldstart"]
        lines.append("")
        lines.append(f"cold start, median of {cold['bare']['listening']['n']} (ms): "
                     f"bare spawn to listening {cold['bare']['listening']['median_ms']:.1f}")
        for proxy in COLD_PROXIES:
            c = cold[proxy]
            lines.append(f"  {proxy:<12} spawn to listening {c['listening']['median_ms']:.1f}, "
                         f"/init alone {c['init']['median_ms']:.1f}, "
                         f"/init to first result {c['init_to_first_result']['median_ms']:.1f}, "
                         f"spawn to first result {c['spawn_to_first_result']['median_ms']:.1f}")
        bare = cold["bare"]["listening"]["median_ms"]
        for name, c in cold.items():
            if name.startswith("dedicated "):
                first = c["start_to_first_result"]["median_ms"]
                lines.append(f"  {name:<24} spawn to first result {first:.1f} ({first / bare:.2f}x bare listening)")
    if "launchers" in results:
        lines.append("")
        lines += _launchers_summary(results["launchers"])
    if "inflight" in results:
        lines.append("")
        lines += _inflight_summary(results["inflight"])
    lines.append("")
    width = max((len(check["target"]) for check in results["targets"]), default=0) + 2
    for check in results["targets"]:
        verdict = "N/A " if check["pass"] is None else "PASS" if check["pass"] else "MISS"
        lines.append(f"{verdict}  {check['target']:<{width}}{check['value']}")
    return "\n".join(lines).strip("\n")


def _launchers_summary(launchers: dict) -> list[str]:
    lines = ["ACTIONPROXY_LAUNCHERS=N, async echo: req/s as a ratio to N=1 (p99 ms), tree PSS MiB, "
             "spawn to first result ms"]
    for runtime, r in launchers.items():
        for point, by_count in r["points"].items():
            cells = "  ".join(f"N={n}: {v['ratio']:.2f}x ({v['p99_ms']:.1f})" for n, v in by_count.items())
            lines.append(f"  {runtime:<7} {point:<6} {cells}")
        lines.append(f"  {runtime:<7} PSS MiB {r['pss_mib']}, spawn to first result ms {r['start_to_first_result_ms']}")
    return lines


def _load_summary(points: list[dict]) -> list[str]:
    lines = [f"{'point':<22}{'server':<13}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
             f"{'ratio':>7}{'cpu us/req':>12}{'listen ovf':>11}"]
    for point in points:
        for server in SERVERS:
            r = point["servers"][server]
            ratio = f"{point['ratio'][server]:.2f}x" if server in point["ratio"] else ""
            cpu = r["cpu_us_per_request"]
            split = f"{cpu['server']}" + (f"+{cpu['children']}" if server != "bare" else "")
            lines.append(f"{point['label']:<22}{server:<13}{r['rps']:>8.0f}{r['p50_ms']:>9.2f}"
                         f"{r['p99_ms']:>9.2f}{r['errors']:>7}{ratio:>7}{split:>12}{r['listen_overflows']:>11}")
    lines.append("cpu us/req: server process + its launcher and workers, all on the server CPU; listen ovf:\n"
                 "connects dropped at a full accept queue, each waits >= 1 s for a SYN retransmit")
    return lines


def _inflight_summary(inflight: dict) -> list[str]:
    settings = inflight["settings"]
    lines = [f"in flight: {settings['requests']:,} concurrent /run, each waiting {settings['wait_s']:g} s in the "
             f"action, one connection each,\nconnects paced to keep <= {settings['window']} in the accept queue",
             f"{'server':<9}{'wall s':>8}{'errors':>8}{'peak RSS MB':>13}{'idle MB':>9}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'in flight':>11}{'connects s':>12}{'listen ovf':>12}{'server cpu s':>14}{'client cpu s':>14}"]
    for name, r in inflight["servers"].items():
        if not r["available"]:
            lines.append(f"{name:<9}not available: {r['reason']}")
            continue
        cpu = r["server_cpu_s"]
        split = f"{cpu['server']:.2f}" + (f"+{cpu['children']:.2f}" if name != "bare" else "")
        lines.append(f"{name:<9}{r['wall_s']:>8.2f}{r['errors']:>8}{r['peak_rss_mb']:>13.0f}"
                     f"{r['idle_rss_mb'] or 0:>9.0f}{r['latency_ms'].get('p50', 0):>9.0f}"
                     f"{r['latency_ms'].get('p99', 0):>9.0f}{r['peak_in_flight']:>11}{r['connect_ramp_s']:>12.2f}"
                     f"{r['listen_overflows']:>12}{split:>14}{r['client_cpu_s']:>14.2f}")
        rounds = r["rounds"]
        busy = r["cpu_busy_s"]
        lines.append(f"{'':<9}rounds: wall {' '.join(f'{w:.2f}' for w in rounds['wall_s'])} s, peak RSS "
                     f"{' '.join(f'{m:.0f}' for m in rounds['peak_rss_mb'])} MB, errors "
                     f"{' '.join(map(str, rounds['errors']))}; server CPU busy {busy['server']:.2f} s "
                     f"(not the server's: {busy['other_on_server_cpu']:.2f} s)")
        if r["errors"]:
            lines.append(f"{'':<9}errors: {r['error_kinds']}")
    lines.append(f"each row: the median-wall round of {settings['rounds']}; wall: first connect sent to last answer;"
                 f" RSS summed\nover the process tree; in flight: most sent and not yet answered at once; "
                 f"bare: aiohttp + uvloop\nsleeping in-process (reference, not judged)")
    return lines
