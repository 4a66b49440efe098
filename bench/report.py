#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  report.py percentiles H2LOAD_LOG
      Prints "<n_2xx> <p50_us> <p99_us>" from an h2load --log-file
      (tab-separated: start time µs, HTTP status, response time µs).
      Only 2xx responses are counted; failed streams have status -1.

  report.py markdown META RESULTS_TSV [IDLE_TSV [STRACE_TSV]]
      Prints the Markdown report (bench/RESULTS.md) from the key=value
      META file and the per-run TSV written by run.sh (and the idle-connection
      memory rows and the strace rows, when given).
"""
import math
import sys

from report_lib import fmt, md_row, md_rule, pct, per_req_us, ratio, read_meta, read_tsv

TSV_FIELDS = ("kind proto size target conns streams rate ok failed tool_s wall_s "
              "p50_us p99_us proxy_ticks backend_ticks core_busy_ticks core_softirq_ticks "
              "core_total_ticks").split()

TARGET_LABEL = {"direct": "direct (backend)", "gateway": "phr-gateway",
                "bare": "bare hyper (floor)", "nginx": "nginx", "haproxy": "HAProxy"}
PROTO_LABEL = {"h1": "HTTP/1.1", "h2": "HTTP/2"}
SIZE_LABEL = {"small": "100 B", "64k": "64 KiB"}


def percentile(sorted_vals, p):
    """Nearest-rank percentile (the value below which p% of samples fall)."""
    if not sorted_vals:
        return 0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[rank - 1]


def cmd_percentiles(path):
    durations = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            try:
                status = int(parts[1])
            except ValueError:
                continue
            if 200 <= status < 300:
                durations.append(int(parts[2]))
    durations.sort()
    print(len(durations), percentile(durations, 50), percentile(durations, 99))


def read_rows(path, clk_tck):
    rows = []
    for r in read_tsv(path, TSV_FIELDS):
        ok = int(r["ok"])
        tool_s = float(r["tool_s"]) or 1e-9
        wall_s = float(r["wall_s"]) or 1e-9
        r["rps"] = ok / tool_s
        r["backend_us_req"] = per_req_us(int(r["backend_ticks"]), clk_tck, ok)
        # Share of the proxy core used by other programs: busy (without
        # softirq) minus the proxy's own CPU time; should be ~0.
        core_total = int(r["core_total_ticks"]) or 1
        own = 0 if r["proxy_ticks"] == "NA" else int(r["proxy_ticks"])
        r["core_other"] = max(0, int(r["core_busy_ticks"]) - own) / core_total
        r["core_softirq"] = int(r["core_softirq_ticks"]) / core_total
        if r["proxy_ticks"] == "NA":
            r["proxy_us_req"] = None
            r["proxy_busy"] = None
        else:
            r["proxy_us_req"] = per_req_us(int(r["proxy_ticks"]), clk_tck, ok)
            r["proxy_busy"] = int(r["proxy_ticks"]) / clk_tck / wall_s
        # For "direct" there is no proxy: its CPU column shows the
        # backend's CPU/request instead (marked † in the tables).
        r["cpu_us_req"] = (r["proxy_us_req"] if r["target"] != "direct"
                           else r["backend_us_req"])
        rows.append(r)
    return rows


def warn(*rows):
    return " ⚠" if any(r and r["core_other"] > 0.05 for r in rows) else ""


IDLE_FIELDS = "target proto conns ok failed rss_before rss_held rss_after connect_s open".split()


def idle_section(idle_path, targets):
    """The idle-connection memory table: VmRSS of each proxy before, while it
    holds the idle connections, and after they closed; KiB per connection is
    (held − before) ÷ connections held."""
    rows = {(r["target"], r["proto"]): r for r in read_tsv(idle_path, IDLE_FIELDS)}
    if not rows:
        return []
    out = ["## Idle connections (memory)", "",
           "Each connection: TLS 1.3 handshake, one `GET /small`, then held open and idle "
           "(`bench/idle_conns.py`, on the load core). RSS = VmRSS of the proxy's process tree "
           "(`/proc/PID/status`; nginx: master + worker), read before the connections, 2 s after "
           "the last one answered, and 2 s after all were closed. Still open = connections the "
           "proxy had not closed when the client let go (should be all). KiB/conn = (held − before) ÷ "
           "connections. ÷ nginx compares the held RSS and KiB/conn with nginx's.", "",
           md_row(["Protocol", "Target", "connections", "ok", "failed", "still open", "RSS before MiB",
                   "RSS held MiB", "KiB/conn", "RSS after close MiB", "held ÷ nginx",
                   "KiB/conn ÷ nginx", "connect s"]),
           md_rule("ll" + "r" * 11)]
    for proto in ("h1", "h2"):
        n = rows.get(("nginx", proto))
        for t in targets:
            r = rows.get((t, proto))
            if not r:
                continue
            conns = int(r["conns"]) or 1

            def per_conn(x):
                return (int(x["rss_held"]) - int(x["rss_before"])) / conns

            out.append(md_row([
                PROTO_LABEL[proto], TARGET_LABEL[t], r["conns"], r["ok"], r["failed"], r["open"],
                f"{int(r['rss_before']) / 1024:.0f}", f"{int(r['rss_held']) / 1024:.0f}",
                f"{per_conn(r):.1f}", f"{int(r['rss_after']) / 1024:.0f}",
                fmt(ratio(int(r["rss_held"]), n and int(n["rss_held"]))),
                fmt(ratio(per_conn(r), n and per_conn(n))), r["connect_s"]]))
    out.append("")
    return out


def strace_section(strace_path, rows_by_key, targets):
    """System calls and TLS records per HTTP/2 /small request (run.sh's
    STRACE_REQUESTS), beside the saturation run's CPU per request."""
    rows = {}
    for r in read_tsv(strace_path, ["target", "requests", "summary"]):
        rows[r["target"]] = dict(kv.split("=", 1) for kv in r["summary"].split())
        rows[r["target"]]["requests"] = r["requests"]
    if not rows:
        return []
    out = ["## System calls and TLS records (HTTP/2, 100 B)", "",
           "Per request, over a fixed number of `h2load -n` requests (the saturation run's "
           "connections and streams, TLS handshakes included) with `strace -f` attached to the "
           "proxy: all system calls, epoll waits, writes to clients, TLS records in them (walked "
           "by their headers in the written data) and writes to the backend. CPU µs/req is from "
           "the saturation run without strace.", "",
           md_row(["Target", "requests", "syscalls/req", "epoll/req", "client writes/req",
                   "TLS records/resp", "client bytes/resp", "backend writes/req", "CPU µs/req",
                   "biggest (calls/req)"]),
           md_rule("l" + "r" * 8 + "l")]
    for t in targets:
        r = rows.get(t)
        if not r:
            continue
        sat = rows_by_key.get(("sat", "h2", "small", t))
        out.append(md_row([TARGET_LABEL[t], r["requests"], r["syscalls"], r["epoll"],
                           r["client_writes"], r["client_records"], r["client_bytes"],
                           r["backend_writes"], fmt(sat and sat["cpu_us_req"], "{:.1f}"),
                           r["top"].replace(",", ", ")]))
    out.append("")
    return out


def markdown(meta_path, tsv_path, idle_path=None, strace_path=None):
    meta = read_meta(meta_path)
    clk = int(meta.get("clk_tck", "100"))
    rows = read_rows(tsv_path, clk)
    idx = {(r["kind"], r["proto"], r["size"], r["target"]): r for r in rows}
    targets = [t for t in meta.get("targets", "").split() if t]
    out = []
    w = out.append

    w("# phr-gateway load benchmark — results")
    w("")
    w("Generated by `bench/run.sh` (see `bench/README.md`). **Absolute numbers are "
      "for this one machine; compare targets only as ratios within this run.**")
    w("")
    w(f"- Date: {meta.get('date')}")
    w(f"- Machine: {meta.get('nproc')} CPUs ({meta.get('cpu_model')}), "
      f"{meta.get('mem')} RAM, Linux {meta.get('kernel')}; "
      f"load average before/after: {meta.get('loadavg_before')} / {meta.get('loadavg_after')}")
    w(f"- Under test: {meta.get('gateway')}, {meta.get('rustc')}")
    w(f"- Tools: nginx {meta.get('nginx')}, HAProxy {meta.get('haproxy')}, "
      f"wrk {meta.get('wrk')}, h2load {meta.get('h2load')}, OpenSSL {meta.get('openssl')}")
    w(f"- Pinning: proxy under test on core {meta.get('proxy_cpu')} "
      f"(1 worker thread/process); backend nginx + load generator on core {meta.get('load_cpu')}")
    w(f"- Saturation runs: {meta.get('duration')} s each after a {meta.get('warmup')} s "
      f"warm-up per target and protocol; HTTP/1.1: `wrk -t1 -c{meta.get('h1_connections')}` "
      f"(keep-alive); HTTP/2: `h2load -t1 -c{meta.get('h2_connections')} -m{meta.get('h2_streams')}`")
    w(f"- Moderate load: `h2load --rps` at {meta.get('moderate_rate')} req/s total over "
      f"{meta.get('moderate_connections')} connections, {meta.get('moderate_duration')} s, "
      f"100 B response (HTTP/1.1 via `h2load --h1`)")
    w("- Backend: nginx, plain HTTP/1.1 on 127.0.0.1 (cleartext HTTP/2 port for the direct "
      "HTTP/2 runs), static files `/small` (100 B) and `/64k` (65536 B)")
    for t in ("gateway", "nginx", "haproxy"):
        if f"tls_{t}" in meta:
            w(f"- TLS {TARGET_LABEL[t]}: {meta[f'tls_{t}']}")
    if "gateway_route" in meta:
        w(f"- Gateway: route config `{meta['gateway_route']}` "
          "(open = `phi = false`, `auth.mode = \"none\"`: no token check), default log level; "
          f"it wrote {int(meta.get('gateway_log_bytes', '0')):,} bytes of log in the whole run")
    w(f"- Runs repeated because other programs used the proxy core: "
      f"{meta.get('disturbed_repeats', '0')} (at most {meta.get('disturbed_retries', '?')} "
      "repeats per run)")
    disturbed = [r for r in rows if r["core_other"] > 0.05]
    if disturbed:
        w(f"- **⚠ {len(disturbed)} of {len(rows)} runs were disturbed** by other programs "
          "using the proxy core (marked ⚠ below); their figures are not reliable")
    w(f"- CPU/request: utime+stime of the proxy process tree from `/proc/PID/stat` "
      f"(clock tick = {1000 / clk:.0f} ms) ÷ 2xx responses")
    w("")

    if "gateway" in targets:
        w("## Gateway ratios")
        w("")
        w("Throughput ratio = gateway req/s ÷ other req/s (>1: gateway faster). "
          "CPU ratio = gateway CPU µs/request ÷ other CPU µs/request (>1: gateway "
          "costs more CPU per request). \"direct\" CPU is the backend's own CPU/request.")
        w("")
        others = [t for t in ("direct", "bare", "nginx", "haproxy") if t in targets]
        hdr = ["Protocol", "Response"]
        hdr += [f"req/s ÷ {TARGET_LABEL[t].split(' ')[0]}" for t in others]
        hdr += [f"CPU/req ÷ {TARGET_LABEL[t].split(' ')[0]}" for t in others]
        w(md_row(hdr))
        w(md_rule("l" * len(hdr)))
        for proto in ("h1", "h2"):
            for size in ("small", "64k"):
                g = idx.get(("sat", proto, size, "gateway"))
                if not g:
                    continue
                cells = [PROTO_LABEL[proto], SIZE_LABEL[size]]
                for t in others:
                    o = idx.get(("sat", proto, size, t))
                    cells.append(fmt(ratio(g["rps"], o and o["rps"])) + warn(g, o))
                for t in others:
                    o = idx.get(("sat", proto, size, t))
                    cells.append(fmt(ratio(g["cpu_us_req"], o and o["cpu_us_req"])) + warn(g, o))
                w(md_row(cells))
        w("")

    w("## Saturation runs")
    w("")
    w("Proxy busy = proxy CPU time ÷ wall time of the run (100 % = the proxy "
      "saturated its core; clearly below that, the load-generator core was the "
      "bottleneck and req/s says more about the client than the proxy). Softirq = "
      "kernel network work for the loopback traffic on the proxy core, charged to no "
      "process. Other = the proxy core's use by any other program during the run "
      "(/proc/stat); it should be ~0 %, and rows where it exceeds 5 % are marked ⚠ "
      "(disturbed: rerun on a quiet machine).")
    w("")
    w(md_row(["Protocol", "Response", "Target", "req/s", "p50 ms", "p99 ms", "failed",
              "CPU µs/req", "proxy busy", "softirq", "other", "backend CPU µs/req"]))
    w(md_rule("lll" + "r" * 9))
    for proto in ("h1", "h2"):
        for size in ("small", "64k"):
            for t in targets:
                r = idx.get(("sat", proto, size, t))
                if not r:
                    continue
                cpu = fmt(r["cpu_us_req"], "{:.1f}")
                if t == "direct" and r["cpu_us_req"] is not None:
                    cpu += " †"
                w(md_row([PROTO_LABEL[proto], SIZE_LABEL[size], TARGET_LABEL[t],
                          f"{r['rps']:,.0f}", f"{int(r['p50_us']) / 1000:.2f}",
                          f"{int(r['p99_us']) / 1000:.2f}", r["failed"], cpu,
                          fmt(pct(r["proxy_busy"]), "{:.0f} %"),
                          fmt(pct(r["core_softirq"]), "{:.0f} %"),
                          fmt(pct(r["core_other"]), "{:.0f} %") + warn(r),
                          fmt(r["backend_us_req"], "{:.1f}")]))
    w("")
    w("† direct: no proxy; the backend's CPU/request is shown.")
    w("")

    mod = [r for r in rows if r["kind"] == "moderate"]
    if mod:
        w("## Moderate load (fixed request rate, 100 B)")
        w("")
        w("Latency added = target p99 − direct p99 at the same offered rate and protocol.")
        w("")
        w(md_row(["Protocol", "Target", "offered req/s", "achieved req/s", "p50 µs", "p99 µs",
                  "p99 added vs direct µs", "failed", "CPU µs/req", "other"]))
        w(md_rule("ll" + "r" * 8))
        for proto in ("h1", "h2"):
            d = idx.get(("moderate", proto, "small", "direct"))
            for t in targets:
                r = idx.get(("moderate", proto, "small", t))
                if not r:
                    continue
                added = "–" if (t == "direct" or not d) else \
                    f"{int(r['p99_us']) - int(d['p99_us']):+d}"
                cpu = fmt(r["cpu_us_req"], "{:.1f}")
                if t == "direct" and r["cpu_us_req"] is not None:
                    cpu += " †"
                w(md_row([PROTO_LABEL[proto], TARGET_LABEL[t], r["rate"], f"{r['rps']:,.0f}",
                          r["p50_us"], r["p99_us"], added, r["failed"], cpu,
                          fmt(pct(r["core_other"]), "{:.0f} %") + warn(r)]))
        w("")
    if idle_path:
        out.extend(idle_section(idle_path, targets))
    if strace_path:
        out.extend(strace_section(strace_path, idx, targets))
    print("\n".join(out))


def main(argv):
    if len(argv) == 3 and argv[1] == "percentiles":
        cmd_percentiles(argv[2])
    elif len(argv) in (4, 5, 6) and argv[1] == "markdown":
        markdown(*argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
