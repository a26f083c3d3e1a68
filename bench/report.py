"""The matrix's results for bench/run: medians per cell, ratios to the best
peer, verdicts on the targets, the Markdown table and the SVG plot."""

from __future__ import annotations

import html
import statistics

from matrix import SCENARIO_BY_ID, SERVER_BY_ID


def fmt_num(x):
    if x is None:
        return "–"
    x = float(x)
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.0f}k"
    if a >= 1e3:
        return f"{x / 1e3:.1f}k"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a == 0:
        return "0"
    return f"{x:.2f}" if a >= 1 else f"{x:.3f}"


def fmt_ratio(r):
    if r is None:
        return ""
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def combine(values, how):
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return max(values) if how == "max" else statistics.median(values)


def summarize(results, scenarios):
    """Medians per cell, ratios to the best peer, verdicts on the targets."""
    rows = []
    for sc in scenarios:
        cells = results.get(sc.id, {})
        for m in sc.metrics:
            values = {}
            for sid in sc.servers:
                rounds = [r for r in cells.get(sid, []) if "report" in r]
                values[sid] = combine([r["report"].get(m.key) for r in rounds], m.combine)
            peers = {sid: v for sid, v in values.items() if not SERVER_BY_ID[sid].wsbus and v is not None}
            best_peer = None
            if m.ratio and peers:
                pick = max if m.higher_is_better else min
                best_peer = pick(peers, key=peers.get)
            ratios = {}
            for sid, v in values.items():
                if best_peer and v is not None and peers[best_peer]:
                    ratios[sid] = v / peers[best_peer]
            rows.append({
                "scenario": sc.id,
                "scenario_label": sc.label,
                "metric": m.key,
                "metric_label": m.label,
                "higher_is_better": m.higher_is_better,
                "values": values,
                "ratios": ratios,
                "best_peer": best_peer,
                "target": target_text(m.target),
                "target_ratio": m.target[1] if m.target and m.target[0].startswith("ratio") else None,
                "verdict": verdict(m, values.get("wsbus"), ratios.get("wsbus")),
                "combine": m.combine,
            })
    return rows


def target_text(target):
    if not target:
        return ""
    kind, x = target
    if kind == "zero":
        return "0"
    return {"ratio_le": f"≤ {x:g}× best peer", "ratio_ge": f"≥ {x:g}× best peer", "abs_le": f"≤ {x:g}"}[kind]


def verdict(metric, value, ratio):
    if not metric.target:
        return None
    kind, x = metric.target
    if kind == "zero":
        return None if value is None else value == 0
    if kind == "abs_le":
        return None if value is None else value <= x
    if ratio is None:
        return None
    return ratio <= x if kind == "ratio_le" else ratio >= x


def markdown_table(rows, servers, scenarios):
    ids = [s for s in servers if any(s in sc.servers for sc in scenarios)]
    head = ["scenario", "figure"] + [SERVER_BY_ID[s].label for s in ids] + ["target (wsbus)", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(ids) + "---|:-:|"]
    last = None
    for row in rows:
        sc = SCENARIO_BY_ID[row["scenario"]]
        cells = []
        for sid in ids:
            if sid not in sc.servers:
                cells.append("n/a")
                continue
            v = row["values"].get(sid)
            if v is None:
                cells.append("failed" if sid in row["values"] else "–")
                continue
            text = fmt_num(v)
            r = row["ratios"].get(sid)
            if r is not None:
                text += f" ({fmt_ratio(r)})"
            if sid == row["best_peer"]:
                text = f"**{text}**"
            cells.append(text)
        arrow = "↑" if row["higher_is_better"] else "↓"
        figure = f"{row['metric_label']} {arrow}" + (" (worst round)" if row["combine"] == "max" else "")
        mark = {True: "✅", False: "❌", None: ""}[row["verdict"]]
        name = row["scenario_label"] if row["scenario"] != last else ""
        last = row["scenario"]
        out.append("| " + " | ".join([name, figure, *cells, row["target"], mark]) + " |")
    return "\n".join(out)


# SVG plot: one group of bars per scenario (its first figure), each bar the
# server's figure over the best peer's, on a log scale around 1.0: a bar going
# up is a larger figure than the best peer's, down a smaller one; whether that
# is better is written under the group.
COLORS = {"wsbus": "#d62728", "fastwebsockets": "#1f77b4", "tungstenite": "#2ca02c",
          "ws": "#9467bd", "uws": "#ff7f0e", "ws-deflate": "#8c564b", "wsbus-ctx": "#e377c2"}


def svg_plot(rows, servers, title, subtitle):
    import math

    seen, groups = set(), []
    for row in rows:
        if row["scenario"] in seen or not row["ratios"]:
            continue
        seen.add(row["scenario"])
        groups.append(row)
    ids = [s for s in servers if any(s in g["values"] for g in groups)]
    left, right, top, bottom = 64, 16, 84, 130
    # At least ~90 px per group, so that the labels under each stay legible.
    width, height = max(1200, left + right + 90 * len(groups)), 600
    plot_w, plot_h = width - left - right, height - top - bottom
    ratios = [r for g in groups for r in g["ratios"].values() if r and r > 0]
    lo = 2 ** math.floor(math.log2(min(ratios + [0.5]) * 0.95))
    hi = 2 ** math.ceil(math.log2(max(ratios + [2.0]) * 1.05))
    lo, hi = max(lo, 1 / 64), min(hi, 64)

    def y(r):
        r = min(max(r, lo), hi)
        return top + plot_h * (math.log(hi) - math.log(r)) / (math.log(hi) - math.log(lo))

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{esc(title)}</text>',
             f'<text x="{width / 2}" y="42" text-anchor="middle" fill="#555">{esc(subtitle)}</text>']
    tick = lo
    while tick <= hi * 1.0001:
        ty = y(tick)
        style = 'stroke="#333"' if abs(tick - 1) < 1e-9 else 'stroke="#ddd" stroke-dasharray="3,3"'
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" {style}/>')
        label = f"{tick:g}×" if tick >= 1 else f"1/{round(1 / tick)}×"
        parts.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{label}</text>')
        tick *= 2
    parts.append(f'<text transform="translate(16,{top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                 f'figure ÷ best peer\'s (log scale)</text>')
    gw = plot_w / max(1, len(groups))
    for gi, g in enumerate(groups):
        present = [s for s in ids if s in g["values"]]
        bw = min(30, gw * 0.84 / max(1, len(present)))
        x0 = left + gi * gw + (gw - bw * len(present)) / 2
        if gi:
            parts.append(f'<line x1="{left + gi * gw:.1f}" x2="{left + gi * gw:.1f}" y1="{top}" '
                         f'y2="{top + plot_h}" stroke="#f0f0f0"/>')
        for si, sid in enumerate(present):
            r = g["ratios"].get(sid)
            bx = x0 + si * bw
            if r is None or r <= 0:
                parts.append(f'<text x="{bx + bw / 2:.1f}" y="{y(1) - 4:.1f}" text-anchor="middle" '
                             f'font-size="9" fill="#999">failed</text>')
                continue
            y1, y2 = sorted((y(1), y(r)))
            if y2 - y1 < 3:  # the best peer itself: a short bar across the 1.0 line
                y1, y2 = y(r) - 1.5, y(r) + 1.5
            parts.append(f'<rect x="{bx + 1:.1f}" y="{y1:.1f}" width="{bw - 2:.1f}" height="{y2 - y1:.1f}" '
                         f'fill="{COLORS.get(sid, "#777")}"><title>{esc(SERVER_BY_ID[sid].label)}: '
                         f'{esc(fmt_num(g["values"].get(sid)))} ({fmt_ratio(r)})</title></rect>')
            ly = y2 + 10 if r < 1 else y1 - 3
            parts.append(f'<text x="{bx + bw / 2:.1f}" y="{ly:.1f}" text-anchor="middle" font-size="9">'
                         f'{short_ratio(r)}</text>')
        target = g.get("target_ratio")
        if target:
            ty = y(target)
            parts.append(f'<line x1="{x0 - 3:.1f}" x2="{x0 + bw * len(present) + 3:.1f}" y1="{ty:.1f}" '
                         f'y2="{ty:.1f}" stroke="#000" stroke-width="1.5" stroke-dasharray="5,3"/>')
        cx = left + gi * gw + gw / 2
        arrow = "higher is better" if g["higher_is_better"] else "lower is better"
        max_chars = max(10, int(gw / 5.6))
        lines = [(line, 10, "#000") for line in wrap_words(g["scenario_label"], max_chars)]
        lines += [(line, 9, "#555") for line in wrap_words(f'{g["metric_label"]}, {arrow}', max_chars + 2)]
        if g.get("target"):
            lines += [(line, 9, "#555") for line in wrap_words("target: " + g["target"], max_chars + 2)]
        for li, (text, size, color) in enumerate(lines):
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16 + li * 13}" text-anchor="middle" '
                         f'font-size="{size}" fill="{color}">{esc(text)}</text>')
    lx = left
    for sid in ids:
        parts.append(f'<rect x="{lx}" y="56" width="12" height="12" fill="{COLORS.get(sid, "#777")}"/>')
        parts.append(f'<text x="{lx + 16}" y="66">{esc(SERVER_BY_ID[sid].label)}</text>')
        lx += 34 + 7 * len(SERVER_BY_ID[sid].label)
    parts.append(f'<line x1="{lx}" x2="{lx + 24}" y1="62" y2="62" stroke="#000" stroke-width="1.5" '
                 f'stroke-dasharray="5,3"/><text x="{lx + 30}" y="66">wsbus target</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def short_ratio(r):
    return f"{r:.2f}" if r < 1 else f"{r:.1f}" if r < 10 else f"{r:.0f}"


def wrap_words(text, max_chars):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > max_chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines
