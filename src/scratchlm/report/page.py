"""The report as one self-contained HTML page: inline CSS and inline SVG, no scripts, no network.

Every piece of text from the run (config values, samples, error messages) goes through
`html.escape`: a sample is model output and may contain anything, markup included.
"""

from __future__ import annotations

from html import escape

from scratchlm.report import content
from scratchlm.report.run import RunData
from scratchlm.report.speed import InferenceSpeed
from scratchlm.report.svg import line_chart

LONG_TABLE = 14

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.meta { color: #666; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv td:nth-child(3n+1) { color: #555; white-space: nowrap; }
td.gap { border: none; width: 1.5em; }
pre.sample { background: #f8f8f8; border: 1px solid #e3e3e3; padding: 0.6em; white-space: pre-wrap;
             word-break: break-word; margin-top: 0.2em; }
svg.plot { display: block; max-width: 100%; height: auto; margin: 0.8em 0; font-size: 11px; }
svg.plot .frame { fill: none; stroke: #999; }
svg.plot .grid { stroke: #eee; }
svg.plot .tick, svg.plot .legend { fill: #444; }
svg.plot .axis-label { fill: #333; font-size: 12px; }
svg.plot .plot-title { font-weight: 600; font-size: 13px; fill: #222; }
svg.plot .event { stroke-width: 1.2; stroke-dasharray: 4 3; }
svg.plot .empty { fill: #999; font-size: 14px; }
.note { color: #666; font-size: 0.92em; }
details summary { cursor: pointer; }
"""


def key_value_table(rows: content.Rows, css_class: str = "kv") -> str:
    """A two-column table; a long one (a config) puts two pairs per row to halve its height."""
    pairs = [f"<td>{escape(label)}</td><td>{escape(value)}</td>" for label, value in rows]
    if len(pairs) > LONG_TABLE:
        half = (len(pairs) + 1) // 2
        left, right = pairs[:half], [*pairs[half:], "<td></td><td></td>"]
        pairs = [a + '<td class="gap"></td>' + b for a, b in zip(left, right, strict=False)]
    body = "".join(f"<tr>{pair}</tr>" for pair in pairs)
    return f'<table class="{css_class}"><tbody>{body}</tbody></table>'


def grid_table(columns: tuple[str, ...], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary_section(run: RunData) -> str:
    return key_value_table(content.summary_rows(run))


def config_section(run: RunData) -> str:
    parts = []
    if run.settings:
        parts.append("<h3>Training settings</h3>" + key_value_table(content.settings_rows(run)))
    else:
        parts.append(f"<p>run_config.json: {content.NOT_RECORDED}</p>")
    resolved = content.resolved_rows(run)
    if resolved:
        parts.append("<h3>Resolved by the trainer</h3>" + key_value_table(resolved))
    if run.model:
        parts.append("<h3>Model</h3>" + key_value_table(content.model_rows(run)))
    return "".join(parts)


def chart_html(chart: content.Chart) -> str:
    html = line_chart(
        chart.plot_id,
        chart.title,
        chart.series,
        x_label="step",
        y_label=chart.y_label,
        events=chart.events,
        y_min=chart.y_min,
    )
    if chart.note:
        html += f'<p class="note">{escape(chart.title)}: {escape(chart.note)}</p>'
    return html


def plots_section(run: RunData) -> str:
    charts = content.charts(run)
    parts = [chart_html(chart) for chart in charts]
    if not any(chart.plot_id == "mfu" for chart in charts):
        parts.append(f'<p class="note">MFU: {content.NOT_RECORDED}</p>')
    parts.append(
        '<p class="note">Each curve keeps the last record of every step (a resume or a backtrack '
        "rewrites steps); dashed lines mark backtracks (hover for details).</p>"
    )
    return "".join(parts)


def backtracks_section(run: RunData) -> str:
    rows = content.backtrack_rows(run)
    if not rows:
        return "<p>none</p>"
    return grid_table(content.BACKTRACK_COLUMNS, rows, "backtracks")


def post_training_section(post: content.PostTraining) -> str:
    parts = [f"<p>{escape(post.title)}</p>"]
    if post.settings:
        parts.append(key_value_table(post.settings))
    parts.append(grid_table(tuple(post.columns), post.rows, "post-training"))
    parts.append(f'<p class="note">{escape(post.note)}</p>')
    if post.step_rows:
        parts.append("<h3>Held-out measures per evaluation</h3>")
        parts.append(grid_table(tuple(post.step_columns), post.step_rows, "post-training-steps"))
    if post.charts:
        parts.append("<h3>Training curves</h3>")
        parts += [chart_html(chart) for chart in post.charts]
        parts.append(
            '<p class="note">Lines: the training measure of each logged step; markers: the '
            "held-out measure at each evaluation (step 0: the starting model).</p>"
        )
    return "".join(parts)


def samples_section(run: RunData) -> str:
    evaluations = content.evaluations(run)
    before = content.before_sample(run)
    if not evaluations and before is None:
        return "<p>no evaluations recorded</p>"
    parts = []
    if evaluations:
        parts.append(grid_table(content.eval_columns(run), [e.cells for e in evaluations], "evals"))
    if before is not None:
        parts.append(
            f'<h3>Sample before training (step 0)</h3><pre class="sample">{escape(before)}</pre>'
        )
    for evaluation in evaluations:
        if evaluation.sample is not None:
            parts.append(
                f"<h3>Sample at step {escape(evaluation.cells[0])}</h3>"
                f'<pre class="sample">{escape(evaluation.sample)}</pre>'
            )
    return "".join(parts)


def benchmarks_section(run: RunData) -> str:
    scored = content.training_benchmarks(run)
    parts = []
    if scored is None:
        parts.append("<p>no benchmark tasks scored during training (--eval-tasks)</p>")
    else:
        parts.append(
            f"<p>At step {escape(scored.step)} (zero-shot, the first --eval-tasks-limit examples "
            "per task; centered = (value - chance) / (1 - chance)):</p>"
        )
        parts.append(grid_table(content.BENCHMARK_COLUMNS, scored.rows, "benchmarks"))
        if scored.step_rows:
            parts.append("<h3>Centered values per step</h3>")
            parts.append(
                grid_table(tuple(scored.step_columns), scored.step_rows, "benchmark-steps")
            )
    for result in content.hand_evals(run):
        parts.append(f"<h3>{escape(result.file)}</h3><p>{escape(result.note)}</p>")
        parts.append(grid_table(content.BENCHMARK_COLUMNS, result.rows, "benchmarks"))
    return "".join(parts)


def render_html(run: RunData, speed: InferenceSpeed, *, generated: str, version: str) -> str:
    # Short, most-read sections first; the long configuration tables last.
    post = content.post_training(run)
    sections = [
        ("summary", "Summary", summary_section(run)),
        *([("post-training", "Post-training", post_training_section(post))] if post else []),
        ("hardware", "Hardware", key_value_table(content.hardware_rows(run))),
        ("plots", "Curves", plots_section(run)),
        ("benchmarks", "Benchmarks", benchmarks_section(run)),
        ("backtracks", "Backtracking events", backtracks_section(run)),
        ("samples", "Evaluations and samples", samples_section(run)),
        ("inference", "Inference speed", key_value_table(content.speed_rows(speed))),
        ("config", "Configuration", config_section(run)),
    ]
    nav = " ".join(
        f'<a href="#{anchor}">{escape(title.lower())}</a>' for anchor, title, _ in sections
    )
    body = "\n".join(
        f'<section><h2 id="{anchor}">{escape(title)}</h2>{html}</section>'
        for anchor, title, html in sections
    )
    title = f"Training report: {run.name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">generated {escape(generated)} by scratchlm {escape(version)}</p>'
        f"<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )
