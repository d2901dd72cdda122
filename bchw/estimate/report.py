"""The estimate's report: a Markdown file and PNG plots beside report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bchw.outputs import write_bytes_atomic

NAMES = {"binary": "binary", "mac": "MAC"}


def num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


# How the report names the binary design's folded trees (--adder-tree).
TREE_WORDS = {
    "xor": "XOR each input with its weight bit (--adder-tree xor)",
    "relative": "are relative-sign trees (--adder-tree relative)",
    "pair": "take inputs in pairs, each pair's sum and difference shared by all neurons "
    "(--adder-tree pair)",
}


def markdown(report: dict[str, Any], sweep_rows: list[dict] | None = None) -> str:
    k = report["weight_bits"]
    source = (
        "Yosys synthesis" if report["source"] == "yosys" else "the analytical model (no synthesis)"
    )
    lines = [
        f"# bchw estimate: {report['model']['arch']}",
        "",
        f"Binary design versus its {k}-bit multiply-accumulate (MAC) baseline, same folding "
        f"(PE/SIMD per layer: "
        + ", ".join(f"{f['pe']}/{f['simd']}" for f in report["folding"])
        + f"), {report['initiation_interval_cycles']} cycles per image, latency "
        f"{report['latency_cycles']} cycles; the binary layers' trees "
        f"{TREE_WORDS[report.get('adder_tree', 'xor')]}. Figures from {source}.",
        "",
    ]
    for target in report["binary"]:
        b, m, r = report["binary"][target], report["mac"][target], report["ratio"][target]
        lines += [
            f"## {target}",
            "",
            f"| | binary | MAC {k}-bit | MAC / binary |",
            "|---|---:|---:|---:|",
        ]
        rows = [
            ("LUTs (DSP blocks allowed)", "lut"),
            ("LUTs (LUT only)", "lut_nodsp"),
            ("LUTs incl. those in carry cells (LUT only)", "logic_nodsp"),
            ("flip-flops", "ff"),
            ("carry cells", "carry"),
            ("LUT RAM cells", "lutram"),
            ("block RAMs", "bram"),
            ("DSP blocks", "dsp"),
        ]
        for label, key in rows:
            ratio = r.get(key)
            lines.append(f"| {label} | {num(b[key])} | {num(m[key])} | {num(ratio)} |")
        if report["source"] == "yosys":
            ab, am = b["analytic"], m["analytic"]
            lines.append(
                f"| analytical LUTs (LUT only) | {num(ab['lut_nodsp'])} | {num(am['lut_nodsp'])} | "
                f"{num(round(am['lut_nodsp'] / ab['lut_nodsp'], 2) if ab['lut_nodsp'] else None)} |"
            )
        if "device" in b or "device" in m:
            # A design that fits no folding of a --fit chip is not placed: its cells say "-".
            lines.append(f"| device | {b.get('device', '-')} | {m.get('device', '-')} | |")
            lines.append(f"| fmax (MHz) | {num(b.get('fmax_mhz'))} | {num(m.get('fmax_mhz'))} | |")
            lines.append(
                f"| images per second | {num(b.get('images_per_second'))} | "
                f"{num(m.get('images_per_second'))} | |"
            )
            for name, design in (("binary", b), ("MAC", m)):
                if not design.get("fits", True):
                    lines += ["", f"The {name} design {design['reason']}."]
        lines.append("")
        if report["source"] == "yosys":
            scripts = sorted(
                {d.get(k) for d in (b, m) for k in ("yosys_script", "yosys_script_nodsp")} - {None}
            )
            lines += ["Yosys: " + "; ".join(f"`{s}`" for s in scripts), ""]
            if any("abc -lut" in s for s in scripts):
                lines += [
                    "(ABC9 died without a message inside YoWASP's Yosys on a run here, so that "
                    "run mapped its LUTs with ABC: the fallback script above.)",
                    "",
                ]
        lines += [
            "Per layer (analytical model, LUT-only flow):",
            "",
            "| part | binary LUTs | MAC LUTs | binary FFs | MAC FFs | MAC / binary LUTs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for lb, lm in zip(b["layers"], m["layers"], strict=True):
            ratio = round(lm["lut_nodsp"] / lb["lut_nodsp"], 2) if lb["lut_nodsp"] else None
            lines.append(
                f"| {lb['part']} | {num(lb['lut_nodsp'])} | {num(lm['lut_nodsp'])} | "
                f"{num(lb['ff_nodsp'])} | {num(lm['ff_nodsp'])} | {num(ratio)} |"
            )
        lines.append("")
    clock = report["images_per_second_at_clock"]
    if "fit" not in report:  # with --fit each design has its own folding and interval
        lines += [
            f"Throughput at {clock['clock_mhz']:g} MHz: {num(clock['images_per_second'])} images "
            "per second (both designs have the same interval).",
            "",
        ]
    lines += [
        "## Energy per inference (estimate)",
        "",
        "| | binary | MAC | MAC / binary |",
        "|---|---:|---:|---:|",
    ]
    e = report["energy"]
    for label, key in (
        ("arithmetic (pJ)", "arithmetic_pj"),
        ("weight reads (pJ)", "weight_reads_pj"),
        ("requantization (pJ)", "requantization_pj"),
        ("total (pJ)", "total_pj"),
    ):
        b, m = e["binary"][key], e["mac"][key]
        lines.append(f"| {label} | {num(b)} | {num(m)} | {num(round(m / b, 2) if b else None)} |")
    lines += ["", f"Source: {e['source']}.", ""]
    if report.get("analytic_error"):
        lines += [
            "## Analytical model's error against Yosys (held-out designs)",
            "",
            "| target | resource | median | worst |",
            "|---|---|---:|---:|",
        ]
        for target, by_resource in report["analytic_error"].items():
            for resource, err in by_resource.items():
                lines.append(
                    f"| {target} | {resource} | {100 * err['median']:.1f} % | "
                    f"{100 * err['worst']:.1f} % |"
                )
        lines.append("")
    if sweep_rows:
        lines += sweep_markdown(sweep_rows, report)
    return "\n".join(lines)


def sweep_markdown(rows: list[dict], report: dict[str, Any]) -> list[str]:
    clock = report["images_per_second_at_clock"]["clock_mhz"]
    lines = [
        "## Folding sweep",
        "",
        f"Images per second at {clock:g} MHz. LUTs with DSP blocks allowed (LUT only in "
        "brackets for the MAC design); * marks a Pareto point (no other folding is both smaller "
        "and faster for that design).",
        "",
    ]
    for target in rows[0]["binary"]:
        lines += [
            f"### {target}",
            "",
            "| PE/SIMD | cycles per image | images/s | binary LUTs | MAC LUTs (LUT only) | "
            "MAC DSPs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            b, m = row["binary"][target], row["mac"][target]
            folding = ", ".join(f"{f['pe']}/{f['simd']}" for f in row["folding"])
            lines.append(
                f"| {folding} | {num(row['initiation_interval_cycles'])} | "
                f"{num(row['images_per_second'])} | {num(b['lut'])}{'*' * b['pareto_lut']} | "
                f"{num(m['lut'])}{'*' * m['pareto_lut']} ({num(m['lut_nodsp'])}"
                f"{'*' * m['pareto_lut_nodsp']}) | {num(m['dsp'])} |"
            )
        lines.append("")
    return lines


def _figure(plt, width: float, height: float):
    return plt.figure(figsize=(width, height), dpi=110)


def plots(
    report: dict[str, Any], out_dir: Path, sweep_rows: list[dict] | None = None
) -> list[Path]:
    """resources.png (totals per target), layers.png (per layer), sweep.png (with a sweep)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(report["binary"])
    k = report["weight_bits"]
    written = []

    def save(fig, name: str) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        path = Path(out_dir) / name
        write_bytes_atomic(path, buffer.getvalue())
        written.append(path)

    source = "Yosys" if report["source"] == "yosys" else "analytical model"
    fig = _figure(plt, 4.2 * len(targets), 4.0)
    metrics = [
        ("lut", "LUTs\n(DSP ok)"),
        ("lut_nodsp", "LUTs\n(LUT only)"),
        ("ff", "FFs"),
        ("bram", "BRAMs"),
        ("dsp", "DSPs"),
    ]
    # Without the LUT-only runs (no --lut-only) there is no such bar to draw.
    metrics = [
        (key, label)
        for key, label in metrics
        if all(report[n][t][key] is not None for n in ("binary", "mac") for t in targets)
    ]
    for index, target in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), index + 1)
        xs = range(len(metrics))
        for offset, name, color in ((-0.2, "binary", "#1f77b4"), (0.2, "mac", "#d62728")):
            values = [max(report[name][target][key], 0) for key, _ in metrics]
            bars = ax.bar(
                [x + offset for x in xs],
                [max(v, 0.5) for v in values],
                0.4,
                label=f"{NAMES[name]}" + (f" {k}-bit" if name == "mac" else ""),
                color=color,
            )
            for bar, value in zip(bars, values, strict=True):
                ax.annotate(
                    f"{value:,}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                )
        ax.set_yscale("log")
        ax.set_xticks(list(xs), [label for _, label in metrics], fontsize=8)
        ax.set_title(f"{target} ({source})", fontsize=10)
        ax.legend(fontsize=8)
    save(fig, "resources.png")

    fig = _figure(plt, 4.2 * len(targets), 3.6)
    for index, target in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), index + 1)
        parts = [p["part"] for p in report["binary"][target]["layers"]]
        xs = range(len(parts))
        for offset, name, color in ((-0.2, "binary", "#1f77b4"), (0.2, "mac", "#d62728")):
            values = [p["lut_nodsp"] for p in report[name][target]["layers"]]
            ax.bar(
                [x + offset for x in xs],
                values,
                0.4,
                color=color,
                label=NAMES[name] + (f" {k}-bit" if name == "mac" else ""),
            )
        ax.set_xticks(list(xs), parts, fontsize=8)
        ax.set_ylabel("LUTs (LUT only, analytical)")
        ax.set_title(f"{target}: per layer", fontsize=10)
        ax.legend(fontsize=8)
    save(fig, "layers.png")

    if sweep_rows:
        clock = report["images_per_second_at_clock"]["clock_mhz"]
        fig = _figure(plt, 4.6 * len(targets), 7.0)
        for index, target in enumerate(targets):
            ax = fig.add_subplot(2, len(targets), index + 1)
            speed = [r["images_per_second"] for r in sweep_rows]
            for name, key, style, label in (
                ("binary", "lut", "o-", "binary"),
                ("mac", "lut", "s-", f"MAC {k}-bit, DSP allowed"),
                ("mac", "lut_nodsp", "^--", f"MAC {k}-bit, LUT only"),
            ):
                ax.plot(speed, [r[name][target][key] for r in sweep_rows], style, label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"images per second at {clock:g} MHz")
            ax.set_ylabel("LUTs")
            ax.set_title(f"{target}: LUTs against throughput", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            ax = fig.add_subplot(2, len(targets), len(targets) + index + 1)
            ax.plot(
                speed,
                [r["mac"][target]["dsp"] for r in sweep_rows],
                "s-",
                color="#d62728",
                label=f"MAC {k}-bit",
            )
            ax.plot(
                speed,
                [r["binary"][target]["dsp"] for r in sweep_rows],
                "o-",
                color="#1f77b4",
                label="binary",
            )
            ax.set_xscale("log")
            ax.set_xlabel(f"images per second at {clock:g} MHz")
            ax.set_ylabel("DSP blocks")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, "sweep.png")
    return written


def write_report(
    report: dict[str, Any], sweep_rows: list[dict] | None, out_dir: Path
) -> dict[str, Any]:
    """report.json, report.md and the plots in ``out_dir``; returns their paths."""
    import json

    out_dir = Path(out_dir)
    report_json = out_dir / "report.json"
    report_md = out_dir / "report.md"
    write_bytes_atomic(report_json, (json.dumps(report, indent=1, sort_keys=True) + "\n").encode())
    write_bytes_atomic(report_md, markdown(report, sweep_rows).encode())
    return {"markdown": report_md, "json": report_json, "plots": plots(report, out_dir, sweep_rows)}
