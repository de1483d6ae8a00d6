#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the benchmark guest output (results.log) into JSON, Markdown and SVG.

  report.py RESULTS.LOG --out PREFIX [--profile P] [--secs S] [--module M]
            [--git G] [--host-load L] [--params P]

Reads the BENCH / BENCHFIO lines written by bench/guest/bench-*.sh and
writes PREFIX.json (every raw repetition, and per point the median, min,
max, spread and the ratio this/upstream), PREFIX.md (tables and the goal
checks) and PREFIX.svg (the ratios as a bar chart, drawn by hand: no
matplotlib needed). Every ratio is this module's median over upstream's;
"speedup" orients it so that > 1 means this module is better (throughput
as is, times, latencies and memory inverted).
"""
import argparse
import json
import statistics
import sys
from collections import OrderedDict

MEASURED = {"impl", "rep", "secs", "slab_kb", "vmalloc_kb", "memfree_kb",
            "status", "slab_top", "used_sectors", "ios", "window_s",
            "bw_mib", "p50_us", "p99_us"}
# Kernel flavors (scripts/kernel.sh KERNEL_FLAVOR), as the report describes them.
KERNELS = {"bench": "no lock or memory debugging, kernel/bench.config",
           "test": "the test kernel: lockdep, debug objects, KUnit"}

# metric -> (unit, higher is better)
METRICS = {
    "bw_mib": ("MiB/s", True), "iops": ("IOPS", True),
    "p50_us": ("us", False), "p99_us": ("us", False),
    "mib_s": ("MiB/s", True), "secs": ("s", False),
    "bytes_per_exc": ("B", False), "memfree_per_exc": ("B", False),
    "flushes_per_kio": ("flushes/1000 I/Os", False),
}


def fio_metrics(meta, fio, flushes=None):
    job = fio["jobs"][0]
    d = job["read"] if "read" in meta.get("rw", "") else job["write"]
    # Total latency (submission + completion) where fio reports it: an
    # implementation that works in the submitting thread (upstream's
    # origin path splits a 256K write into 64 chunk bios there) would
    # look fast by completion latency alone.
    pct = d.get("lat_ns", {}).get("percentile") or d.get("clat_ns", {}).get("percentile", {})
    m = {"bw_mib": d["bw"] / 1024.0, "iops": d["iops"]}
    if pct:
        m["p50_us"] = pct.get("50.000000", 0) / 1000.0
        m["p99_us"] = pct.get("99.000000", 0) / 1000.0
    # Device flushes per 1000 I/Os (the guest's virtual disks; each is a
    # host fdatasync): what most commit-bound figures come down to.
    ios = d.get("total_ios", 0)
    if flushes is not None and ios:
        m["flushes_per_kio"] = flushes * 1000.0 / ios
    return m


def parse(path):
    recs, errors = [], []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        try:
            if line.startswith("BENCH "):
                meta = json.loads(line[6:])
                m = {}
                if meta["test"] in ("raw_copy", "merge"):
                    m["mib_s"] = meta["mib"] / meta["secs"]
                    m["secs"] = meta["secs"]
                elif meta["test"] == "merge_load":
                    # fio during the merge: only the I/Os completed in its window.
                    m = {k: meta[k] for k in ("bw_mib", "p50_us", "p99_us")}
                elif meta["test"] == "activate":
                    m["secs"] = meta["secs"]
                    n = meta["exceptions"]
                    m["bytes_per_exc"] = (meta["slab_kb"] + meta["vmalloc_kb"]) * 1024.0 / n
                    m["memfree_per_exc"] = meta["memfree_kb"] * 1024.0 / n
                recs.append((meta, m))
            elif line.startswith("BENCHFIO "):
                a, b = line[9:].split("\t", 1)
                meta = json.loads(a)
                flushes = meta.pop("disk_flushes", None)
                if meta["test"] == "merge":
                    meta["test"] = "merge_load"
                    for k in ("mib", "used_sectors"):
                        meta.pop(k, None)
                recs.append((meta, fio_metrics(meta, json.loads(b[b.index('{'):]), flushes)))
            elif line.startswith("BENCHERR") or line.startswith("FAIL"):
                errors.append(line[:300])
        except (ValueError, KeyError, IndexError) as e:
            errors.append(f"unparsable ({e}): {line[:200]}")
    return recs, errors


def key_of(meta):
    return tuple((k, meta[k]) for k in sorted(meta) if k not in MEASURED)


def stats(vals):
    if not vals:
        return None
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "n": len(vals),
            "spread_pct": (max(vals) - min(vals)) / med * 100 if med else 0.0,
            "values": vals}


def aggregate(recs):
    points = OrderedDict()
    for meta, m in recs:
        p = points.setdefault(key_of(meta), {"point": dict(key_of(meta)), "impls": {}})
        for name, v in m.items():
            p["impls"].setdefault(meta["impl"], {}).setdefault(name, []).append(v)
        if "slab_top" in meta:
            p.setdefault("slab_top", {}).setdefault(meta["impl"], []).append(meta["slab_top"])
        if "status" in meta:
            p.setdefault("status", {})[meta["impl"]] = meta["status"]
    out = []
    for p in points.values():
        res = {"point": p["point"], "metrics": {}}
        for k in ("slab_top", "status"):
            if k in p:
                res[k] = p[k]
        names = sorted({n for i in p["impls"].values() for n in i})
        for n in names:
            e = {i: stats(p["impls"][i].get(n, [])) for i in p["impls"]}
            up, rs = e.get("upstream"), e.get("rs")
            if up and rs and up["median"] and rs["median"]:
                e["ratio"] = rs["median"] / up["median"]
                e["speedup"] = e["ratio"] if METRICS[n][1] else 1 / e["ratio"]
            res["metrics"][n] = e
        out.append(res)
    return out


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3f}"


def cell(s):
    return f"{fmt(s['median'])} ±{s['spread_pct']:.0f}%" if s else "-"


def chunk_k(c):
    return f"{c // 2}K" if c else "-"


def label(p):
    t = p["test"]
    if t in ("origin_write", "snap_io", "linear"):
        s = f"{p['rw']} {p['bs'] // 1024}K qd{p['qd']}"
        if t == "origin_write":
            s += f", {p['snaps']} snap" + ("s" if p["snaps"] != 1 else "")
            if p["snaps"]:
                s += f", chunk {chunk_k(p['chunk'])}, pass {p['pass']}"
        elif t == "snap_io":
            s += f", chunk {chunk_k(p['chunk'])}"
        return s
    if t in ("merge", "merge_load"):
        thr = p.get("throttle", 100)
        return (f"{p['layout']} COW, {p['load']} origin, chunk {chunk_k(p['chunk'])}"
                + (f", throttle {thr}%" if thr != 100 else ""))
    if t == "activate":
        return f"{p['layout']} COW, {p['exceptions']} exceptions"
    if t == "raw_copy":
        return f"dd {p['mib']} MiB vdb -> vda, 1 MiB O_DIRECT, written source, fdatasync"
    return json.dumps(p)


SECTIONS = [
    ("origin_write", "1. Origin writes", ["bw_mib", "p50_us", "p99_us", "flushes_per_kio"]),
    ("snap_io", "2. Snapshot I/O (one snapshot)", ["bw_mib", "p50_us", "p99_us", "flushes_per_kio"]),
    ("merge", "3. Merge throughput (loading snapshot-merge until used == metadata)", ["mib_s"]),
    ("merge_load", "3b. fio (4K random writes, qd 1) on the merging device: the I/Os completed while the merge ran", ["bw_mib", "p50_us", "p99_us"]),
    ("activate", "4. Activation (dmsetup create of the snapshot) and kernel memory per exception", ["secs", "bytes_per_exc", "memfree_per_exc"]),
]


def goals(points):
    """The issue's goals, each with the figures it rests on."""
    g = []
    # (iops duplicates bw_mib; the MemFree drop is informative only: page
    # cache and per-CPU lists move it by more than the figure itself; flush
    # counts explain figures rather than being one)
    sp = [(label(p["point"]) + " " + n, e["speedup"]) for p in points
          for n, e in p["metrics"].items()
          if "speedup" in e and n not in ("iops", "memfree_per_exc", "flushes_per_kio")]
    bad = [(lbl, s) for lbl, s in sp if s < 1.0]
    g.append({"goal": ">= 1.0x everywhere (speedup of every figure)",
              "met": not bad and bool(sp),
              "detail": f"{len(sp) - len(bad)} of {len(sp)} figures >= 1.0x; worst: "
                        + ", ".join(f"{lbl} {s:.2f}x" for lbl, s in sorted(bad, key=lambda x: x[1])[:5])
              if bad else f"all {len(sp)} figures >= 1.0x"})
    fw = [(label(p["point"]), p["metrics"]["bw_mib"].get("speedup")) for p in points
          if p["point"]["test"] == "origin_write" and p["point"].get("snaps") == 4
          and p["point"].get("pass") == 1]
    fw = [x for x in fw if x[1] is not None]
    g.append({"goal": ">= 2x first-pass origin write throughput with 4 snapshots",
              "met": bool(fw) and all(s >= 2 for _, s in fw),
              "detail": "; ".join(f"{lbl}: {s:.2f}x" for lbl, s in fw) or "not measured"})
    # The goals are about the unthrottled merge (snapshot_copy_throttle 100).
    mg = [(label(p["point"]), p["metrics"]["mib_s"]) for p in points if p["point"]["test"] == "merge"
          and p["point"].get("throttle", 100) == 100]
    raw = [p["metrics"]["mib_s"].get("none") for p in points if p["point"]["test"] == "raw_copy"]
    raw = raw[0]["median"] if raw and raw[0] else None
    g.append({"goal": ">= 2x merge throughput",
              "met": bool(mg) and all(e.get("ratio", 0) >= 2 for _, e in mg),
              "detail": "; ".join(f"{lbl}: {e['ratio']:.2f}x" for lbl, e in mg if "ratio" in e) or "not measured"})
    if raw:
        # The raw copy is one sequential dd on idle disks: the ceiling of
        # the sequential COW's idle merge (a random COW's merge copies
        # scattered chunks; under fio the disks are shared).
        seq = [(label(p["point"]), p["metrics"]["mib_s"]) for p in points if p["point"]["test"] == "merge"
               and p["point"].get("layout") == "seq" and p["point"].get("load") == "idle"
               and p["point"].get("throttle", 100) == 100]
        g.append({"goal": f">= half the raw copy bandwidth ({fmt(raw)} MiB/s) for the sequential COW's idle merge",
                  "met": bool(seq) and all(e["rs"]["median"] >= raw / 2 for _, e in seq if e.get("rs")),
                  "detail": "; ".join(f"{lbl}: {e['rs']['median'] / raw:.2f} of raw" for lbl, e in seq if e.get("rs"))
                  or "not measured"})
    ac = [(label(p["point"]), p["metrics"]["secs"]) for p in points if p["point"]["test"] == "activate"]
    g.append({"goal": ">= 3x faster activation",
              "met": bool(ac) and all(e.get("speedup", 0) >= 3 for _, e in ac),
              "detail": "; ".join(f"{lbl}: {e['speedup']:.2f}x" for lbl, e in ac if "speedup" in e) or "not measured"})
    me = [(label(p["point"]), p["metrics"]["bytes_per_exc"]) for p in points
          if p["point"]["test"] == "activate" and p["point"]["layout"] == "seq"]
    g.append({"goal": "<= half the kernel memory per exception (sequential COW)",
              "met": bool(me) and all(0 < e.get("ratio", 9) <= 0.5 for _, e in me),
              "detail": "; ".join(f"{lbl}: {fmt(e['rs']['median'])} B vs {fmt(e['upstream']['median'])} B = {e['ratio']:.2f}x"
                                  for lbl, e in me if "ratio" in e) or "not measured"})
    return g


def markdown(doc):
    pts = doc["points"]
    L = [f"# dm-snapshot benchmark, {doc['profile']} profile, {doc['date']}", ""]
    L.append(f"Run: `scripts/bench.sh {doc['profile']}` ({doc['secs']} s wall), git {doc['git']}, "
             f"module md5 {doc['module']}, host load before the run {doc['host_load']}. "
             f"Parameters: `{doc['params']}`.")
    L.append("")
    L.append("Each cell: median of the repetitions ± spread ((max - min) / median). "
             "\"this/up\" is this module's median over upstream's; for µs, s and bytes lower is "
             "better, for MiB/s higher. Latencies are fio's total latency percentiles (submission to completion; 3b: from fio's per-I/O log). "
             f"The VM is QEMU TCG (no KVM) on a 2-CPU host with the {doc.get('kernel', '?')} kernel "
             f"({KERNELS.get(doc.get('kernel'), 'see scripts/kernel.sh')}): absolute numbers are far below "
             "real hardware and noisy; ratios are the figures to read.")
    if doc.get("note"):
        L += ["", doc["note"]]
    L += ["", "## Goals", "", "| goal | met | figures |", "|---|---|---|"]
    for g in doc["goals"]:
        L.append(f"| {g['goal']} | {'yes' if g['met'] else '**no**'} | {g['detail']} |")
    lim = [p for p in pts if p["point"]["test"] in ("raw_copy", "linear")]
    if lim:
        L += ["", "## 5. Physical limits (no snapshot module)", "",
              "| point | MiB/s | p50 µs | p99 µs |", "|---|---|---|---|"]
        for p in lim:
            m = p["metrics"]
            g = lambda n: cell(m[n]["none"]) if n in m else "-"
            L.append(f"| {p['point']['test']}: {label(p['point'])} | {g('bw_mib') if 'bw_mib' in m else g('mib_s')} | {g('p50_us')} | {g('p99_us')} |")
    for test, title, names in SECTIONS:
        sel = [p for p in pts if p["point"]["test"] == test]
        if not sel:
            continue
        L += ["", f"## {title}", ""]
        hdr = "| point |"
        for n in names:
            u = METRICS[n][0]
            nm = {"bytes_per_exc": "slab+vmalloc B/exception", "memfree_per_exc": "MemFree drop B/exception",
                  "secs": "time s", "mib_s": "MiB/s", "bw_mib": "MiB/s",
                  "flushes_per_kio": "disk flushes per 1000 I/Os"}.get(n, f"{n.split('_')[0]} {u}")
            hdr += f" {nm} upstream | {nm} this | this/up |"
        L += [hdr, "|---|" + "---|---|---|" * len(names)]
        for p in sel:
            row = f"| {label(p['point'])} |"
            for n in names:
                e = p["metrics"].get(n, {})
                r = f"{e['ratio']:.2f}" if "ratio" in e else "-"
                if "speedup" in e and e["speedup"] < 1.0 and n != "flushes_per_kio":
                    r = f"**{r}**"
                row += f" {cell(e.get('upstream'))} | {cell(e.get('rs'))} | {r} |"
            L.append(row)
        if test == "activate":
            for p in sel:
                for impl, tops in p.get("slab_top", {}).items():
                    L.append(f"\n{label(p['point'])}, {impl}: status `{p.get('status', {}).get(impl, '')}`, "
                             f"slab caches that grew (KiB): {tops[0] or 'none > 256 KiB'}")
    if doc["errors"]:
        L += ["", "## Errors", ""] + [f"- `{e}`" for e in doc["errors"]]
    L.append("")
    return "\n".join(L)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(doc):
    """Horizontal bars: the speedup (> 1: this module better) of each
    point's main figure, on a log scale from 1/8x to 8x."""
    import math
    main = {"origin_write": "bw_mib", "snap_io": "bw_mib", "merge": "mib_s",
            "merge_load": "p99_us", "activate": "secs"}
    rows = []
    for p in doc["points"]:
        t = p["point"]["test"]
        for n in ([main[t]] if t in main else []) + (["bytes_per_exc"] if t == "activate" else []):
            e = p["metrics"].get(n, {})
            if "speedup" in e:
                what = {"bw_mib": "MiB/s", "mib_s": "MiB/s", "p99_us": "p99", "secs": "time",
                        "bytes_per_exc": "memory/exception"}[n]
                rows.append((f"{t}: {label(p['point'])} ({what})", e["speedup"]))
    lw, bw, rh, top = 470, 420, 16, 50
    W, H = lw + bw + 70, top + rh * len(rows) + 40
    lo, hi = math.log(1 / 8), math.log(8)
    x = lambda v: lw + (min(max(math.log(v), lo), hi) - lo) / (hi - lo) * bw
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="10" y="20" font-size="14" font-weight="bold">{esc("dm-snapshot-rs vs upstream dm-snapshot: speedup (> 1 = this module better), " + doc["profile"] + " profile " + doc["date"])}</text>',
         f'<text x="10" y="36" fill="#555">median of {doc["reps"]} repetitions each; log scale; QEMU TCG, {esc(doc.get("kernel", "?"))} kernel</text>']
    for v in (0.125, 0.25, 0.5, 1, 2, 4, 8):
        xv = x(v)
        o.append(f'<line x1="{xv:.1f}" y1="{top - 4}" x2="{xv:.1f}" y2="{top + rh * len(rows)}" stroke="{"#000" if v == 1 else "#ddd"}"/>')
        o.append(f'<text x="{xv:.1f}" y="{top + rh * len(rows) + 14}" text-anchor="middle">{v:g}x</text>')
    for i, (lbl, s) in enumerate(rows):
        y = top + i * rh
        x0, x1 = sorted((x(1), x(s)))
        col = "#2a7" if s >= 1 else "#d43"
        o.append(f'<text x="{lw - 6}" y="{y + rh - 4}" text-anchor="end">{esc(lbl)}</text>')
        o.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" height="{rh - 4}" fill="{col}"/>')
        o.append(f'<text x="{lw + bw + 8}" y="{y + rh - 4}" fill="#333">{s:.2f}x</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="?")
    ap.add_argument("--secs", default="?")
    ap.add_argument("--module", default="?")
    ap.add_argument("--git", default="?")
    ap.add_argument("--host-load", default="?")
    ap.add_argument("--params", default="")
    ap.add_argument("--note", default="")
    ap.add_argument("--kernel", default="test", help="kernel flavor the VM ran (scripts/kernel.sh)")
    ap.add_argument("--date", default=None)
    a = ap.parse_args()
    recs, errors = parse(a.log)
    if not recs:
        sys.exit(f"report: no BENCH lines in {a.log}")
    import datetime
    points = aggregate(recs)
    doc = {"profile": a.profile, "date": a.date or datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
           "secs": a.secs, "module": a.module, "git": a.git, "host_load": a.host_load,
           "params": a.params, "note": a.note, "kernel": a.kernel,
           "reps": max(len(s["values"]) for p in points for e in p["metrics"].values()
                       for k, s in e.items() if isinstance(s, dict)),
           "points": points, "errors": errors}
    doc["goals"] = goals(points)
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(markdown(doc))
    with open(a.out + ".svg", "w") as f:
        f.write(svg(doc))
    for g in doc["goals"]:
        print(f"report: {'MET ' if g['met'] else 'MISS'} {g['goal']}: {g['detail']}")
    print(f"report: {a.out}.json .md .svg ({len(recs)} measurements, {len(errors)} errors)")


if __name__ == "__main__":
    main()
