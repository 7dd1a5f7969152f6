"""The report as Markdown: the same facts as the HTML page, with text sparklines for the curves
(the plots themselves live in report.html, linked from each sparkline)."""

from __future__ import annotations

import re

from scratchlm.report import content
from scratchlm.report.run import RunData
from scratchlm.report.speed import InferenceSpeed
from scratchlm.report.svg import short_number, sparkline


def cell(text: str) -> str:
    """Text that stays inside one table cell and never becomes markup."""
    for plain, escaped in (
        ("\\", "\\\\"),
        ("|", "\\|"),
        ("*", "\\*"),
        ("`", "\\`"),
        ("<", "&lt;"),
        (">", "&gt;"),
    ):
        text = text.replace(plain, escaped)
    return " ".join(text.split())  # newlines would end the row


def table(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(cell(column) for column in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def key_value(rows: content.Rows) -> str:
    return table(("what", "value"), [[label, value] for label, value in rows])


def fenced(text: str) -> str:
    """A code block whose fence is longer than any backtick run inside the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def link_target(path: str) -> str:
    """A link destination; CommonMark needs <...> around one with spaces or parentheses."""
    return f"<{path}>" if any(ch in path for ch in " ()") else path


def config_section(run: RunData) -> list[str]:
    out: list[str] = []
    if run.settings:
        out += ["### Training settings", "", key_value(content.settings_rows(run)), ""]
    else:
        out += [f"run_config.json: {content.NOT_RECORDED}", ""]
    resolved = content.resolved_rows(run)
    if resolved:
        out += ["### Resolved by the trainer", "", key_value(resolved), ""]
    if run.model:
        out += ["### Model", "", key_value(content.model_rows(run)), ""]
    return out


def sparkline_table(charts: list[content.Chart], html_name: str) -> list[str]:
    """One row per series: its sparkline, first, last and range, linked to the HTML plot."""
    rows = []
    for chart in charts:
        for item in chart.series:
            values = [value for _, value in item.points]
            link = f"[{item.label}]({link_target(html_name + '#plot-' + chart.plot_id)})"
            if not values:
                rows.append([link, content.NOT_RECORDED, "", "", ""])
                continue
            rows.append(
                [
                    link,
                    cell(sparkline(values)),
                    cell(short_number(values[0])),
                    cell(short_number(values[-1])),
                    cell(f"{short_number(min(values))} .. {short_number(max(values))}"),
                ]
            )
    # Rows are escaped cell by cell above (the links must stay links).
    return [
        "| series | over steps | first | last | range |",
        "| --- | --- | --- | --- | --- |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def curves_section(run: RunData, html_name: str) -> list[str]:
    out = sparkline_table(content.charts(run), html_name)
    events = content.backtrack_events(run)
    if events:
        steps = ", ".join(short_number(event.x) for event in events)
        out += [f"Backtracks at step(s) {steps} (marked on the plots).", ""]
    return out


def post_training_section(post: content.PostTraining, html_name: str) -> list[str]:
    out = [cell(post.title), ""]
    if post.settings:
        out += [key_value(post.settings), ""]
    out += [table(post.columns, post.rows), "", cell(post.note), ""]
    if post.step_rows:
        out += ["### Held-out measures per evaluation", ""]
        out += [table(post.step_columns, post.step_rows), ""]
    if post.charts:
        out += ["### Training curves", "", *sparkline_table(post.charts, html_name)]
    return out


def samples_section(run: RunData) -> list[str]:
    evaluations = content.evaluations(run)
    before = content.before_sample(run)
    if not evaluations and before is None:
        return ["no evaluations recorded", ""]
    out = (
        [table(content.eval_columns(run), [e.cells for e in evaluations]), ""]
        if evaluations
        else []
    )
    if before is not None:
        out += ["### Sample before training (step 0)", "", fenced(before), ""]
    for evaluation in evaluations:
        if evaluation.sample is not None:
            out += [f"### Sample at step {evaluation.cells[0]}", "", fenced(evaluation.sample), ""]
    return out


def benchmarks_section(run: RunData) -> list[str]:
    scored = content.training_benchmarks(run)
    out: list[str] = []
    if scored is None:
        out += ["no benchmark tasks scored during training (--eval-tasks)", ""]
    else:
        out += [
            f"At step {scored.step} (zero-shot, the first --eval-tasks-limit examples per task):",
            "",
            table(content.BENCHMARK_COLUMNS, scored.rows),
            "",
        ]
        if scored.step_rows:
            out += ["### Centered values per step", ""]
            out += [table(scored.step_columns, scored.step_rows), ""]
    for result in content.hand_evals(run):
        out += [f"### {cell(result.file)}", "", cell(result.note), ""]
        out += [table(content.BENCHMARK_COLUMNS, result.rows), ""]
    return out


def render_markdown(
    run: RunData, speed: InferenceSpeed, *, generated: str, version: str, html_name: str
) -> str:
    backtracks = content.backtrack_rows(run)
    post = content.post_training(run)
    sections = [
        ("Summary", [key_value(content.summary_rows(run)), ""]),
        *([("Post-training", post_training_section(post, html_name))] if post else []),
        ("Hardware", [key_value(content.hardware_rows(run)), ""]),
        ("Curves", curves_section(run, html_name)),
        ("Benchmarks", benchmarks_section(run)),
        (
            "Backtracking events",
            [table(content.BACKTRACK_COLUMNS, backtracks) if backtracks else "none", ""],
        ),
        ("Evaluations and samples", samples_section(run)),
        ("Inference speed", [key_value(content.speed_rows(speed)), ""]),
        ("Configuration", config_section(run)),
    ]
    out = [
        f"# Training report: {cell(run.name)}",
        "",
        f"Generated {generated} by scratchlm {version}. "
        f"Plots: [{cell(html_name)}]({link_target(html_name)}).",
        "",
    ]
    for title, lines in sections:
        out += [f"## {title}", "", *lines]
    return "\n".join(out)
