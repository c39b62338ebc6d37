"""C-STORE receive benchmarks: dicom-ingest beside DCMTK storescp and Orthanc, in one run.

Scenarios (see benchmarks/README.md): ``throughput`` (one storescu association per target on
512x512 CT and ~40 KB instances), ``nodelay`` (the small workload without TCP_NODELAY in the
sender's environment), ``concurrency`` (four storescu associations at once), ``study`` (a
300-image CT study until it is in Orthanc, through the pipeline or straight), ``rss`` (peak
RSS on a 1 GB instance and under abuse). Every run is repeated, interleaved, and the tables
show medians and each figure's ratio to its reference from the same run.

    .venv/bin/python benchmarks/bench_receive.py [--scenarios ...] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import receive_common
from receive_common import ENV, ENV_DCMTK_DEFAULT, TARGETS, WORKLOADS, Run, ensure_workload
from receive_scenarios import Context, abuse_run, store_run, study_run

SCENARIOS = ("throughput", "nodelay", "concurrency", "study", "rss")
Key = tuple[str, str, str, str]  # scenario, variant, target, workload
MB_PER_MIB = 1.048576
# Orthanc's small workload without TCP_NODELAY stalls on every instance: a reference only.
ORTHANC_NAGLE: Key = ("receive", "no NODELAY", "orthanc", "small")


@dataclass(frozen=True)
class Comparison:
    """A figure beside its reference from the same run, and the target it is held to.

    ``speed``: reference time / figure time (above 1: faster); ``slowdown``: figure time /
    reference time (below 1: faster); ``limit``: figure value / ``target`` (MB of RSS).
    """

    label: str
    figure: Key
    reference: Key | None
    kind: str
    target: float | None = None
    value: str = "seconds"  # or a key of Run.extra
    ref_value: str = "seconds"


def comparisons() -> list[Comparison]:
    def receive(variant: str, target: str, workload: str) -> Key:
        return ("receive", variant, target, workload)

    ing, orth, scp = "dicom-ingest", "orthanc", "storescp"
    out: list[Comparison] = []
    for w, label in (("ct", "512x512 CT"), ("small", "~40 KB")):
        mine = receive("1 assoc", ing, w)
        out.append(Comparison(f"{label}: dicom-ingest vs Orthanc", mine,
                              receive("1 assoc", orth, w), "speed", 1.0))  # fmt: skip
        stretch = 0.5 if w == "ct" else None
        out.append(Comparison(f"{label}: dicom-ingest vs storescp", mine,
                              receive("1 assoc", scp, w), "speed", stretch))  # fmt: skip
    for target, goal in ((ing, 1.5), (orth, None)):
        one, nagle = receive("1 assoc", target, "small"), receive("no NODELAY", target, "small")
        out.append(Comparison(f"~40 KB, no NODELAY vs NODELAY: {target}", nagle, one,
                              "slowdown", goal))  # fmt: skip
        out.append(Comparison(f"~40 KB, 4 associations vs 1: {target}",
                              receive("4 assoc", target, "small"), one, "speed", goal))  # fmt: skip
    pipe, direct = ("study", "pipeline", ing, "study"), ("study", "direct", orth, "study")
    out += [
        Comparison("300 CT in Orthanc: pipeline vs direct (in Orthanc)", pipe, direct,
                   "slowdown", 1.2),
        Comparison("300 CT: pipeline in Orthanc vs direct storescu exit", pipe, direct,
                   "slowdown", None, ref_value="storescu_s"),
        Comparison("300 CT: storescu exit, pipeline vs direct", pipe, direct, "slowdown",
                   None, value="storescu_s", ref_value="storescu_s"),
        # The processes together, each page counted once (PSS); then the largest process's RSS.
        # (The run table's idle and peak columns sum RSS: shared pages once per process.)
        Comparison("peak memory (MB, PSS of all processes), 1.1 GB instance",
                   ("rss", "1 GB instance", ing, "large"), None, "limit", 150.0,
                   value="peak_pss_mb", ref_value="idle_pss_mb"),
        Comparison("peak memory (MB, PSS of all processes), abuse cases",
                   ("rss", "abuse", ing, "abuse"), None, "limit", 200.0,
                   value="peak_pss_mb", ref_value="idle_pss_mb"),
        Comparison("peak RSS (MB), 1.1 GB instance, largest process",
                   ("rss", "1 GB instance", ing, "large"), None, "limit", 150.0,
                   value="largest_peak_mb", ref_value=""),
        Comparison("peak RSS (MB), abuse cases, largest process", ("rss", "abuse", ing, "abuse"),
                   None, "limit", 200.0, value="largest_peak_mb", ref_value=""),
    ]  # fmt: skip
    return out


# --- planning and running --------------------------------------------------------------------


def plan(scenarios: list[str], targets: list[str], workloads: list[str]) -> list[Key]:
    """The runs the chosen scenarios need, each once (a reference may serve several)."""
    keys: list[Key] = []
    pair = [t for t in ("dicom-ingest", "orthanc") if t in targets]
    if "throughput" in scenarios:
        keys += [("receive", "1 assoc", t, w) for w in workloads for t in targets]
    if "nodelay" in scenarios:
        keys += [("receive", v, t, "small") for t in pair for v in ("1 assoc", "no NODELAY")]
    if "concurrency" in scenarios:
        keys += [("receive", v, t, "small") for t in pair for v in ("1 assoc", "4 assoc")]
    if "study" in scenarios:
        keys += [("study", "pipeline", "dicom-ingest", "study")]
        keys += [("study", "direct", "orthanc", "study")]
    if "rss" in scenarios:
        keys += [("rss", "1 GB instance", "dicom-ingest", "large")]
        keys += [("rss", "abuse", "dicom-ingest", "abuse")]
    return list(dict.fromkeys(keys))


def runner(ctx: Context, key: Key) -> Callable[[int], Run]:
    scenario, variant, target, workload = key
    if key == ("rss", "abuse", "dicom-ingest", "abuse"):
        return lambda rep: abuse_run(ctx, rep)
    w = WORKLOADS[workload]
    files = ensure_workload(w, ctx.workdir / "workloads")
    if scenario == "study":
        return lambda rep: study_run(ctx, variant, w, files, rep)
    env = ENV_DCMTK_DEFAULT if variant == "no NODELAY" else ENV
    assocs = 4 if variant == "4 assoc" else 1
    return lambda rep: store_run(
        ctx, variant, target, w, files, rep, env=env, associations=assocs, scenario=scenario
    )


def load() -> dict[str, object]:
    text = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"uptime": text.strip(), "loadavg": list(os.getloadavg())}


# --- report ----------------------------------------------------------------------------------


def value_of(run: Run, name: str) -> float:
    if name == "seconds":
        return run.seconds
    if name == "peak_mb":
        return run.peak_rss_mib * MB_PER_MIB
    if name == "largest_peak_mb":
        return run.extra["largest_process_peak_mib"] * MB_PER_MIB
    if name in ("peak_pss_mb", "idle_pss_mb"):
        return run.extra[name.replace("_mb", "_mib")] * MB_PER_MIB
    return run.extra[name]


def medians(runs: list[Run]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for key in dict.fromkeys(r.key for r in runs):
        group = [r for r in runs if r.key == key]
        seconds = statistics.median(r.seconds for r in group)
        first = group[0]
        extra = {k: statistics.median(r.extra[k] for r in group) for k in first.extra}
        rows.append({
            "scenario": key[0], "variant": key[1], "target": key[2], "workload": key[3],
            "repeats": len(group), "instances": first.instances, "megabytes": first.bytes / 1e6,
            "seconds": seconds, "seconds_all": [round(r.seconds, 3) for r in group],
            "instances_per_s": first.instances / seconds if seconds else 0.0,
            "mb_per_s": first.bytes / 1e6 / seconds if seconds else 0.0,
            "all_ok": all(r.ok for r in group), "accepted": min(r.accepted for r in group),
            "idle_rss_mib": max(r.idle_rss_mib for r in group),
            "peak_rss_mib": max(r.peak_rss_mib for r in group), "extra": extra,
        })  # fmt: skip
    return rows


def _limit_row(c: Comparison, runs: list[Run]) -> dict[str, object] | None:
    """Peak RSS against its limit; the idle RSS of the same process beside it."""
    group = [r for r in runs if r.key == c.figure]
    if not group or c.target is None:
        return None
    peaks = [value_of(r, c.value) for r in group]
    if c.ref_value == "seconds":  # the default: the idle RSS of the same process
        idle = max(r.idle_rss_mib for r in group) * MB_PER_MIB
    elif c.ref_value:
        idle = max(value_of(r, c.ref_value) for r in group)
    else:  # no idle figure of its own
        idle = 0.0
    return {
        "figure": max(peaks), "reference": idle,
        "reference_text": f"idle {idle:.0f}" if idle else "-",
        "ratio": max(peaks) / c.target, "per_repeat": sorted(p / c.target for p in peaks),
        "met": max(peaks) < c.target,
    }  # fmt: skip


def _ratio_row(c: Comparison, runs: list[Run]) -> dict[str, object] | None:
    """Medians of figure and reference; the ratio of the medians, and of each repeat's pair."""
    figs = {r.rep: value_of(r, c.value) for r in runs if r.key == c.figure}
    refs = {r.rep: value_of(r, c.ref_value) for r in runs if r.key == c.reference}
    if not figs or not refs:
        return None
    fig, ref = statistics.median(figs.values()), statistics.median(refs.values())
    pairs = [(figs[k], refs[k]) for k in figs if k in refs]
    speed = c.kind == "speed"
    ratio = ref / fig if speed else fig / ref
    per_rep = sorted(r / f if speed else f / r for f, r in pairs)
    met = None
    if c.target is not None:
        met = ratio >= c.target if speed else ratio <= c.target
    return {
        "figure": fig, "reference": ref, "reference_text": f"{ref:.2f}s", "ratio": ratio,
        "per_repeat": per_rep, "met": met,
    }  # fmt: skip


def compare(runs: list[Run]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for c in comparisons():
        row = _limit_row(c, runs) if c.kind == "limit" else _ratio_row(c, runs)
        if row is not None:
            unit = "MB" if c.kind == "limit" else "s"
            out.append({"comparison": c.label, "kind": c.kind, "target": c.target,
                        "unit": unit, **row})  # fmt: skip
    return out


def print_medians(rows: list[dict[str, object]]) -> None:
    head = f"{'scenario':8} {'variant':13} {'target':12} {'workload':8} {'n':>2} {'inst':>5}"
    head += f" {'s (median)':>10} {'inst/s':>7} {'MB/s':>6} {'ok':>9} {'idle':>5} {'peak':>5}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        ok = f"{r['accepted']}/{r['instances']}" + ("" if r["all_ok"] else "!")
        print(f"{r['scenario']:8} {r['variant']:13} {r['target']:12} {r['workload']:8}"
              f" {r['repeats']:>2} {r['instances']:>5} {r['seconds']:>10.2f}"
              f" {r['instances_per_s']:>7.1f} {r['mb_per_s']:>6.1f} {ok:>9}"
              f" {r['idle_rss_mib']:>5.0f} {r['peak_rss_mib']:>5.0f}")  # fmt: skip
        extra = r["extra"]
        if isinstance(extra, dict) and extra:
            print("    " + ", ".join(f"{k} {v:.2f}" for k, v in extra.items()))
    print("idle/peak: RSS in MiB (VmRSS before sending, VmHWM at the end); n: repeats.")


def print_comparisons(rows: list[dict[str, object]]) -> None:
    head = (f"{'comparison':54} {'figure':>8} {'reference':>9} {'ratio':>6} {'target':>7}"
            f" {'met':>4}  per repeat")  # fmt: skip
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        kind, target = r["kind"], r["target"]
        goal = "-" if target is None else ("≥" if kind == "speed" else "≤") + f"{target:g}"
        if kind == "limit":
            goal = f"<{target:g}MB"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        per_repeat = r["per_repeat"]
        spread = " ".join(f"{x:.2f}" for x in per_repeat) if isinstance(per_repeat, list) else ""
        figure = f"{r['figure']:.2f}{'' if kind == 'limit' else 's'}"
        line = f"{r['comparison']:54} {figure:>8} {r['reference_text']:>9} {r['ratio']:>6.2f}"
        print(f"{line} {goal:>7} {met:>4}  {spread}")
    print("ratio: speed = reference time / figure time (above 1: dicom-ingest faster);")
    print("slowdown = figure time / reference time; RSS = peak MB / limit. Medians of repeats.")


def ingest_log_problems(runs: list[Run]) -> Counter[str]:
    """WARNING and worse in dicom-ingest's JSON logs, by severity and message."""
    found: Counter[str] = Counter()
    for run in runs:
        if run.target != "dicom-ingest" or not run.log:
            continue
        for line in Path(run.log).read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                found[f"(not JSON) {line[:100]}"] += 1
                continue
            if entry.get("severity") in ("WARNING", "ERROR", "CRITICAL"):
                text = re.sub(r"\d+", "N", str(entry.get("message")))
                found[f"[{run.variant}] {entry['severity']} {text[:100]}"] += 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dicom-ingest-bench"))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--workloads", default="ct,small", help="throughput scenario's workloads"
                        " (ct, small, study, large)")  # fmt: skip
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians")
    parser.add_argument("--rss-repeat", type=int, default=1, help="runs of the rss scenario")
    parser.add_argument(
        "--orthanc-nagle-repeat",
        type=int,
        default=1,
        help="runs of Orthanc without TCP_NODELAY (a reference; ~95 s each)",
    )
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--max-pdu", type=int, help="max receive PDU for every receiver")
    parser.add_argument(
        "--store-dir", type=Path,
        help="the study's Orthanc (the DICOM store, both variants) keeps its files under this"
        " directory, e.g. on a tmpfs, instead of on the spool's disk",
    )  # fmt: skip
    parser.add_argument(
        "--receive-processes", type=int, default=0,
        help="dicom-ingest's --receive_processes (0, its default: one per core; 1: associations"
        " served in its own process)",
    )  # fmt: skip
    parser.add_argument(
        "--ingest-flag", action="append", default=[], metavar="--FLAG=VALUE",
        help="one more flag for every dicom-ingest run (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    receive_common.INGEST_ARGS[:] = ["--receive_processes", str(args.receive_processes)]
    receive_common.INGEST_ARGS += args.ingest_flag
    scenarios = [s for s in args.scenarios.split(",") if s in SCENARIOS]
    targets = [t for t in args.targets.split(",") if t in TARGETS]
    workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
    logs = args.workdir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True)
    ctx = Context(args.workdir, logs, args.max_pdu, args.store_dir)
    keys = plan(scenarios, targets, workloads)
    jobs = {key: runner(ctx, key) for key in keys}  # generates the workloads first
    shutil.rmtree(ctx.scratch, ignore_errors=True)  # left by a run that did not finish
    os.sync()
    before = load()
    print(f"load before: {before['uptime']}", flush=True)
    runs: list[Run] = []
    repeats = {key: args.rss_repeat if key[0] == "rss" else args.repeat for key in keys}
    repeats[ORTHANC_NAGLE] = min(args.repeat, args.orthanc_nagle_repeat)
    for rep in range(max(repeats.values(), default=0)):
        for key, job in jobs.items():
            if rep >= repeats[key]:
                continue
            # What the previous run left in the page cache is written back now, not during
            # this run: each run starts with no other run's writeback competing for the disk.
            os.sync()
            run = job(rep)
            runs.append(run)
            print(f"{rep} {' / '.join(key):50} {run.seconds:8.2f} s  accepted"
                  f" {run.accepted}/{run.instances}{'' if run.ok else ' !'}"
                  f"  peak RSS {run.peak_rss_mib:.0f} MiB", flush=True)  # fmt: skip
    after = load()
    shutil.rmtree(ctx.scratch, ignore_errors=True)
    rows, table = medians(runs), compare(runs)
    print_medians(rows)
    print_comparisons(table)
    print(f"\nload before: {before['uptime']}\nload after:  {after['uptime']}")
    problems = ingest_log_problems(runs)
    print(f"\ndicom-ingest log, WARNING and worse ({logs}):")
    for text, n in problems.most_common(20) or [("none", 0)]:
        print(f"  {n:6} x {text}")
    if args.json:
        result = {"load_before": before, "load_after": after, "medians": rows,
                  "comparisons": table, "runs": [asdict(r) for r in runs],
                  "log_problems": problems}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
