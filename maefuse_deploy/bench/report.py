"""Benchmark output: terminal table, JSON (with the machine), markdown for benchmarks/, PNG of the distributions.

JSON numbers are plain floats except a PSNR of identical images, written as the string ``"inf"``, and an error
that is not a number (an overflowing network), written as ``"nan"`` (strict JSON has neither). Times are
milliseconds per pair unless the key says otherwise (``_s``: seconds).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..errors import InputError
from .runner import BenchResult, Row
from .timing import PERCENTILE_MIN_SAMPLES, SummaryKey

Column = tuple[str, Callable[[Row], str]]
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _psnr(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def row_label(row: Row) -> str:
    """A row's backend, with the model it runs where that is not the model under test (--versus)."""
    return row.backend if row.model is None else f"{row.backend} ({row.model})"


def _columns(rows: list[Row]) -> list[Column]:
    """The table's columns; stage and device columns appear only where some row has them."""
    def stat(key: SummaryKey) -> Callable[[Row], str]:
        return lambda r: _ms(r.latency_ms[key]) if r.latency_ms else "-"

    def stage(key: str) -> Callable[[Row], str]:
        return lambda r: _ms(getattr(r, key))

    columns: list[Column] = [
        ("backend", row_label),
        ("batch", lambda r: str(r.batch)),
        ("precision", lambda r: r.precision),
        ("p50 ms", stat("p50")),
        ("p90 ms", stat("p90")),
        ("p99 ms", stat("p99")),
        ("mean ms", stat("mean")),
        ("min ms", stat("min")),
        ("max ms", stat("max")),
        ("compute p50 ms", lambda r: _ms(r.compute_ms["p50"]) if r.compute_ms else "-"),
    ]
    for key, title in (("pre_ms", "pre ms"), ("h2d_ms", "h2d ms"), ("d2h_ms", "d2h ms"), ("post_ms", "post ms")):
        if any(getattr(r, key) is not None for r in rows):
            columns.append((title, stage(key)))
    columns += [
        ("pairs/s", lambda r: _num(r.throughput_pairs_s, ".3g")),
        ("host MiB", lambda r: _num(r.peak_host_mb, ".0f")),
    ]
    if any(r.peak_device_mb is not None for r in rows):
        columns.append(("device MiB", lambda r: _num(r.peak_device_mb, ".0f")))
    columns += [
        ("load s", lambda r: _num(r.load_s, ".2f")),
        ("first call s", lambda r: _num(r.first_call_s, ".2f")),
        ("max abs err", lambda r: _num(r.max_abs_err, ".1e")),
        ("PSNR dB", lambda r: _psnr(r.psnr_db)),
        ("floor ms", lambda r: _ms(r.floor_ms)),
        ("x floor", lambda r: _num(r.floor_ratio, ".2f")),
        ("speed-up", lambda r: _num(r.speedup, ".2f")),
    ]
    return columns


def _measured(result: BenchResult) -> list[Row]:
    return [r for r in result.rows if r.status == "ok" and r.latency_ms is not None]


def _not_run(result: BenchResult) -> list[Row]:
    return [r for r in result.rows if r.status != "ok"]


def terminal_table(result: BenchResult) -> str:
    """Fixed-width table of the measured rows, then one line per skipped or failed row, then the checks."""
    rows = _measured(result)
    lines = []
    if rows:
        columns = _columns(rows)
        cells = [[title for title, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
        widths = [max(len(line[k]) for line in cells) for k in range(len(columns))]
        for index, line in enumerate(cells):
            lines.append("  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True))))
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
    for row in _not_run(result):
        lines.append(f"{row.backend} batch {row.batch}: {row.status}: {row.reason}")
    lines.extend(_summary_lines(result))
    for stream in result.stream:
        lat = stream.latency_ms
        lines.append(
            f"stream {stream.backend}: {stream.target_fps:g} fps target, {stream.achieved_fps:.2f} fps fused, "
            f"{stream.dropped_capture}/{stream.offered} frames dropped at capture, {stream.dropped_output} at output"
            + (f", latency p50 {_ms(lat['p50'])} / p99 {_ms(lat['p99'])} / max {_ms(lat['max'])} ms" if lat else "")
        )
    return "\n".join(lines)


def _fastest_lines(result: BenchResult) -> list[str]:
    """One line per accuracy class naming its fastest row: what a user runs the benchmark to learn."""
    lines = []
    for best in result.fastest:
        extras = [f"{_psnr(best['psnr_db'])} dB"] if best["psnr_db"] is not None else []
        if best["floor_ratio"] is not None:
            extras.append(f"{best['floor_ratio']:.2f}x floor")
        if best.get("speedup") is not None:
            extras.append(f"{best['speedup']:.2f}x the pairs/s of {best['speedup_over']}")
        lines.append(f"fastest, fused PSNR vs float32 {best['class']}: {best['backend']} batch {best['batch']} "
                     f"({best['precision']}), p50 {_ms(best['p50_ms'])} ms per pair"
                     + (f" ({', '.join(extras)})" if extras else ""))
    return lines


def _summary_lines(result: BenchResult) -> list[str]:
    lines = _fastest_lines(result)
    rows = _measured(result)
    if any(r.latency_ms is not None and r.latency_ms[key] is None for r in rows for key in PERCENTILE_MIN_SAMPLES):
        lines.append(" and ".join(f"{key} needs at least {count} timed calls" for key, count in
                                  PERCENTILE_MIN_SAMPLES.items()) + ": '-' where a row had fewer (--iterations)")
    check = result.release_check
    if "max_abs_err" in check:
        lines.append(f"release-style vs official torch path (batch 1): max abs err {check['max_abs_err']:.2e}, "
                     f"tolerance {check['tolerance']:g}: {check['status']}")
    else:
        lines.append(f"release-style check: {check['status']}")
    if result.flops:
        deployed = result.flops["deployed"]
        lines.append(f"FLOPs per pair ({result.flops['config']}, grid {result.flops['grid'][1]}x"
                     f"{result.flops['grid'][0]}): {deployed['total'] / 1e9:.4g} GFLOP (encoder "
                     f"{deployed['encoder'] / 1e9:.4g}, fusion {deployed['fusion'] / 1e9:.3g}, decoder "
                     f"{deployed['decoder'] / 1e9:.3g}); the release executes "
                     f"{result.flops['release']['total'] / 1e9:.4g}")
    for precision, peak in result.peaks.items():
        lines.append(f"peak {precision}: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['source']})")
    for row in result.rows:
        lines.extend(f"{row.backend} batch {row.batch}: {note}" for note in row.notes if note.startswith("WARNING"))
    return lines


def _jsonable(value: Any) -> Any:
    # Strict JSON has no NaN or infinity: an FP16 overflow (NaN error) must not cost the report.
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def write_json(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def markdown(result: BenchResult) -> str:
    """A section for benchmarks/README.md: command, date, machine, the table, what did not run, the checks."""
    machine = result.machine
    gpu = machine.get("gpu")
    libs = machine.get("libraries", {})
    lines = [
        f"- command: `{result.command}`" if result.command else "- command: (library call)",
        f"- date: {result.date}",
        f"- machine: {machine['cpu']}"
        + (f" ({machine['cpu_generation']})" if machine.get("cpu_generation") else "")
        + f", {machine['cores']} cores ({', '.join(machine['cpu_flags']) or 'no AVX'}), "
        f"{machine['memory_gb']} GiB, torch threads {machine['torch_threads']}"
        + (f", load average {' / '.join(f'{v:g}' for v in machine['load_average'])} at the start"
           if machine.get("load_average") else "")
        + (f"; GPU {gpu['name']} ({gpu['memory_gb']} GiB, driver {gpu['driver']}, CUDA {gpu['cuda_runtime']})"
           if gpu else "; no GPU")
        + ("; run with " + " ".join(f"{name}={value}" for name, value in machine["environment"].items())
           if machine.get("environment") else ""),
        "- libraries: " + ", ".join(f"{name} {version}" for name, version in libs.items()),
        f"- model: {result.model['description']}, resolution {result.model['resolution']}, io "
        f"{result.settings['io']}, {result.settings['iterations']} timed calls after 1 first call + "
        f"{result.settings['warmup']} warm-up",
        "",
    ]
    rows = _measured(result)
    if rows:
        columns = _columns(rows)
        lines.append("| " + " | ".join(title for title, _ in columns) + " |")
        lines.append("|" + "|".join("---" if k < 3 else "---:" for k in range(len(columns))) + "|")
        lines.extend("| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows)
        lines.append("")
    for row in _not_run(result):
        lines.append(f"- {row.backend} batch {row.batch}: {row.status}: {row.reason}")
    lines.extend(f"- {line}" for line in _summary_lines(result))
    for stream in result.stream:
        lat = stream.latency_ms
        lines.append(
            f"- stream {stream.backend}: {stream.target_fps:g} fps for {stream.duration_s:g} s, queue "
            f"{stream.queue_size}: {stream.achieved_fps:.2f} fps fused, {stream.dropped_capture}/{stream.offered} "
            f"dropped at capture" + (f", latency p50 {_ms(lat['p50'])} / p99 {_ms(lat['p99'])} ms" if lat else "")
        )
    return "\n".join(lines) + "\n"


def write_markdown(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(markdown(result), encoding="utf-8")
    return Path(path)


def check_plot_path(path: str | os.PathLike[str]) -> None:
    """Refuse a plot name matplotlib cannot write before a long run, not after it."""
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(f"cannot write a plot to {path}", fix=f"name it {' or '.join(PLOT_SUFFIXES)}")


def write_plot(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Box plots of per-pair latency per row (log scale: rows differ by orders of magnitude) and, after
    ``--stream``, each backend's frame latency over the run.
    """
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter, ScalarFormatter

    rows = _measured(result)
    panels = 1 + bool(result.stream)
    width = min(max(6.0, 0.75 * len(rows) + 2), 14.0)
    figure, axes = plt.subplots(panels, 1, figsize=(width, 4.5 * panels), squeeze=False)
    ax = axes[0][0]
    if rows:
        ax.boxplot([r.samples_ms for r in rows], whis=(0, 100))
        ax.set_xticks(range(1, len(rows) + 1), [f"{row_label(r)}\nbatch {r.batch}" for r in rows], fontsize=7,
                      rotation=45 if len(rows) > 8 else 0, ha="right" if len(rows) > 8 else "center")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_ylabel("latency per pair (ms)")
    ax.set_title(f"{result.model['description']} at {result.model['resolution']}", fontsize=9)
    if result.stream:
        ax = axes[1][0]
        for stream in result.stream:
            ax.plot(stream.capture_s, stream.frame_latency_ms, ".", markersize=3,
                    label=f"{stream.backend} ({stream.dropped_capture}/{stream.offered} dropped)")
        ax.set_xlabel("capture time (s)")
        ax.set_ylabel("capture-to-fused latency (ms)")
        ax.set_title(f"stream at {result.stream[0].target_fps:g} fps", fontsize=9)
        ax.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
    return Path(path)
