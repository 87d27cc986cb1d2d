"""The comparison as Markdown: ``report.md``, and any table as a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence

from edgeq.report.profile_section import board_profile_blocks, mode_profile_rows, mode_profile_totals
from edgeq.report.tables import (
    Results,
    analysis_rows,
    board_rows,
    latency_intervals,
    results_dict,
    table_rows,
)
from edgeq.report.task_section import task_sections

__all__ = ["markdown", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (``|`` in cells escaped, line breaks as ``<br>``)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def markdown(results: Results) -> str:
    """``report.md``: the table, the recommendation, notes and the board."""
    data = results_dict(results)
    board = data["board"]
    header, rows = table_rows(data)
    lines = [f"# {data['model']}: which .tflite to ship", "",
             f"Evaluated on {data['eval_images']} images of `{data['evaluation']}`"
             f"{'' if data['labeled'] else ' (unlabeled: agreement with the Keras model decides)'}; "
             f"latency on this host ({board.get('cpu_model') or board.get('architecture')}, "
             f"{board.get('cores')} cores) with {', '.join(str(t) for t in data['threads'])} thread(s).", "",
             "## Recommendation", "", f"**{data['recommendation']['mode'] or 'none'}**: {data['recommendation']['reason']}",
             ""]
    if latency_intervals(data):
        lines += [latency_intervals(data), ""]
    lines += ["## Every mode", "",
              "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
    a_head, a_rows = analysis_rows(data)
    if a_rows:
        lines += ["", "## Model analysis", "", "Multiply-accumulates per inference, parameters, the estimated peak of "
                  "live activations, and the MAC/s achieved at the median latency.", "",
                  "| " + " | ".join(a_head) + " |", "|" + "|".join("---" for _ in a_head) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in a_rows]
    b_head, b_rows = board_rows(data)
    if b_rows:
        lines += ["", "## On boards", "", "The same .tflite files measured on boards by `edgeq deploy`.", "",
                  "| " + " | ".join(b_head) + " |", "|" + "|".join("---" for _ in b_head) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in b_rows]
    p_head, p_rows = mode_profile_rows(data)
    if p_rows:
        t_head, t_rows = mode_profile_totals(data)
        lines += ["", "## Per operator", "", "Each operator of each mode timed alone on this host "
                  f"({data['profile']['profiles'][0]['threads'] or 'default'} thread(s)), the slowest side by side; "
                  "the residual is what the operators alone do not show (per-run work, fused operators and "
                  "delegate partitions, caches).", "", markdown_table(t_head, t_rows),
                  markdown_table(p_head, p_rows), "![slowest operators](plots/profile.png)"]
    blocks = board_profile_blocks(data)
    if blocks:
        lines += ["", "## Per operator on boards", "", "Each operator timed alone on the board by "
                  "`edgeq deploy --profile`: the slowest, the rest, and the residual the operators alone do "
                  "not show (per-run work, fused operators and delegate partitions, caches).", ""]
        for block in blocks:
            lines += [f"### {block.title}", "", block.summary, "", markdown_table(block.header, block.rows)]
    for sec in task_sections(data):
        lines += ["", f"## {sec.title}", "", sec.intro, "", markdown_table(sec.header, sec.rows)]
        if sec.plot:
            lines.append(f"![{sec.title.lower()}](plots/{sec.plot})")
    if data["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    lines += ["", "## Plots", "", "![accuracy vs latency](plots/accuracy_vs_latency.png)", "",
              "![size](plots/size.png)", "", "![latency](plots/latency.png)", "",
              f"_edgeq {data['edgeq_version']}, {data['created']}_", ""]
    return "\n".join(lines)
