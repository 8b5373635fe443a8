"""The lab's report: Markdown tables (stdout) and two PNG plots (matplotlib, imported only when
plots are asked for)."""

import datetime
import os

from stampede import pct


def ms(x):
    if x != x:  # NaN
        return "n/a"
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 1 else "%.2f" % x


def share(n, total):
    return "%.1f%%" % (100.0 * n / total) if total else "n/a"


def lag_cell(lags):
    return "%s / %s" % (ms(pct(lags, 99)), ms(lags[-1] if lags else float("nan")))


def progress_line(r):
    return ("%d reads (%.0f/s), %d recomputes, max %d in flight, p99 %s ms, max %s ms, "
            "client CPU %.0f%%, loop lag p99 %s ms" % (
                r["reads"], r["reads"] / r["wall"], r["recomputes"], r["max_in_flight"],
                ms(pct(r["lat"], 99)), ms(r["lat"][-1] if r["lat"] else float("nan")),
                100 * r["client_cpu"], ms(pct(r["lags"], 99))))


def stampede_table(rs, opts):
    ttls = opts.duration * 1000.0 / opts.ttl_ms
    out = ["| Strategy | Reads/s | Recomputes (per TTL) | Most in flight | p50 ms | p99 ms | "
           "p99.9 ms | max ms | Waited | Recomputed in the read | Cmds sent / read | "
           "Server cmds / read | Client CPU | Loop lag p99 / max ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rs:
        o, n = r["outcomes"], r["reads"]
        out.append("| %s | %.0f | %d (%.1f) | %d | %s | %s | %s | %s | %s | %s | %.2f | %.2f | "
                   "%.0f%% | %s |" % (
                       r["label"], n / r["wall"], r["hot_recomputes"], r["hot_recomputes"] / ttls,
                       r["max_in_flight"], ms(pct(r["lat"], 50)), ms(pct(r["lat"], 99)),
                       ms(pct(r["lat"], 99.9)), ms(r["lat"][-1]), share(o["waited"], n),
                       share(o["computed"], n), r["client_sent"] / n, r["server_cmds"] / n,
                       100 * r["client_cpu"], lag_cell(r["lags"])))
    return out


def consistency_table(rs):
    out = ["| Strategy | Reads | Writes | Fills (refused) | Stale fills accepted | "
           "Writes undone | Stale reads served | Recomputes | p99 ms | Waited | "
           "Client CPU | Loop lag p99 / max ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rs:
        n = r["reads"]
        out.append("| %s | %d | %d | %d (%d) | %d | %d | %d (%s) | %d | %s | %s | %.0f%% | %s |" % (
            r["label"], n, r["writes"], r["fills"], r["fills_refused"], r["stale_fills"],
            r["undone"], r["stale_reads"], share(r["stale_reads"], n), r["recomputes"],
            ms(pct(r["lat"], 99)), share(r["outcomes"]["waited"], n), 100 * r["client_cpu"],
            lag_cell(r["lags"])))
    return out


def markdown(results, opts, meta):
    st = [r for r in results if r["scenario"] == "stampede"]
    co = [r for r in results if r["scenario"] == "consistency"]
    configs = ", ".join("`%s %s`" % kv for kv in sorted(meta["configs"].items())
                        if kv[0] in ("cache.beta", "cache.lease-ms", "cache.grace-ms",
                                     "cache.default-delta-ms"))
    out = ["", "## Stampede lab", "",
           "%s, `bench/lab/lab.py %s`; %s; %d CPUs; %.0f s in all. Server: `%s` (port picked "
           "free), %s. Client: one asyncio event loop, %d readers on their own connections, "
           "target %.0f reads/s in all; recompute %g ms (a sleep in the simulated database, "
           "which counts every recompute); TTL %d ms; XFetch beta %g (client and Lua); lock "
           "and LOCKGET PX %d ms, LOCKGET WAIT %d ms, poll %g ms; early refresh %s." % (
               datetime.date.today().isoformat(), meta["argv"], meta["server"], meta["cpus"],
               meta["elapsed"], meta["command"], configs, opts.readers, opts.rate, opts.delta_ms,
               opts.ttl_ms, opts.beta, opts.lease_ms, opts.wait_ms, opts.poll_ms,
               "in the background" if opts.refresh == "background" else "inline"), ""]
    if st:
        out += ["### Stampede: one hot key, %g s per strategy" % opts.duration, ""]
        out += stampede_table(st, opts) + [""]
    if co:
        out += ["### Consistency: %d Zipf keys (s=%g), a write + invalidation every %g ms on "
                "average, %g s per strategy" % (opts.keys, opts.zipf, opts.write_interval_ms,
                                                opts.consistency_duration), ""]
        out += consistency_table(co) + [""]
    out += notes(results)
    return "\n".join(out)


def notes(results):
    if not results:
        return []
    worst_cpu = max(results, key=lambda r: r["client_cpu"])
    worst_p99 = max(results, key=lambda r: pct(r["lags"], 99) if r["lags"] else 0)
    worst_max = max(results, key=lambda r: r["lags"][-1] if r["lags"] else 0)
    lg = [r for r in results if r["strategy"] == "lockget"]
    out = ["- Client: at most %.0f%% of one core (%s / %s); event-loop lag (a 5 ms sleep, how "
           "late it woke): worst p99 %s ms (%s / %s), worst max %s ms (%s / %s). Every latency "
           "above carries that lag." % (
               100 * worst_cpu["client_cpu"], worst_cpu["scenario"], worst_cpu["strategy"],
               ms(pct(worst_p99["lags"], 99)), worst_p99["scenario"], worst_p99["strategy"],
               ms(worst_max["lags"][-1]), worst_max["scenario"], worst_max["strategy"])]
    out.append("- Recomputes: counted by the simulated database (every query started), the "
               "harness's one warm-up fill per key before the clock starts left out. *Per "
               "TTL*: the hot key's recomputes / (duration / TTL). *Most in flight*: the most "
               "recomputes running at one instant.")
    out.append("- Latency: from a read's first command to the reader holding a value (its own "
               "recompute included when it had to compute it). *Waited*: reads that retried, "
               "polled or were parked for somebody else's fill (LOCKGET: a HIT whose value was "
               "stored after the read was sent). *Cmds sent*: commands the readers sent, "
               "background refreshes included; *server cmds*: `INFO commandstats` calls (a "
               "script's own `redis.call`s count), the writer's invalidations left out.")
    hit = [r for r in results if r["strategy"] == "hit" and r["lat"]]
    if hit:
        floor = pct(hit[0]["lat"], 99.9)
        out.append("- p99.9 against the plain hit's (%s ms, same run, same connections): %s." % (
            ms(floor), ", ".join(
                "%s %.1fx" % (r["strategy"], pct(r["lat"], 99.9) / floor) for r in results
                if r["scenario"] == "stampede" and r["strategy"] != "hit" and r["lat"])))
    if lg:
        out.append("- Server check: `lockget_waits` (callers parked) %s." % ", ".join(
            "%d in %s" % (r["lockget_waits"], r["scenario"]) for r in lg))
    if any(r["scenario"] == "consistency" for r in results):
        out.append("- Consistency: a *stale fill accepted* is a fill the server stored, sent "
                   "after the writer's invalidation was acknowledged, whose value is of an older "
                   "database version; *writes undone*: the distinct writes whose invalidation "
                   "such fills reverted; *stale reads served*: reads begun after an "
                   "acknowledged invalidation that got an older version.")
    for r in results:
        if r["lags"] and pct(r["lags"], 99) > 50:
            out.append("- **%s / %s: loop lag p99 %s ms (client CPU %.0f%%)**: the client fell "
                       "behind (busy, or starved of CPU by other work on the machine); its "
                       "latencies measure the client, not the strategy: run it again." % (
                           r["scenario"], r["strategy"], ms(pct(r["lags"], 99)),
                           100 * r["client_cpu"]))
    errs = [(r["scenario"], r["strategy"], len(r["errors"]), r["errors"][0])
            for r in results if r["errors"]]
    for e in errs:
        out.append("- **errors** in %s / %s: %d, first: %s" % e)
    return out


def cdf_points(lat, points=800):
    """(x, y) of the empirical CDF, thinned: even steps in y up to 0.99, finer in the tail."""
    n = len(lat)
    qs = [i / points * 0.99 for i in range(points)]
    qs += [0.99 + 0.01 * (1 - 10 ** (-i / 100)) for i in range(300)] + [1.0]
    idx = sorted({min(n - 1, int(q * n)) for q in qs})
    return [max(lat[i], 1e-3) for i in idx], [(i + 1) / n for i in idx]


def plots(results, directory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullLocator

    st = [r for r in results if r["scenario"] == "stampede" and r["lat"]]
    if not st:
        return []
    os.makedirs(directory, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for r in st:
        x, y = cdf_points(r["lat"])
        x, y = x[:-1], y[:-1]  # y = 1 is off a logit axis
        ax.step(x, y, where="post", label=r["strategy"])
    ax.set_xscale("log")
    ax.set_yscale("logit", nonpositive="mask")  # spreads the tail: 0.9, 0.99, 0.999 ...
    ax.set_xlabel("read latency, ms (log)")
    ax.set_ylabel("share of reads at most x (logit)")
    ax.set_ylim(0.01, 0.9999)
    ticks = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.set_yticks(ticks, ["%g%%" % (100 * t) for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Stampede: read latency CDF")
    fig.tight_layout()
    path = os.path.join(directory, "latency_cdf.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(len(st), 1, figsize=(8, 1.3 * len(st) + 0.8), dpi=100,
                             sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], st):
        t = [p[0] for p in r["timeline"]]
        n = [p[1] for p in r["timeline"]]
        ax.step(t, n, where="post", lw=0.8)
        ax.set_ylabel(r["strategy"], rotation=0, ha="right", va="center")
        ax.set_ylim(0, max(1, r["max_in_flight"]) * 1.15)
        ax.text(0.995, 0.9, "max %d" % r["max_in_flight"], transform=ax.transAxes,
                ha="right", va="top", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 0].set_xlim(0, max(r["wall"] for r in st))
    fig.suptitle("Stampede: recomputes in flight in the database")
    fig.tight_layout()
    path = os.path.join(directory, "in_flight.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
