"""report.html: one self-contained page per run (no network, no server): the results tables, every plot, an
episode viewer that sets the methods' episodes on one task side by side, sampled training data, and the
run's settings and stage manifests.

Everything is read from the run directory (results.md, *.png, eval/*.json, branches/, data/, manifests);
the page embeds it (plots as data: URLs, episodes as JSON that a few lines of JavaScript render).
"""

from __future__ import annotations

import base64
import html
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from firsthand.artifacts import MANIFEST, read_jsonl, read_manifest, write_text_atomic
from firsthand.layout import RunLayout, method_name, ordered

FOLD_CHARS = 600
"""Observations longer than this fold (ScienceWorld's run to thousands of characters)."""


def write_html(run: Path, out: Path | None = None, *, samples: int = 4, seed: int = 0) -> Path:
    """Write the report page of the run (or sweep) directory `run` to `out` (default run/report.html).

    `samples`: expert trajectories, world-model targets and reflections shown in the data views, drawn with
    `seed`."""
    run = Path(run)
    if not (run / "results.md").is_file() and not (run / "sweep.md").is_file():
        from firsthand.contract import InvalidInputError

        raise InvalidInputError(
            f"{str(run)!r} holds no results.md or sweep.md: give the directory of a finished `firsthand run` or "
            f"`firsthand sweep`"
        )
    out = Path(out) if out else run / "report.html"
    sections = [("Results", _results(run)), ("Plots", _plots(run))]
    episodes = _episodes(run)
    if episodes["files"]:
        sections.append(("Episodes", VIEWER_HTML))
    data = _data_views(run, samples, seed)
    if data:
        sections.append(("Data", data))
    sections.append(("Settings", _settings(run)))
    nav = " · ".join(f'<a href="#{name.lower()}">{name}</a>' for name, _ in sections)
    body = "\n".join(
        f'<section id="{name.lower()}"><h2>{name}</h2>\n{content}\n</section>' for name, content in sections
    )
    payload = json.dumps(episodes, separators=(",", ":")).replace("<", "\\u003c")  # no "</script>" or "<!--"
    page = PAGE.format(
        title=html.escape(f"firsthand: {run.resolve().name}"),
        style=STYLE,
        nav=nav,
        body=body,
        payload=payload,
        script=SCRIPT if episodes["files"] else "",
    )
    write_text_atomic(out, page)
    return out


# -- the sections --------------------------------------------------------------------------------
def _results(run: Path) -> str:
    text = ""
    for name in ("sweep.md", "results.md"):
        if (run / name).is_file():
            text += markdown_html((run / name).read_text(encoding="utf-8"))
    points = sorted((run / "points").glob("*/results.md")) if (run / "points").is_dir() else []
    for path in points:  # a sweep: each point's own tables, folded, and a link to its own page
        inner = markdown_html(path.read_text(encoding="utf-8"))
        name = html.escape(path.parent.name)
        link = f' (<a href="points/{name}/report.html">its page</a>)' if (path.parent / "report.html").is_file() else ""
        text += f"<details><summary>point {name}</summary>{link}{inner}</details>\n"
    return text


def _plots(run: Path) -> str:
    figures = []
    for path in sorted(run.glob("*.png")):
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
        )
    return "\n".join(figures) or "<p>No plots in this directory.</p>"


def _episodes(run: Path) -> dict[str, Any]:
    """Every evaluation's episodes, keyed split -> seed -> method -> task (what the viewer reads)."""
    tree: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    files = 0
    for label, seed, split, path in RunLayout(run).evaluations():
        episodes = json.loads(path.read_text(encoding="utf-8")).get("episodes", [])
        files += 1
        tree[split][str(seed)][str(label)] = {
            e["task"]: {
                "won": e["won"],
                "goal": e.get("goal", ""),
                "actions": e.get("actions", []),
                "observations": e.get("observations", []),
                "invalid": e.get("invalid", []),
                "replies": e.get("replies", []),
            }
            for e in episodes
        }
    methods = ordered({m for seeds in tree.values() for by_method in seeds.values() for m in by_method})
    return {
        "files": files,
        "methods": methods,
        "names": {m: method_name(m) for m in methods},
        "episodes": tree,
        "fold": FOLD_CHARS,
    }


def _data_views(run: Path, samples: int, seed: int) -> str:
    """Sampled expert trajectories with their branches, world-model targets and reflections, and the counters
    of the branch and build stages."""
    parts = []
    branches = run / "branches"
    if (branches / "trajectories.jsonl").is_file():
        trajectories = list(read_jsonl(branches / "trajectories.jsonl"))
        by_state: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        chosen = random.Random(seed).sample(trajectories, min(samples, len(trajectories)))
        ids = {t["id"] for t in chosen}
        for path in sorted(branches.glob("branches-*.jsonl")):
            for b in read_jsonl(path):
                if b["trajectory_id"] in ids:
                    by_state[(b["trajectory_id"], b["step_index"])].append(b)
        parts.append("<h3>Expert trajectories and their branches</h3>")
        parts.append(_counters(branches, "branch"))
        for t in chosen:
            parts.append(_trajectory_html(t, by_state))
    for method, kind, title in (
        ("iwm", "alternative", "World-model targets (IWM)"),
        ("sr", "reflection", "Reflections (SR)"),
    ):
        folder = run / "data" / method
        if not (folder / "data.jsonl").is_file():
            continue
        records = [r for r in read_jsonl(folder / "data.jsonl") if r.get("kind", kind) == kind]
        parts.append(f"<h3>{title}</h3>")
        parts.append(_counters(folder, "build"))
        for r in random.Random(seed).sample(records, min(samples, len(records))):
            where = html.escape(f"{r.get('trajectory_id', '')}, step {r.get('step_index', '')}")
            parts.append(
                f'<div class="record"><div class="where">{where}</div>'
                f"<details><summary>prompt</summary><pre>{html.escape(r['prompt'])}</pre></details>"
                f'<pre class="completion">{html.escape(r["completion"])}</pre></div>'
            )
    return "\n".join(parts)


def _counters(folder: Path, stage: str) -> str:
    if not (folder / MANIFEST).is_file():
        return ""
    stats = read_manifest(folder, stage).get("stats") or {}
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v:,}</td></tr>" for k, v in stats.items())
    return f'<table class="counters"><caption>{stage} counters</caption>{cells}</table>' if cells else ""


def _trajectory_html(t: dict[str, Any], by_state: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    rows = []
    for i, step in enumerate(t["steps"]):
        branches = by_state.get((t["id"], i), [])
        outcomes = "".join(
            f'<li class="{"expert" if b["expert"] else "alt"}"><b>{html.escape(b["action"])}</b>'
            f"{' (expert)' if b['expert'] else ''}{' — won' if b['won'] else ''}: "
            f"{_fold(b['next_observation'])}</li>"
            for b in sorted(branches, key=lambda b: b["expert"])
        )
        rows.append(f'<li><div class="obs">{_fold(step["observation"])}</div><ul class="branches">{outcomes}</ul></li>')
    head = html.escape(f"{t['id']} ({t['task']}): {t['goal']}")
    return f'<details class="trajectory"><summary>{head}</summary><ol>{"".join(rows)}</ol></details>'


def _fold(text: str) -> str:
    if len(text) <= FOLD_CHARS:
        return f"<span>{html.escape(text)}</span>"
    return f"<details><summary>{html.escape(text[:160])} …</summary><pre>{html.escape(text)}</pre></details>"


def _settings(run: Path) -> str:
    parts = []
    for name in ("preset.json", "sweep.json"):
        if (run / name).is_file():
            parts.append(f"<h3>{name}</h3><pre>{html.escape((run / name).read_text(encoding='utf-8'))}</pre>")
    manifests = sorted(p for p in run.rglob(MANIFEST) if "checkpoint" not in p.parts)
    for path in manifests:
        manifest = read_manifest(path.parent)
        manifest.pop("file_hashes", None)
        where = html.escape(str(path.parent.relative_to(run)))
        parts.append(
            f"<details><summary>{where} ({html.escape(str(manifest.get('stage')))})</summary>"
            f"<pre>{html.escape(json.dumps(manifest, indent=1))}</pre></details>"
        )
    return "\n".join(parts)


# -- Markdown (the report's own tables) to HTML ----------------------------------------------------
def markdown_html(text: str) -> str:
    """results.md / sweep.md as HTML (markdown-it-py, CommonMark with pipe tables; raw HTML escaped), every
    heading one level down so that the page's own title stays the only h1."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + 1, 6)}"
    return md.renderer.render(tokens, md.options, {})


# -- the page -----------------------------------------------------------------------------------------
VIEWER_HTML = """<div id="viewer-controls">
<label>split <select id="split"></select></label>
<label>seed <select id="seed"></select></label>
<label>won by <select id="won-by"><option value="">(any)</option></select></label>
<label>lost by <select id="lost-by"><option value="">(any)</option></select></label>
<label>task <select id="task"></select></label>
<span id="task-count"></span>
</div>
<div id="viewer"></div>"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body><header><h1>{title}</h1><nav>{nav}</nav></header>
{body}
<script type="application/json" id="episodes-data">{payload}</script>
<script>{script}</script>
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 2em 4em; color: #222; font-size: 14px; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: .4em 0; z-index: 2; }
h1 { font-size: 1.3em; margin: .3em 0; } nav a { margin-right: .5em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; } th { background: #f3f3f3; }
figure { display: inline-block; margin: .5em; } figure img { max-width: 100%; border: 1px solid #eee; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f7f7; padding: .4em; margin: .2em 0; }
#viewer-controls label { margin-right: 1em; }
#viewer { display: flex; gap: 1em; align-items: flex-start; margin-top: .8em; }
.episode { flex: 1; min-width: 0; border: 1px solid #ccc; border-radius: 4px; padding: .4em; overflow-wrap: anywhere; }
.episode h4 { margin: .2em 0; } .episode.won h4 { color: #176317; } .episode.lost h4 { color: #a01d1d; }
.episode ol { padding-left: 1.6em; } .episode li { margin-bottom: .4em; }
.action { font-weight: bold; font-family: monospace; }
.invalid .action { color: #b00; } .invalid .tag { color: #b00; font-size: 11px; margin-left: .4em; }
.reply { font-style: italic; color: #555; white-space: pre-wrap; }
.obs { color: #333; } .goal { font-weight: bold; margin-bottom: .4em; }
.branches li.expert { color: #176317; } .branches li.alt { color: #444; }
.record { border-left: 3px solid #ccc; padding-left: .5em; margin: .6em 0; } .where { color: #777; }
caption { text-align: left; font-weight: bold; }
"""

SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("episodes-data").textContent);
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  const fill = (select, values, labels) => {
    const keep = select.querySelector('option[value=""]');
    select.innerHTML = "";
    if (keep) select.appendChild(keep);
    for (const v of values) {
      const o = document.createElement("option");
      o.value = v; o.textContent = labels ? labels(v) : v; select.appendChild(o);
    }
  };
  const fold = (text) => text.length <= data.fold ? `<span class="obs">${esc(text)}</span>` :
    `<details><summary class="obs">${esc(text.slice(0, 160))} …</summary><pre>${esc(text)}</pre></details>`;
  fill($("split"), Object.keys(data.episodes));
  fill($("won-by"), data.methods, (m) => data.names[m]);
  fill($("lost-by"), data.methods, (m) => data.names[m]);
  function current() { return data.episodes[$("split").value][$("seed").value] || {}; }
  function tasks() {
    const byMethod = current(), tasks = new Set();
    for (const m in byMethod) for (const t in byMethod[m]) tasks.add(t);
    const wonBy = $("won-by").value, lostBy = $("lost-by").value;
    return [...tasks].filter((t) =>
      (!wonBy || (byMethod[wonBy] && byMethod[wonBy][t] && byMethod[wonBy][t].won)) &&
      (!lostBy || (byMethod[lostBy] && byMethod[lostBy][t] && !byMethod[lostBy][t].won)));
  }
  function onSplit() { fill($("seed"), Object.keys(data.episodes[$("split").value])); onFilter(); }
  function onFilter() {
    const byMethod = current(), list = tasks();
    fill($("task"), list, (t) => {
      const won = data.methods.filter((m) => byMethod[m] && byMethod[m][t] && byMethod[m][t].won);
      return `${t} (won by: ${won.length ? won.map((m) => data.names[m]).join(", ") : "none"})`;
    });
    $("task-count").textContent = `${list.length} task(s)`;
    render();
  }
  function render() {
    const byMethod = current(), task = $("task").value, columns = [];
    for (const m of data.methods) {
      const e = byMethod[m] && byMethod[m][task];
      if (!e) continue;
      const steps = e.actions.map((a, i) => {
        const bad = e.invalid[i] ? " invalid" : "";
        const reply = e.replies[i] ? `<div class="reply">${esc(e.replies[i])}</div>` : "";
        const obs = e.observations.length > i ? fold(e.observations[i]) : "";
        const action = a ? esc(a) : "(no action)";
        return `<li class="step${bad}">${obs}${reply}<div><span class="action">&gt; ${action}</span>` +
          (bad ? '<span class="tag">invalid</span>' : "") + "</div></li>";
      }).join("");
      const last = e.observations.length > e.actions.length ? fold(e.observations[e.actions.length]) : "";
      columns.push(`<div class="episode ${e.won ? "won" : "lost"}" data-method="${esc(m)}">` +
        `<h4>${esc(data.names[m])}: ${e.won ? "won" : "lost"} in ${e.actions.length} steps</h4>` +
        (e.goal ? `<div class="goal">${esc(e.goal)}</div>` : "") +
        (e.observations.length ? "" : "<p>(observations not recorded by this evaluation)</p>") +
        `<ol>${steps}</ol>${last ? `<div class="final">${last}</div>` : ""}</div>`);
    }
    $("viewer").innerHTML = columns.join("") || "<p>No episode matches.</p>";
  }
  $("split").addEventListener("change", onSplit);
  $("seed").addEventListener("change", onFilter);
  $("won-by").addEventListener("change", onFilter);
  $("lost-by").addEventListener("change", onFilter);
  $("task").addEventListener("change", render);
  // a link can choose the view: report.html#split=ood_test&seed=1&won-by=sr&lost-by=il&task=ood_test-3
  const wanted = Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
  const pick = (id) => {
    if ([...$(id).options].some((o) => o.value === wanted[id])) $(id).value = wanted[id];
  };
  pick("split"); pick("won-by"); pick("lost-by");
  fill($("seed"), Object.keys(data.episodes[$("split").value])); pick("seed");
  onFilter();
  if (wanted.task) { pick("task"); render(); }
  if (Object.keys(wanted).length) document.getElementById("episodes").scrollIntoView();  // a link to a view shows it
})();
"""
