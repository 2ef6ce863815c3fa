"""Results out: the JSON record, the PNG chart and the summary table with the targets."""

from __future__ import annotations

from pathlib import Path

import orjson

SERVERS = ("bare", "proxy-async", "proxy-sync")
PROXIES = SERVERS[1:]
COLORS = {"bare": "#7f7f7f", "proxy-async": "#1f77b4", "proxy-sync": "#ff7f0e"}
TARGET_C1, TARGET_C256, TARGET_INIT_MS = 0.7, 0.6, 10.0


def add_ratios(points: list[dict]) -> None:
    """req/s of each proxy mode over bare at the same point: the numbers that survive a noisy VM."""
    for point in points:
        bare = point["servers"]["bare"]["rps"]
        point["ratio"] = {proxy: point["servers"][proxy]["rps"] / bare for proxy in PROXIES}


def targets(results: dict) -> list[dict]:
    """The issue's targets, judged per proxy mode; reported, never enforced."""
    by_label = {point["label"]: point for point in results["points"]}
    checks = []
    for proxy in PROXIES:
        c1 = by_label["c=1"]["ratio"][proxy]
        checks.append({"target": f"{proxy} c=1 >= {TARGET_C1}x bare", "value": f"{c1:.2f}x",
                       "pass": c1 >= TARGET_C1})
        c256 = by_label["c=256"]["ratio"][proxy]
        errors = by_label["c=256"]["servers"][proxy]["errors"]
        checks.append({"target": f"{proxy} c=256 >= {TARGET_C256}x bare, 0 errors",
                       "value": f"{c256:.2f}x, {errors} errors", "pass": c256 >= TARGET_C256 and errors == 0})
        first = results["coldstart"][proxy]["init_to_first_result"]["median_ms"]
        checks.append({"target": f"{proxy} /init to first result < {TARGET_INIT_MS:g} ms",
                       "value": f"{first:.1f} ms", "pass": first < TARGET_INIT_MS})
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
    width = 0.27
    for i, server in enumerate(SERVERS):
        xs = [x + (i - 1) * width for x in range(len(points))]
        bars = ax.bar(xs, [p["servers"][server][key] for p in points], width, color=COLORS[server],
                      label=server, **bar)
        if key == "rps" and server != "bare":
            ax.bar_label(bars, [f"{p['ratio'][server]:.2f}x" for p in points], fontsize=8)
    ax.set_xticks(range(len(points)), [p["label"].replace(" c=", "\nc=") for p in points])
    ax.grid(axis="y", alpha=0.3)


def chart(results: dict, path: Path) -> None:
    """req/s for small and large bodies, p50/p99 latency, and cold start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small = [p for p in results["points"] if p["body"] == "small"]
    large = [p for p in results["points"] if p["body"] != "small"]
    fig, ((small_ax, large_ax), (lat_ax, cold_ax)) = plt.subplots(2, 2, figsize=(14, 10))
    _grouped(small_ax, small, "rps")
    small_ax.set_title("echo /run, small body: req/s (label = proxy / bare)")
    small_ax.set_ylabel("requests/s")
    small_ax.legend()
    _grouped(large_ax, large, "rps")
    large_ax.set_title("echo /run, large body: req/s (label = proxy / bare)")
    large_ax.set_ylabel("requests/s")
    _grouped(lat_ax, results["points"], "p99_ms", alpha=0.35)
    _grouped(lat_ax, results["points"], "p50_ms")
    lat_ax.set_yscale("log")
    lat_ax.set_title("latency: p50 solid, p99 light")
    lat_ax.set_ylabel("ms (log)")
    lat_ax.tick_params(axis="x", labelsize=8)

    cold = results["coldstart"]
    entries = [("bare\nlistening", cold["bare"]["listening"], "bare")]
    entries += [(f"{p}\nlistening", cold[p]["listening"], p) for p in PROXIES]
    entries += [(f"{p}\n/init→result", cold[p]["init_to_first_result"], p) for p in PROXIES]
    values = [stats["median_ms"] for _, stats, _ in entries]
    bars = cold_ax.bar(range(len(values)), values, color=[COLORS[server] for _, _, server in entries])
    cold_ax.bar_label(bars, [f"{v:.1f}" for v in values], fontsize=8)
    cold_ax.axhline(TARGET_INIT_MS, color="red", linestyle="--", linewidth=1,
                    label=f"/init→result target {TARGET_INIT_MS:g} ms")
    cold_ax.set_xticks(range(len(values)), [label for label, _, _ in entries], fontsize=8)
    cold_ax.set_yscale("log")
    cold_ax.set_title(f"cold start, median of {cold['bare']['listening']['n']} (ms, log)")
    cold_ax.legend(fontsize=8)
    settings = results["settings"]
    fig.suptitle(f"actionproxy bench {results['timestamp']}, {results['machine']['commit']} "
                 f"({results['machine']['cpu']}; servers on CPU {settings['server_cpu']}, "
                 f"wrk on CPU {settings['client_cpu']}, {settings['seconds']} s per point)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(results: dict) -> str:
    lines = [f"{'point':<22}{'server':<13}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
             f"{'ratio':>7}{'cpu us/req':>12}{'listen ovf':>11}"]
    for point in results["points"]:
        for server in SERVERS:
            r = point["servers"][server]
            ratio = f"{point['ratio'][server]:.2f}x" if server in point["ratio"] else ""
            cpu = r["cpu_us_per_request"]
            split = f"{cpu['server']}" + (f"+{cpu['children']}" if server != "bare" else "")
            lines.append(f"{point['label']:<22}{server:<13}{r['rps']:>8.0f}{r['p50_ms']:>9.2f}"
                         f"{r['p99_ms']:>9.2f}{r['errors']:>7}{ratio:>7}{split:>12}{r['listen_overflows']:>11}")
    lines.append("cpu us/req: server process + its launcher and workers, all on the server CPU; listen ovf:\n"
                 "connects dropped at a full accept queue, each waits >= 1 s for a SYN retransmit")
    cold = results["coldstart"]
    lines.append("")
    lines.append(f"cold start, median of {cold['bare']['listening']['n']} (ms): "
                 f"bare spawn to listening {cold['bare']['listening']['median_ms']:.1f}")
    for proxy in PROXIES:
        c = cold[proxy]
        lines.append(f"  {proxy:<12} spawn to listening {c['listening']['median_ms']:.1f}, "
                     f"/init alone {c['init']['median_ms']:.1f}, "
                     f"/init to first result {c['init_to_first_result']['median_ms']:.1f}")
    lines.append("")
    for check in results["targets"]:
        lines.append(f"{'PASS' if check['pass'] else 'MISS'}  {check['target']:<46}{check['value']}")
    return "\n".join(lines)
