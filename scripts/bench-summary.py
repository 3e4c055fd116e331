#!/usr/bin/env python3
"""Prints a benchmark set's figures as the Markdown tables of docs/performance.md.

    scripts/bench-summary.py DIR NAME [--check DOCUMENT]
    scripts/bench-summary.py DIR --spells NAME...

reads DIR/NAME-{postgres,embedded}.json (the sweeps) and DIR/NAME-70pct-stepup-rN-<backend>.json
(the runs at 70 % of the peak) as `scripts/bench-set.sh NAME` writes them, and prints one table for
the sweeps, one for the runs and, where the harness measured them, one for what the machine made
the runs' calls wait for, one for the runs at 70 % second by second and one for the machine's speed
at the time (`--spells` prints that one for several sets), in the document's format, so that a
set's figures are copied, not retyped. A file that is missing is left out. With `--check
DOCUMENT` nothing is printed but what is missing, the set's files (both sweeps, the same rounds on
each backend) or the rows DOCUMENT lacks, and the exit status says whether anything was:
`scripts/test.sh` checks so that the latest set kept in docs/performance/ is the one its document
shows. A NAME with no sweep of step-ups and no run at 70 % (a run of `WhoAmI` alone) is no set:
that is said, with exit status 2.
"""

import glob
import json
import os
import re
import sys

BACKENDS = (("postgres", "Postgres + Redis"), ("embedded", "embedded"))
RPCS = ("CreateLoginFlow", "SubmitLoginCode", "WhoAmI")
# The target for each RPC's p99 at 70 % of the peak.
TARGET_MS = 20.0


def grouped(number, digits=1):
    return f"{number:,.{digits}f}"


def span(values, unit):
    """The range of `values`; "-" where the set's harness did not measure them yet (early sets)."""
    if not values or any(value is None for value in values):
        return "-"
    low, high = round(min(values)), round(max(values))
    return f"{low}–{high} {unit}" if low != high else f"{low} {unit}"


def figure(value, form):
    return "-" if value is None else format(value, form)


def sweep_row(label, report):
    levels = report["levels"]
    stepups = [level for level in levels if level["mode"] == "stepup"]
    best_stepup = max((level["per_second"] for level in stepups), default=None)
    rates = " / ".join(
        f"**{grouped(level['per_second'])}**"
        if level["per_second"] == best_stepup
        else grouped(level["per_second"])
        for level in stepups
    ) or "-"

    def best(mode):
        reached = [level["per_second"] for level in levels if level["mode"] == mode]
        return grouped(max(reached)) if reached else "-"

    usage = [level["usage"] for level in levels]
    high_water = max(u.get("server_peak_rss_mib") or 0 for u in usage)
    return (
        f"| {label} | {rates} | {best('whoami')} | {best('code')} "
        f"| {span([level.get('longest_pause_ms') for level in levels], 'ms')} "
        f"| {span([u.get('server_rss_mib') for u in usage], 'MiB')} | {high_water:.1f} MiB |"
    )


def paced_row(label, run, report):
    peak, paced = report["levels"][0], report["levels"][-1]
    cells = []
    for rpc in RPCS:
        figures = paced["rpcs"][rpc]
        server = figures.get("server") or {}
        inside = f" ({server['p99_ms']:.1f})" if "p99_ms" in server else ""
        cells.append(f"{figures['p99_ms']:.1f}{inside} ms")
    usage = paced["usage"]
    return (
        f"| {label} | {run} | {grouped(peak['per_second'])} | {grouped(paced['per_second'])} "
        f"| {' | '.join(cells)} | {usage['machine_cpu_busy'] * 100:.0f} % "
        f"| {figure(paced.get('longest_pause_ms'), '.0f')} ms "
        f"| {figure(usage.get('server_peak_rss_mib'), '.1f')} MiB |"
    )


def stall_rows(label, run, report):
    """The run's levels with what the machine made every call wait for (none before the probes)."""
    rows = []
    for level in report["levels"]:
        usage = level["usage"]
        flush, late = usage.get("disk_flush_ms"), usage.get("wake_up_late_ms")
        if not flush or not late:
            continue
        worst = max(figures["p99_ms"] for rpc, figures in level["rpcs"].items() if rpc in RPCS)
        rows.append(
            f"| {label} | {run} | {'70 %' if level.get('offered_per_second') else 'peak'} "
            f"| {worst:.1f} ms | {usage['machine_cpu_busy'] * 100:.0f} % "
            f"| {flush['p50_ms']:.1f} / {flush['p99_ms']:.1f} / {flush['max_ms']:.1f} ms "
            f"| {late['p50_ms']:.2f} / {late['p99_ms']:.1f} / {late['max_ms']:.1f} ms |"
        )
    return rows


def second_row(label, run, report):
    """The run at 70 % second by second (none before the harness kept its seconds)."""
    paced = report["levels"][-1]
    seconds = paced.get("seconds")
    if not seconds:
        return None
    by_second = sorted(second["worst_p99_ms"] for second in seconds)
    slowest = max(seconds, key=lambda second: second["worst_p99_ms"])
    over = sum(1 for p99 in by_second if p99 > TARGET_MS)
    worst = max(paced["rpcs"][rpc]["p99_ms"] for rpc in RPCS)

    def ms(value):
        return "-" if value is None else f"{value:.1f} ms"

    return (
        f"| {label} | {run} | {worst:.1f} ms | {over} of {len(seconds)} "
        f"| {by_second[(len(by_second) - 1) // 2]:.1f} / {slowest['worst_p99_ms']:.1f} ms "
        f"| {slowest['finished']:,} | {ms(slowest.get('disk_flush_max_ms'))} "
        f"| {ms(slowest.get('wake_up_late_max_ms'))} |"
    )


SPELL_HEADER = (
    "| set | made (UTC) | backend | one user: step-ups/s | machine CPU per step-up "
    "| server CPU per step-up | late wake-up p99 | machine loop | p99 at 70 % under 20 ms |",
    "|---|---|---|---:|---:|---:|---:|---:|---|",
)


def spell_rows(folder, name):
    """The machine's speed when the set was made: its sweeps' first level, one user, is the same
    work in every set, so what it cost the machine and the server shows the spell. Beside it, how
    many of the set's runs met the p99 at 70 % of the peak."""
    rows = []
    for backend, label in BACKENDS:
        path = os.path.join(folder, f"{name}-{backend}.json")
        if not os.path.exists(path):
            continue
        report = load(path)
        one = report["levels"][0]
        usage = one["usage"]
        late, loop = usage.get("wake_up_late_ms"), usage.get("machine_loop_ms")
        if one["concurrency"] != 1 or not late or loop is None:
            continue
        cores = report["machine"]["cpus"]
        machine_us = usage["machine_cpu_busy"] * cores / one["per_second"] * 1e6
        server_us = usage["server_cpu_cores"] / one["per_second"] * 1e6
        worst = [
            max(load(run)["levels"][-1]["rpcs"][rpc]["p99_ms"] for rpc in RPCS)
            for _, run in runs(folder, name, backend)
        ]
        met = (
            f"{sum(1 for p99 in worst if p99 < TARGET_MS)} of {len(worst)} "
            f"({min(worst):.1f}–{max(worst):.1f} ms)"
            if worst
            else "-"
        )
        made = report["started_at"]
        rows.append(
            f"| `{name}` | {made[5:10]} {made[11:16]} | {label} | {grouped(one['per_second'])} "
            f"| {grouped(machine_us, 0)} µs | {grouped(server_us, 0)} µs "
            f"| {late['p99_ms']:.2f} ms | {loop:.2f} ms | {met} |"
        )
    return rows


def load(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def runs(folder, name, backend):
    """The set's runs at 70 % on `backend`, as (round, path), in order."""
    pattern = os.path.join(folder, f"{glob.escape(name)}-70pct-stepup-r*-{backend}.json")
    return sorted(
        (int(re.search(r"-r(\d+)-", os.path.basename(path)).group(1)), path)
        for path in glob.glob(pattern)
    )


def incomplete(folder, name):
    """What the set lacks of a whole one: both sweeps, and as many runs on each backend."""
    lacking = [
        f"{name}-{backend}.json"
        for backend, _ in BACKENDS
        if not os.path.exists(os.path.join(folder, f"{name}-{backend}.json"))
    ]
    rounds = {
        backend: [number for number, _ in runs(folder, name, backend)] for backend, _ in BACKENDS
    }
    if not all(rounds.values()) or len({tuple(numbers) for numbers in rounds.values()}) > 1:
        lacking.append(f"the same rounds at 70 % on each backend (found {rounds})")
    return lacking


def is_set(folder, name):
    """Whether anything of a set by that name is in the folder: a sweep (a run with step-up
    levels; a run of `WhoAmI` alone, such as `before-70pct-whoami`, is not one), or a run at 70 %.
    """
    for backend, _ in BACKENDS:
        path = os.path.join(folder, f"{name}-{backend}.json")
        if runs(folder, name, backend) or (
            os.path.exists(path)
            and any(level["mode"] == "stepup" for level in load(path)["levels"])
        ):
            return True
    return False


def tables(folder, name):
    """The set's two tables, line by line."""
    lines = [
        "| sweep | step-ups/s at 1 / 4 / 16 / 64 / 128 users | `WhoAmI`/s, best "
        "| `code`/s, best | longest pause | RSS | high-water mark |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, label in BACKENDS:
        path = os.path.join(folder, f"{name}-{backend}.json")
        if os.path.exists(path):
            lines.append(sweep_row(label, load(path)))
    lines += [
        "",
        "| backend | run | peak/s | at 70 %/s | `CreateLoginFlow` p99 (server) "
        "| `SubmitLoginCode` p99 (server) | `WhoAmI` p99 (server) | machine "
        "| longest pause | high-water mark |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    stalls, seconds = [], []
    for backend, label in BACKENDS:
        for number, path in runs(folder, name, backend):
            report = load(path)
            lines.append(paced_row(label, f"r{number}", report))
            stalls += stall_rows(label, f"r{number}", report)
            row = second_row(label, f"r{number}", report)
            if row:
                seconds.append(row)
    if stalls:
        lines += [
            "",
            "| backend | run | level | worst p99 | machine | disk flush p50 / p99 / max "
            "| late wake-up p50 / p99 / max |",
            "|---|---|---|---:|---:|---:|---:|",
            *stalls,
        ]
    if seconds:
        lines += [
            "",
            f"| backend | run | worst p99 at 70 % | seconds over {TARGET_MS:.0f} ms "
            "| worst p99 by second, median / slowest | calls in the slowest second "
            "| its slowest disk flush | its latest wake-up |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *seconds,
        ]
    spells = spell_rows(folder, name)
    if spells:
        lines += ["", *SPELL_HEADER, *spells]
    return lines


def main(arguments):
    if len(arguments) == 2:
        folder, name = arguments
        if not is_set(folder, name):
            print(
                f"{folder} holds no set {name}: no {name}-<backend>.json with step-up "
                f"levels and no {name}-70pct-stepup-r<N>-<backend>.json run",
                file=sys.stderr,
            )
            return 2
        print("\n".join(tables(folder, name)))
        return 0
    if len(arguments) >= 3 and arguments[1] == "--spells":
        folder, names = arguments[0], arguments[2:]
        rows = [row for name in names for row in spell_rows(folder, name)]
        print("\n".join([*SPELL_HEADER, *rows]))
        return 0
    if len(arguments) == 4 and arguments[2] == "--check":
        folder, name, _, document = arguments
        with open(document, encoding="utf-8") as file:
            shown = set(file.read().splitlines())
        # A file gone would take its row out of the check with it.
        lacking = incomplete(folder, name)
        for what in lacking:
            print(f"{folder} lacks {what}", file=sys.stderr)
        rows = [line for line in tables(folder, name) if line and not line.startswith("|---")]
        missing = [row for row in rows if row not in shown]
        for row in missing:
            print(f"{document} lacks: {row}", file=sys.stderr)
        return 1 if lacking or missing else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
