"""Render docs/results.md and its charts (docs/img/, with matplotlib) from bench/results/*.json, published.yaml,
header.md and <dataset>.notes.md (bench/README.md)."""

import json
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

import common
import ssl_study
import yaml
from common import REPO, fmt_time

METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
METRIC_LABELS = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"]
ABLATION_METRICS = ["hit@5", "hit@10", "ndcg@5", "ndcg@10"]
SHORTFALL = -0.10  # ours / published - 1 below this on HR@10 or NDCG@10: the notes must say why
# The papers' numbers and the report's datasets and models are data, not code: published.yaml says what each holds.
_DATA = yaml.safe_load((REPO / "bench" / "results" / "published.yaml").read_text())
SOURCES, PUBLISHED, PUBLISHED_ABLATIONS = _DATA["sources"], _DATA["published"], _DATA["ablations"]
DATASET_ORDER, HEADLINE_MODELS, IMPLEMENTATIONS = _DATA["datasets"], _DATA["models"], _DATA["implementations"]
HEADER = (REPO / "bench" / "results" / "header.md").read_text()
# The protocol's settings and each model's own (properties/): they tell a default setup from a changed one.
PROTOCOL = {}
for _name in ("overall", "backbone"):
    PROTOCOL.update(yaml.safe_load((REPO / "properties" / f"{_name}.yaml").read_text()))
MODEL_SETTINGS = {p.stem: yaml.safe_load(p.read_text()) or {} for p in (REPO / "properties" / "model").glob("*.yaml")}


def setup_label(record):
    """What distinguishes a set of runs: the tag, else its config files and overrides other than the epoch budget."""
    parts = [Path(f).stem for f in record.get("config_files") or []]
    parts += [f"{k}={v}" for k, v in (record.get("overrides") or {}).items() if k != "epochs"]
    return record.get("tag") or ", ".join(parts) or "defaults"


def by_run(records):
    return sorted(records, key=lambda r: (r["model"], r.get("tag") or "", r["seed"]))


def run_groups(records):
    groups = OrderedDict()
    for r in by_run(r for r in records if r.get("status") == "ok"):
        overrides = json.dumps(r.get("overrides") or {}, sort_keys=True, default=str)
        groups.setdefault((r["model"], r.get("tag") or "", overrides, tuple(r.get("config_files") or ())), []).append(r)
    return groups


def machine_label(machine):
    machine = machine or {}
    device = machine.get("device")  # None when the run ended before reporting it
    if device == "cuda" and machine.get("gpu_name"):
        return f"cuda: {machine['gpu_name']}"
    cores = machine.get("cpu_affinity") or machine.get("cpu_count")
    cpu = (machine.get("cpu_model") or "unknown CPU") + (f", {cores} cores" if cores else "")
    return f"{device}: {cpu}" if device else cpu


def epochs_so_far(record):
    n = record["valid_curve"][-1][0] + 1
    return f"{n} epoch{'' if n == 1 else 's'}"


def tests(group, metric):
    return [v for v in ((r.get("test") or {}).get(metric) for r in group) if v is not None]


def fmt_metric(group, metric):
    values = tests(group, metric)
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def mean_metric(group, metric):
    return statistics.mean(tests(group, metric)) if tests(group, metric) else None


def fmt_rel(ours, published):
    return "-" if ours is None or not published else f"{(ours / published - 1) * 100:+.1f}%".replace("-", "−")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows])


def is_partial(group):
    return any(not r.get("stopped_early") for r in group)


def evidence(group):
    """How many seeds and epochs a group's runs have, and whether early stopping ended them."""
    epochs = ", ".join(str(r.get("epochs_trained")) for r in group)
    end = f"**partial (budget of {group[0].get('epochs')})**" if is_partial(group) else "early-stopped"
    return f"{len(group)} seed{'s' if len(group) > 1 else ''}, {epochs} epochs, {end}"


def is_default_setup(record):
    """No config files, no overrides but the epoch budget and neutral ones: the protocol's (or the model's) own value,
    or a key of other models only (e.g. SRMA's ``complement_epochs`` given to every run of a set)."""
    own = {**PROTOCOL, **MODEL_SETTINGS.get(record["model"], {})}
    others = {key for name, cfg in MODEL_SETTINGS.items() if name != record["model"] for key in cfg}

    def neutral(key, value):
        return key == "epochs" or (own[key] == value if key in own else key in others)

    return not record.get("config_files") and all(neutral(k, v) for k, v in (record.get("overrides") or {}).items())


def best_evidence(candidates, model=None):
    """Of several run groups of one setup, the one to show: complete before partial, then the most seeds, then the
    most epochs, then (for a model with several implementations) the one named ``model``; None if there are none."""
    return max(candidates, default=None, key=lambda g: (
        not is_partial(g), len(g), statistics.mean(r.get("epochs_trained") or 0 for r in g), g[0]["model"] == model))


def in_progress(records, model):
    """A stopped (timeout / interrupted) default-setup run of ``model`` that the runner will continue, if any."""
    runs = [r for r in records if r.get("status") in ("timeout", "interrupted") and r.get("valid_curve")
            and r["model"] in IMPLEMENTATIONS.get(model, [model]) and is_default_setup(r)]
    return max(runs, key=lambda r: len(r["valid_curve"])) if runs else None


def headline(dataset, groups, other):
    """One row per model of the report: our best-evidence run next to each published number, or why there is none."""
    rows, short = [], []
    for model in HEADLINE_MODELS:
        names = IMPLEMENTATIONS.get(model, [model])
        group = best_evidence([g for g in groups.values() if g[0]["model"] in names and is_default_setup(g[0])], model)
        pubs = [(source, dict(zip(METRICS, v))) for source, m, v in PUBLISHED.get(dataset, []) if m == model]
        pub_txt = "<br>".join(
            " / ".join("n/a" if v[m] is None else f"{v[m]:.4f}" for m in ("hit@10", "ndcg@10")) + f" ({source})"
            for source, v in pubs) or "-"
        running = in_progress(other, model) if group is None or is_partial(group) else None
        if group is None:
            what = "not run" if not running else (
                f"in progress: {epochs_so_far(running)} so far (best valid NDCG@10 "
                f"{max(score for _, score in running['valid_curve']):.4f}); the runner continues it")
            rows.append([f"**{model}**", what, "-", "-", pub_txt, "-"])
            continue
        partial, ours = is_partial(group), {m: mean_metric(group, m) for m in ("hit@10", "ndcg@10")}
        what = f"{group[0]['model']}, {evidence(group)}"
        what += f"; a longer run is in progress ({epochs_so_far(running)} so far)" if running else ""
        diffs = []
        for source, values in pubs:
            diffs.append(" / ".join(fmt_rel(ours[m], values[m]) for m in ("hit@10", "ndcg@10"))
                         + (" (partial)" if partial else ""))
            compared = [m for m in ("hit@10", "ndcg@10") if ours[m] is not None and values[m]]
            worst = min((ours[m] / values[m] - 1 for m in compared), default=0.0)
            if worst < SHORTFALL and not partial:
                short.append(f"{model} vs the {source} ({worst * 100:+.1f}%)".replace("-", "−"))
        rows.append([f"**{model}**", what, fmt_metric(group, "hit@10"), fmt_metric(group, "ndcg@10"), pub_txt,
                     "<br>".join(diffs) or "-"])
    header = ["Model", "Our run", "HR@10", "NDCG@10", "Published HR@10 / NDCG@10", "Ours / published − 1"]
    return [table(header, rows), ""] + (["More than 10 % below a published number (complete runs): "
                                         + "; ".join(short) + ". The reasons are in *Reading these numbers* above.",
                                         ""] if short else [])


def ablation_table(dataset, groups):
    """The SRMA paper's ablations next to our runs of the variants, so that the paper's ordering can be checked."""
    rows = []
    for label, model, config_file, values in PUBLISHED_ABLATIONS.get(dataset, []):
        files = (config_file,) if config_file else ()
        group = best_evidence([g for g in groups.values() if g[0]["model"] == model and is_default_setup(
            dict(g[0], config_files=[])) and tuple(g[0].get("config_files") or ()) == files])
        ours = [fmt_metric(group, m) if group else "-" for m in ABLATION_METRICS]
        rows.append([label, evidence(group) if group else "not run", *ours, *[f"{v:.4f}" for v in values]])
    labels = ["HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    return [] if not rows else [
        "### SRMA paper's ablations (test)", "",
        "Each variant is its config file in `properties/ablation/` (none: the model's defaults), otherwise the "
        "protocol's defaults; the paper's values are from its Table 2 and its encoder-complement table.", "",
        table(["Variant", "Our run", *[f"ours {m}" for m in labels], *[f"paper {m}" for m in labels]], rows), "",
    ]


def render_dataset(dataset, records, notes=None):
    groups, other = run_groups(records), [r for r in records if r.get("status") != "ok"]
    out = [f"## {dataset}", "", "### Every model at a glance (test)", "",
           "Our run per model: the protocol's defaults (no overrides but the epoch budget); a run to early stopping "
           "when there is one, else the longest partial run. SASRec rows may come from `PluginSASRec`, RecBole's "
           "SASRec on the plugin's fast path (same parameters and scores), BERT4Rec rows from `PluginBERT4Rec` "
           "likewise. Seeds: mean ± sample std.", ""]
    if "+" in dataset:  # a protocol switch: none of the dataset's default runs, so no at-a-glance table
        out[2:] = [f"Runs with {dataset.split('+', 1)[1].replace('+', ' and ')} on (docs/datasets.md, \"Protocols\"): "
                   "comparable with each other and the numbers published under that protocol only.", ""]
    else:
        out += headline(dataset, groups, other) + ablation_table(dataset, groups)
    out += ["### Reading these numbers", "", notes.strip(), ""] if notes else []
    rows = []
    for group in groups.values():
        stopped = [bool(r.get("stopped_early")) for r in group]
        walls = [r["wall_time_s"] for r in group if r.get("wall_time_s") is not None]
        rows.append([
            f"**{group[0]['model']}**", setup_label(group[0]), ", ".join(str(r["seed"]) for r in group),
            *[fmt_metric(group, m) for m in METRICS], ", ".join(str(r.get("epochs_trained")) for r in group)
            + f" / {', '.join(sorted({str(r.get('epochs')) for r in group}))}",
            "yes" if all(stopped) else "no" if not any(stopped) else f"{sum(stopped)}/{len(stopped)}",
            "partial (budget)" if is_partial(group) else "complete", fmt_time(statistics.mean(walls)) if walls else "-",
            "; ".join(sorted({machine_label(r.get("machine")) for r in group})),
        ])
    header = ["Model", "Setup", "Seed(s)", *METRIC_LABELS, "Epochs trained / budget", "Stopped early", "Run",
              "Wall time (mean)", "Machine"]
    out += ["### Our runs (test)", "", table(header, rows) if rows else "No completed runs yet.", ""]

    published = PUBLISHED.get(dataset, [])
    if published:
        out += ["### Published numbers (test, full ranking)", "",
                table(["Model", "Source", *METRIC_LABELS],
                      [[m, s, *("n/a" if x is None else f"{x:.4f}" for x in v)] for s, m, v in published]),
                "", "Sources: " + "; ".join(f"{name}: {SOURCES[name]}" for name in dict.fromkeys(
                    source for source, _, _ in published)) + ".", ""]
        if any(v is None for _, _, values in published for v in values):
            out += ["n/a: not reported by the source, or a value that cannot be right (it breaks NDCG@5 ≤ NDCG@10 ≤ "
                    "NDCG@20), so it is left out and never compared.", ""]
        compare = []
        for group in groups.values():
            label = (f"{group[0]['model']} ({setup_label(group[0])}; {len(group)} seed{'s' if len(group) > 1 else ''}"
                     f"; {'partial (budget)' if is_partial(group) else 'complete'})")
            ours = [mean_metric(group, m) for m in METRICS]
            compare += [[label, s, *map(fmt_rel, ours, v)] for s, m, v in published if m == group[0]["model"]]
        if compare:
            out += ["### Ours vs published: ours / published − 1", "",
                    table(["Our run", "Published in", *METRIC_LABELS], compare), ""]

    out += ["### How each run was produced", ""] if groups else []
    for r in by_run(r for r in records if r.get("status") == "ok"):
        machine = r.get("machine") or {}
        keys = ("hostname", "platform", "python", "torch", "recbole", "torch_threads")
        detail = "; ".join([machine_label(machine)] + [f"{k} {machine[k]}" for k in keys if machine.get(k) is not None])
        out.append(
            f"- **{r['model']}**, seed {r['seed']}, setup {setup_label(r)}: {r.get('epochs_trained')} of "
            f"{r.get('epochs')} epochs, best epoch {r.get('best_epoch')}, "
            f"{'complete (early stopping)' if r.get('stopped_early') else 'partial (budget)'}; wall time "
            f"{fmt_time(r.get('wall_time_s'))}, peak RSS {r.get('peak_rss_mb')} MiB; started {r.get('started_utc')}; "
            f"commit {(r.get('git_commit') or '?')[:10]}{' (uncommitted changes)' if r.get('git_dirty') else ''}; "
            f"machine: {detail}.  \n  Command: `{r.get('command')}`  \n"
            f"  Same run outside the benchmark: `{r.get('equivalent_command')}`")
    out += [""] if groups else []

    out += ["### Runs without results", ""] if other else []
    for r in by_run(other):
        if r["status"] in ("timeout", "interrupted"):
            why = (f"stopped by the time budget of {fmt_time(r.get('time_budget_s'))}" if r["status"] == "timeout"
                   else "stopped from outside (end of a session)")
            if r.get("valid_curve"):
                why += (f" after {epochs_so_far(r)} (best valid NDCG@10 {max(s for _, s in r['valid_curve']):.4f}); "
                        + ("the runner continues it" if r.get("resumable") else "it will start again"))
        else:
            lines = [line for line in (r.get("error_tail") or "").splitlines() if line.strip()]
            why = "crashed" + (f": {lines[-1].strip()[:200]}" if lines else "")
        out.append(
            f"- **{r['model']}**, seed {r['seed']}, setup {setup_label(r)}: `{r['status']}`, {why}, after "
            f"{fmt_time(r.get('wall_time_s'))}; started {r.get('started_utc')}; machine: "
            f"{machine_label(r.get('machine'))}; log `{r.get('log')}`.  \n  Command: `{r.get('command')}`")
    return out + ([""] if other else [])


def plot_dataset(dataset, records, img_dir):
    """Ours (hatched when partial) next to the published test HR@10 and NDCG@10, and the validation curves; returns
    the file names made (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    groups, made = run_groups(records), []
    Path(img_dir).mkdir(parents=True, exist_ok=True)

    def save(fig, name):
        fig.savefig(Path(img_dir) / name, dpi=110)
        plt.close(fig)
        made.append(name)

    bars = [(f"{g[0]['model']}\n{setup_label(g[0])}", g[0]["model"],
             {m: mean_metric(g, m) for m in ("hit@10", "ndcg@10")}, is_partial(g), "ours") for g in groups.values()]
    bars += [(f"{model}\n{source}", model, dict(zip(METRICS, values)), False, "published")
             for source, model, values in PUBLISHED.get(dataset, [])]
    if bars:
        bars.sort(key=lambda b: (b[1], b[4] != "published"))
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.55 * len(bars) + 3), 5.5))
        for ax, metric, label in zip(axes, ("hit@10", "ndcg@10"), ("HR@10", "NDCG@10")):
            for i, (name, _, values, partial, kind) in enumerate(bars):
                ax.bar(i, values.get(metric) or 0.0, color="#4c72b0" if kind == "ours" else "#bbbbbb",
                       hatch="//" if partial else None, edgecolor="black", linewidth=0.4)
                if values.get(metric) is None:
                    ax.text(i, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=6)
            ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=90, fontsize=6)
            ax.set_title(f"{dataset}: test {label}")
            ax.grid(axis="y", alpha=0.3)
        fig.legend(  # above the axes, because inside them it hides the tallest bars
            handles=[plt.Rectangle((0, 0), 1, 1, color="#4c72b0"), plt.Rectangle((0, 0), 1, 1, color="#bbbbbb"),
                     plt.Rectangle((0, 0), 1, 1, facecolor="#4c72b0", hatch="//", edgecolor="black")],
            labels=["ours (complete)", "published", "ours, partial (budget)"], fontsize=8, ncol=3, loc="upper center")
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        save(fig, f"{dataset}-vs-published.png")

    curves = [(group[0], r) for group in groups.values() for r in group if r.get("valid_curve")]
    curves += [(r, r) for r in records if r.get("status") in ("timeout", "interrupted") and r.get("valid_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (first, r) in enumerate(curves):
            ax.plot(*zip(*r["valid_curve"]), marker=".", color=plt.get_cmap("tab20")(i % 20),
                    linestyle=("-", "--", ":", "-.")[i // 20 % 4], label=f"{r['model']} {setup_label(first)} seed "
                    f"{r['seed']}" + (" (in progress)" if r.get("status") != "ok" else ""))
        ax.set(xlabel="epoch", ylabel="validation NDCG@10 (the early-stopping metric)",
               title=f"{dataset}: validation curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        save(fig, f"{dataset}-valid-curves.png")
    return made


def section_key(record):
    """A run under a protocol switch (docs/datasets.md, "Protocols") goes to a section ``<dataset>+<switch>``."""
    protocol = record.get("protocol") or {}
    return "+".join([record["dataset"], *(k for k in ("exclude_history_items", "train_on_validation_item")
                                          if protocol.get(k))])


def render(records, notes=None, images=None, study=None, study_images=None):
    """The page; ``notes`` maps a section (dataset) to its hand-written reading, ``images`` to its charts' files;
    ``study`` (an ``ssl_study.Study``) adds issue 50's section, with ``study_images`` by dataset."""
    by_dataset = OrderedDict()
    for r in records:
        by_dataset.setdefault(section_key(r), []).append(r)
    for dataset, runs in by_dataset.items():  # one table, one protocol (bench/run_models.py records each run's)
        seen = {}
        for r in runs:
            if r.get("protocol"):
                seen.setdefault(json.dumps(r["protocol"], sort_keys=True), []).append(f"{r['model']} seed {r['seed']}")
        if len(seen) > 1:
            variants = "; ".join(f"{', '.join(names)}: {protocol}" for protocol, names in seen.items())
            raise SystemExit(f"error: {dataset}: runs with different protocols cannot share a table ({variants})")
    if not by_dataset:
        return "\n".join([HEADER, "No benchmark records yet: run `bench/run_models.py` (see `bench/README.md`).", ""])
    out = [HEADER]  # the report's datasets always have a section, so that what was not run is said, not left out
    for dataset in DATASET_ORDER + sorted(d for d in by_dataset if d not in DATASET_ORDER):
        section = render_dataset(dataset, by_dataset.get(dataset, []), (notes or {}).get(dataset))
        charts = [f"![{name[:-4]}](img/{name})" for name in (images or {}).get(dataset, [])]
        out += section[:2] + (charts + [""] if charts else []) + section[2:]
    if study is not None and study.bases:
        out += render_study(study, (notes or {}).get("ssl-study"), study_images)
    return "\n".join(out).rstrip() + "\n"


def _setting_label(setting):
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"


def _walls(runs):
    walls = [r["wall_time_s"] for r in runs if r.get("wall_time_s") is not None]
    return fmt_time(statistics.mean(walls)) if walls else "-"


def _epoch_median(runs):
    times = [t for r in runs for _, t in r.get("epoch_times_s") or []]
    return f"{statistics.median(times):.1f} s" if times else "-"


def study_rows(study, protocol, dataset):
    """The base and each model's pick (or, while its grid runs, its best point so far by validation NDCG@10)."""
    from scipy import stats

    base = study.bases.get((protocol, dataset)) or []
    values = [r["test"]["ndcg@10"] for r in base]
    base_mean = statistics.mean(values) if values else None
    base_std = statistics.stdev(values) if len(values) > 1 else None
    rows, gains = [], {}

    def row(model, label, runs, note=""):
        ndcg = tests(runs, "ndcg@10")
        diff = p_value = sigmas = "-"
        if model != ssl_study.BASE and base_mean and ndcg:
            gain = statistics.mean(ndcg) / base_mean - 1
            gains[model] = (gain, statistics.mean(ndcg) - base_mean, base_std, len(ndcg), note)
            diff = fmt_rel(statistics.mean(ndcg), base_mean)
            if base_std:
                sigmas = f"{(statistics.mean(ndcg) - base_mean) / base_std:+.1f}".replace("-", "−")
            if len(ndcg) > 1 and len(values) > 1:
                p_value = f"{stats.ttest_ind(ndcg, values, equal_var=False).pvalue:.3f}"
        epochs = ", ".join(f"{r.get('best_epoch')}/{r.get('epochs_trained')}" for r in runs)
        rows.append([f"**{model}**", label + (f" ({note})" if note else ""), ", ".join(str(r["seed"]) for r in runs),
                     fmt_metric(runs, "hit@10"), fmt_metric(runs, "ndcg@10"), diff, sigmas, p_value,
                     _epoch_median(runs), epochs, _walls(runs)])
    if base:
        row(ssl_study.BASE, "the strong base" + ("" if len(base) == len(ssl_study.SEEDS) else " (seeds so far)"), base)
    for model in ssl_study.MODELS:
        grid = [(s, r) for s, r in study.grids.get((protocol, dataset, model), []) if r]
        if (protocol, dataset, model) in study.picks:
            setting = study.picks[protocol, dataset, model]
            runs = study.runs.get((protocol, dataset, model)) or [r for s, r in grid if s == setting]
            final = (protocol, dataset, model) in study.final
            row(model, _setting_label(setting), runs, "" if final else "more seeds to come")
            control, control_runs = study.controls.get((protocol, dataset, model), (None, []))
            if control_runs:
                rows.append(_control_row(model, control, control_runs, runs, len(control_runs) < len(runs)))
        elif grid:
            setting, record = max(grid, key=lambda point: point[1]["valid"]["ndcg@10"])
            points = len(ssl_study.WEIGHTS[model][1]) + 1  # the weights, then the rate
            row(model, _setting_label(setting), [record], f"grid {len(grid)} of {points} so far")
    return rows, gains


def _control_row(model, setting, runs, pick_runs, partial):
    """The control against the model's own pick (not the base): what the self-supervised term itself adds."""
    ours, pick = mean_metric(runs, "ndcg@10"), mean_metric(pick_runs, "ndcg@10")
    epochs = ", ".join(f"{r.get('best_epoch')}/{r.get('epochs_trained')}" for r in runs)
    return [f"{model} control", _setting_label(setting) + (" (seeds so far)" if partial else ""),
            ", ".join(str(r["seed"]) for r in runs), fmt_metric(runs, "hit@10"), fmt_metric(runs, "ndcg@10"),
            "pick vs control " + fmt_rel(pick, ours), "-", "-", _epoch_median(runs), epochs, _walls(runs)]


def study_grid_rows(study, protocol, dataset):
    rows = []
    for model in ssl_study.MODELS:
        pick = study.picks.get((protocol, dataset, model))
        for setting, record in study.grids.get((protocol, dataset, model), []):
            if record is None:
                continue
            rows.append([f"**{model}**", _setting_label(setting) + (" **(pick)**" if setting == pick else ""),
                         f"{record['valid']['ndcg@10']:.4f}", f"{record['test']['ndcg@10']:.4f}",
                         f"{record.get('best_epoch')}/{record.get('epochs_trained')}", _epoch_median([record]),
                         fmt_time(record.get("wall_time_s")), machine_label(record.get("machine")),
                         f"`{record['tag']}`"])
    return rows


def plot_study(study, dataset, img_dir):
    """Each model's test NDCG@10 relative to the base under each protocol; the band is two base standard deviations."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    protocols = [p for p in ssl_study.PROTOCOLS if study.bases.get((p, dataset))]
    gains = {p: study_rows(study, p, dataset)[1] for p in protocols}
    if not any(gains.values()):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(protocols)
    for j, protocol in enumerate(protocols):
        base = [r["test"]["ndcg@10"] for r in study.bases[protocol, dataset]]
        mean = statistics.mean(base)
        color = ("#4c72b0", "#dd8452")[j % 2]
        band = 2 * statistics.stdev(base) / mean * 100 if len(base) > 1 else 0.0
        ax.axhspan(-band, band, color=color, alpha=0.12, label=ssl_study.PROTOCOLS[protocol]["label"])
        for i, model in enumerate(ssl_study.MODELS):
            if model in gains[protocol]:
                gain, _, _, _, note = gains[protocol][model]
                ax.bar(i + (j - (len(protocols) - 1) / 2) * width, gain * 100, width, color=color,
                       edgecolor="black", linewidth=0.4, hatch="//" if note else None)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(ssl_study.MODELS)), ssl_study.MODELS)
    ax.set(ylabel="test NDCG@10 vs the strong base (%)",
           title=f"{dataset}: each model's pick on the strong base (band: ±2 base std; hatched: not final)")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"ssl-study-{dataset}.png"
    Path(img_dir).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(img_dir) / name, dpi=110)
    plt.close(fig)
    return name


def render_study(study, notes=None, images=None):
    """Issue 50's section: per dataset and protocol, the strong base against each self-supervised model's pick."""
    out = ["## Does self-supervision help over the strong base?", "",
           "Every self-supervised model on the strong base of its protocol (the same encoder, objective and "
           "hyper-parameters, plus the model's own term), its term's weight and one rate tuned on validation NDCG@10, "
           "against that base: `python bench/ssl_study.py run` (bench/README.md) runs the whole study and continues "
           "where it stopped; `python bench/ssl_study.py plan` says what remains. Per model: its defaults, its weight "
           "at about a third and three times the default, then one rate at another value at the better weight; the "
           "pick is the best of the four by validation NDCG@10, and gets seeds 2021 and 2022 when its seed-2020 test "
           "NDCG@10 lies within two base standard deviations of the base's mean. *SRMA control*: SRMA's pick without "
           "its contrastive term (its next-item loss also runs through extra layers the base lacks). Test metrics; "
           "seeds: mean ± sample std; *vs base*: relative difference of the means; *Δ / base std*: the difference "
           "in standard deviations of the base's three seeds; *p*: Welch's t-test over seeds (only with two or more "
           "seeds on each side). Epoch: median training time of one epoch; epochs: best / trained.", ""]
    if notes:
        out += ["### Reading the study", "", notes.strip(), ""]
    header = ["Model", "Setting", "Seeds", "HR@10", "NDCG@10", "vs base", "Δ / base std", "p", "Epoch", "Epochs",
              "Wall time (mean)"]
    grid_header = ["Model", "Setting", "valid NDCG@10", "test NDCG@10", "Epochs", "Epoch", "Wall time", "Machine",
                   "Tag"]
    for dataset in ssl_study.DATASETS + ["yelp"]:
        blocks = [p for p in ssl_study.PROTOCOLS if study.bases.get((p, dataset))]
        if not blocks:
            continue
        out += [f"### {dataset}", ""]
        if (images or {}).get(dataset):
            out += [f"![ssl-study-{dataset}](img/{images[dataset]})", ""]
        for protocol in blocks:
            spec = ssl_study.PROTOCOLS[protocol]
            files = " ".join(spec["config_files"]) or "none"
            keys = " ".join(f"--set {k}={v}" for k, v in spec["overrides"].items())
            out += [f"#### {dataset}, {spec['label']}", "",
                    f"Base and models: config files {files}, `{keys}`; tag `{spec['tag']}` followed by the setting.",
                    "", table(header, study_rows(study, protocol, dataset)[0]), "",
                    "Machines: " + "; ".join(sorted({machine_label(r.get("machine")) for r in study.block_runs(
                        protocol, dataset)})) + ".", ""]
            grid = study_grid_rows(study, protocol, dataset)
            if grid:
                out += ["<details><summary>The grid (seed 2020)</summary>", "", table(grid_header, grid), "",
                        "</details>", ""]
    return out


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("--results-dir", default=str(REPO / "bench" / "results"), help="default: %(default)s")
    parser.add_argument("--out", default=str(REPO / "docs" / "results.md"), help="default: %(default)s")
    args = parser.parse_args(argv)
    records, out = [], Path(args.out)
    for path in sorted(Path(args.results_dir).glob("*.json")):
        data = json.loads(path.read_text() or "[]")
        if not isinstance(data, list):
            raise SystemExit(f"error: {path} does not hold a JSON list of run records")
        records += data
    images = {d: plot_dataset(d, [r for r in records if section_key(r) == d], out.parent / "img")
              for d in sorted({section_key(r) for r in records})}
    if records and not any(images.values()):
        print("matplotlib is not installed: no charts (pip install -e \".[bench]\")")
    notes = {p.name[: -len(".notes.md")]: p.read_text() for p in Path(args.results_dir).glob("*.notes.md")}
    study = ssl_study.Study(ssl_study.load_all(args.results_dir)).build()
    study_images = {d: plot_study(study, d, out.parent / "img") for d in ssl_study.DATASETS + ["yelp"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(records, notes, images, study, study_images))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
