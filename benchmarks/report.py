"""Writing a benchmark run out: generated regions of Markdown files, and PNG plots.

A *generated region* of a Markdown file is everything between the lines
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; :func:`replace_region`
rewrites only that, so the hand-written text around it stays as it is.
The regions and who fills them with ``--write``:

* ``docs/benchmarks.md``: ``bench`` (machine, settings, the main table, the
  targets, the plots and the RSS table) and ``breakdown`` (the per-item cost
  breakdown), by ``bench.py``; ``peers`` by ``peers.py``; ``http`` by
  ``serving.py``; ``meters`` by ``meters.py``;
* ``README.md``, region ``bench-table``: a compact table, by ``bench.py``
  (skipped when the markers are absent).

Every plot of every script is drawn here: :func:`plot_figure` (lines against
one parameter), :func:`plot_rss` and :func:`plot_bars`.  They import
matplotlib lazily (the optional ``bench`` extra: ``pip install '.[bench]'``),
so the rest of the harness runs without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
from collections.abc import Sequence


class MissingRegion(LookupError):
    """A required generated region is not in the file."""


def _markers(name: str) -> tuple[str, str]:
    return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def replace_region(path: str, name: str, content: str, *, required: bool = False) -> bool:
    """Replace the lines between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``.

    Both markers must stand on lines of their own, begin before end.  The
    markers themselves stay; ``content`` goes between them with one blank
    line on each side.  Returns True if the region was found (the file
    is only rewritten if its text changed); False, or :class:`MissingRegion`
    when ``required``, if the file or a marker is missing.
    """
    begin, end = _markers(name)
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        if required:
            raise MissingRegion(f'{path} does not exist') from None
        return False
    pattern = re.compile(rf'^{re.escape(begin)}[ \t]*\n.*?^{re.escape(end)}[ \t]*$', re.DOTALL | re.MULTILINE)
    matches = pattern.findall(text)
    if len(matches) != 1:
        if required or matches:
            raise MissingRegion(
                f'{path}: expected one region from a line "{begin}" to a line "{end}", found {len(matches)}'
            )
        return False
    body = content.strip('\n')
    # Blank lines around the body: a table or paragraph never runs into a marker.
    replacement = f'{begin}\n\n{body}\n\n{end}' if body else f'{begin}\n{end}'
    new_text = pattern.sub(lambda _: replacement, text, count=1)
    if new_text != text:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(new_text)
    return True


# --- plots --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figure:
    """One scaling plot: throughput (or time) against one parameter."""

    key: str
    filename: str  # PNG file name, written to the image directory
    title: str
    xlabel: str
    ylabel: str
    xlog: int | None = None  # log base of the x axis, or None for linear
    ylog: bool = True
    xbytes: bool = False  # x values are byte counts: label ticks as B / KB / MB


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a figure: medians with min-max error bars, for one backend."""

    backend: str
    name: str
    xs: Sequence[float]
    rounds: Sequence[Sequence[float]]  # values per round, one sequence per x


BACKEND_COLORS = {'mpservice': '#7f7f7f', 'mpserver': '#1f77b4'}
LINESTYLES = ('-', '--', ':', '-.')
MARKERS = ('o', 's', '^', 'D')


def require_matplotlib() -> None:
    """Raise ImportError with the install hint if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the plots need matplotlib: pip install '.[bench]' (or pip install matplotlib), or pass --no-plots"
        ) from e


def pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, outdir: str, filename: str) -> str:
    """Lays out ``fig``, writes it to ``outdir/filename`` and closes it; returns the path."""
    fig.tight_layout()
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, filename)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_figure(fig_spec: Figure, series: list[Series], outdir: str) -> str:
    """Draw ``series`` as lines with min-max error bars; return the PNG path."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    names = sorted({s.name for s in series}, key=[s.name for s in series].index)
    for s in series:
        k = names.index(s.name)
        med = [statistics.median(r) for r in s.rounds]
        lo = [m - min(r) for m, r in zip(med, s.rounds, strict=True)]
        hi = [max(r) - m for m, r in zip(med, s.rounds, strict=True)]
        label = f'{s.backend}, {s.name}' if s.name else s.backend
        ax.errorbar(
            s.xs,
            med,
            yerr=[lo, hi],
            label=label,
            color=BACKEND_COLORS.get(s.backend),
            linestyle=LINESTYLES[k % len(LINESTYLES)],
            marker=MARKERS[k % len(MARKERS)],
            markersize=4,
            capsize=3,
            linewidth=1.4,
        )
    if fig_spec.xlog:
        ax.set_xscale('log', base=fig_spec.xlog)
    if fig_spec.ylog:
        ax.set_yscale('log')
        values = [v for s in series for r in s.rounds for v in r if v > 0]
        decades = math.log10(max(values) / min(values)) if values else 1.0
        if decades < 0.8:
            subs = tuple(float(k) for k in range(1, 10))
        elif decades < 1.5:
            subs = (1.0, 2.0, 3.0, 5.0)
        else:
            subs = (1.0, 3.0) if decades < 3 else (1.0,)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    xs = sorted({x for s in series for x in s.xs})
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(xs)
    ax.set_xticklabels([_tick(x, fig_spec.xbytes) for x in xs])
    ax.set_title(fig_spec.title, fontsize=10)
    ax.set_xlabel(fig_spec.xlabel)
    ax.set_ylabel(fig_spec.ylabel)
    ax.grid(True, which='major', alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, outdir, fig_spec.filename)


def _human(v: float) -> str:
    """A y-axis label: 0.2, 5, 300, 20k, 1M."""
    for div, suffix in ((1e6, 'M'), (1e3, 'k')):
        if v >= div:
            return f'{v / div:g}{suffix}'
    return f'{v:g}'


def _tick(x: float, as_bytes: bool) -> str:
    if as_bytes:
        for div, unit in ((1e6, 'MB'), (1e3, 'KB')):
            if x >= div:
                return f'{x / div:g} {unit}'
        return f'{x:g} B'
    return f'{x:g}'


def plot_rss(results: list[dict], outdir: str, filename: str = 'bench_rss.png') -> str:
    """VmRSS, RssAnon and RssShmem (MB) against items streamed, per backend; return the PNG path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    top = 0.0
    for r in results:
        xs = [s[0] for s in r['samples']]
        color = BACKEND_COLORS.get(r['backend'])
        for column, name, style in ((1, 'VmRSS', '-'), (2, 'RssAnon', '--'), (3, 'RssShmem', ':')):
            ys = [s[column] for s in r['samples']]
            top = max(top, *ys)
            ax.plot(xs, ys, linestyle=style, marker='o', markersize=3, color=color, label=f'{r["backend"]} {name}')
    ax.set_ylim(0, top * 1.35)
    ax.set_title('Main-process RSS while streaming small items (2 procs, batch_size=64)', fontsize=10)
    ax.set_xlabel('items streamed')
    ax.set_ylabel('MB')
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f'{v / 1e6:g}M' if v else '0'))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc='upper left', ncol=len(results))
    return save_figure(plt, fig, outdir, filename)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel of a bar chart: a bar per name (median, min-max whiskers), and an optional reference line."""

    title: str
    bars: Sequence[tuple[str, Sequence[float]]]  # (name, values per round)
    line: tuple[str, float] | None = None  # (label, value)


def plot_bars(
    panels: Sequence[Panel], names: Sequence[str], title: str, ylabel: str, outdir: str, filename: str
) -> str:
    """Panels side by side, log scale; a name keeps its color (its place in ``names``) across panels."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(10.0, 3.8), dpi=110)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, panel in zip(axes, panels, strict=True):
        for i, (name, rounds) in enumerate(panel.bars):
            med = statistics.median(rounds)
            ax.bar(i, med, color=colors[names.index(name) % len(colors)], label=name)
            ax.errorbar(i, med, yerr=[[med - min(rounds)], [max(rounds) - med]], color='black', capsize=3, linewidth=1)
        if panel.line is not None:
            label, value = panel.line
            ax.axhline(value, color='gray', linestyle='--', linewidth=1)
            ax.text(len(panel.bars) - 0.5, value, label, ha='right', va='bottom', fontsize=7)
        ax.set_yscale('log')
        ax.set_xticks(range(len(panel.bars)))
        ax.set_xticklabels([name for name, _ in panel.bars], rotation=45, ha='right', fontsize=7)
        ax.set_title(panel.title, fontsize=9)
        ax.grid(True, axis='y', which='major', alpha=0.3)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return save_figure(plt, fig, outdir, filename)
