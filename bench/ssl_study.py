"""Issue 50's study in one resumable command: does each self-supervised term still help on top of the strong base?

    python bench/ssl_study.py plan                  # what is done, what runs next, and about how long it takes
    setsid nohup python bench/ssl_study.py run --threads 2 --raw-data-dir ../shared/data \\
        > bench/runs/ssl_study.log 2>&1 &           # stop: kill -TERM -- -<pid>; the same command continues
    python bench/render_results.py                  # docs/results.md, section "Does self-supervision help ...?"

Per protocol (RecBole's first, then the transformer benchmark's) and dataset (amazon-toys, amazon-beauty,
amazon-sports), in this order, each step one ``bench/run_models.py`` run to early stopping:

1. the strong base, PluginSASRec, seeds 2020-2022: issue 49's runs, found by their run identity and not repeated;
2. every self-supervised model on that base with its own defaults, seed 2020 (under RecBole's protocol on
   amazon-toys these are issue 49's every-position runs, found the same way);
3. its weight at about a third and three times its default (``WEIGHTS``), then, at the better weight by validation
   NDCG@10, its one rate at another value (``RATES``): four settings per model, dataset and protocol;
4. the setting with the best validation NDCG@10 (the pick) gets seeds 2021 and 2022 when its seed-2020 test NDCG@10
   lies within two standard deviations of the base's three-seed mean: outside them one seed already answers;
5. SRMA's control (``CONTROLS``): its pick without its contrastive term, on the pick's seeds.

Then yelp under RecBole's protocol: the base and the two models with the largest mean test NDCG@10 gain over the three
Amazon sets under that protocol, each with its amazon-toys pick, three seeds. A step waits until the steps it depends
on are recorded; ``plan`` lists what can run and what waits on what.

The base is the same run identity as issue 49's: under RecBole's protocol the package's defaults with
``train_objective=every_position`` (exactly properties/strong-base/sasrec-plus-recbole-protocol.yaml, which a test
checks), under the benchmark's the protocol file, properties/encoder/rectools-sasrec.yaml, the full softmax and
patience 10 (exactly properties/strong-base/sasrec-plus-rectools.yaml). Records: the base's stay in
bench/results/every-position.json and transformer-benchmark.json; the study's other runs go to
bench/results/ssl-study/<protocol>.json, which bench/render_results.py reads for the study's section only.
"""

import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import REPO, fmt_time
from run_models import load_results, record_key, run_key

BENCHMARK = "properties/protocol/transformer-benchmark.yaml"
RESULTS_DIR = REPO / "bench" / "results"
STUDY_DIR = RESULTS_DIR / "ssl-study"
PROTOCOLS = {  # name: how the base is run, and where its records live
    "recbole": {"label": "RecBole's protocol", "tag": "every-position", "config_files": [],
                "overrides": {"train_objective": "every_position"}, "base_results": "every-position.json"},
    "benchmark": {"label": "the transformer benchmark's protocol", "tag": "tb-sasrec-plus-rectools",
                  "config_files": [BENCHMARK, "properties/encoder/rectools-sasrec.yaml"],
                  "overrides": {"next_item_loss": "full_softmax", "stopping_step": 10},
                  "base_results": "transformer-benchmark.json"},
}
DATASETS = ["amazon-toys", "amazon-beauty", "amazon-sports"]
BASE = "PluginSASRec"
SEEDS = [2020, 2021, 2022]
# The weight of each model's self-supervised term: its default (properties/model/<model>.yaml) first, then about a
# third and three times it.
WEIGHTS = {
    "CL4SRec": ("cl_lambda", [0.1, 0.03, 0.3]),
    "SRMA": ("cl_lambda", [0.1, 0.03, 0.3]),
    "CoSeRec": ("cl_lambda", [0.1, 0.03, 0.3]),
    "DuoRec": ("sem_lambda", [0.1, 0.03, 0.3]),
    "MCLRec": ("cl_lambda", [0.03, 0.01, 0.1]),
    "BT4SRec": ("alpha", [0.01, 0.003, 0.03]),
}
# Each model's one other value of the rate that sets how far its two views differ: the mask rate of the
# data-augmentation models (the one operator all four use), SRMA's neuron-mask rate (its model augmentation), and
# DuoRec's temperature (its views differ by the base's own dropout, which the study holds fixed).
RATES = {
    "CL4SRec": ("mask_gamma", 0.5),      # default 0.3
    "SRMA": ("neuron_mask_p", 0.2),      # default 0.5
    "CoSeRec": ("mask_gamma", 0.3),      # default 0.7
    "DuoRec": ("tau", 0.5),              # default 1.0
    "MCLRec": ("mask_gamma", 0.3),       # default 0.5
    "BT4SRec": ("mask_gamma", 0.5),      # default 0.3
}
# Controls: SRMA's next-item loss runs through its K extra feed-forward blocks with neuron masking, so its gain over
# the base may come from them rather than from its contrastive term. Its pick without the term (and without the
# complement encoder, which only that term uses) tells, with the pick's seeds. In every other model the next-item
# path is the base's, so its weight at 0 is the base itself.
CONTROLS = {"SRMA": {"cl_lambda": 0.0, "complement_type": "none"}}
MODELS = list(WEIGHTS)
YELP_MODELS = 2
METRIC = "ndcg@10"


@dataclass
class Step:
    protocol: str
    dataset: str
    model: str
    seed: int
    setting: dict = field(default_factory=dict)  # the study's keys on top of the base
    why: str = ""
    phase: int = 0  # the order of the ready steps: base, defaults, weights, rates, seeds

    @property
    def spec(self):
        return PROTOCOLS[self.protocol]

    @property
    def tag(self):
        return "-".join([self.spec["tag"]] + [f"{k}{v}" for k, v in self.setting.items()])

    @property
    def overrides(self):
        return {**self.spec["overrides"], **self.setting}

    @property
    def key(self):
        return run_key(self.dataset, self.model, self.seed, self.tag, self.overrides, self.spec["config_files"])

    @property
    def results(self):
        return RESULTS_DIR / self.spec["base_results"] if self.model == BASE else STUDY_DIR / f"{self.protocol}.json"

    def command(self, threads=None, raw_data_dir=None):
        cmd = [sys.executable, str(REPO / "bench" / "run_models.py"), "--dataset", self.dataset, "--models",
               self.model, "--seeds", str(self.seed), "--tag", self.tag, "--results", str(self.results)]
        cmd += ["--config-files", *self.spec["config_files"]] if self.spec["config_files"] else []
        for key, value in self.overrides.items():
            cmd += ["--set", f"{key}={value}"]
        cmd += ["--threads", str(threads)] if threads else []
        return cmd + (["--raw-data-dir", str(raw_data_dir)] if raw_data_dir else [])


def load_all(results_dir=RESULTS_DIR):
    """Every ok record the study can use, by run identity (issue 49's files and the study's own)."""
    paths = sorted(Path(results_dir).glob("*.json")) + sorted((Path(results_dir) / "ssl-study").glob("*.json"))
    return {record_key(r): r for p in paths for r in load_results(p) if r.get("status") == "ok"}


def score(record, split="test", metric=METRIC):
    return (record.get(split) or {}).get(metric)


class Study:
    """The study's steps given what is recorded: ``done``, ``ready`` (can run now) and ``waiting`` (on which)."""

    def __init__(self, records):
        self.records, self.done, self.ready, self.waiting, self._seen = records, [], [], [], set()
        # what the report shows, by (protocol, dataset[, model]): the base's runs, each model's grid points so far
        # as (setting, record or None), its pick once the grid is complete, and the pick's runs
        self.bases, self.grids, self.picks, self.runs, self.controls = {}, {}, {}, {}, {}
        self.final = set()  # (protocol, dataset, model) whose pick has all the seeds the seed rule asks for

    def need(self, step):
        """The step's record, or None after listing the step as ready."""
        record = self.records.get(step.key)
        if step.key not in self._seen:
            self._seen.add(step.key)
            (self.ready.append(step) if record is None else self.done.append((step, record)))
        return record

    def ordered(self):
        """Ready steps dataset by dataset (both protocols), the cheap answers first: each model's defaults before any
        model's grid, so that a partial study already says something about every model."""
        datasets, protocols = DATASETS + ["yelp"], list(PROTOCOLS)
        self.ready.sort(key=lambda s: (datasets.index(s.dataset), protocols.index(s.protocol), s.phase,
                                       MODELS.index(s.model) if s.model in MODELS else -1, s.seed))
        return self

    def block_runs(self, protocol, dataset):
        """Every recorded run of one protocol and dataset that the study uses."""
        return [r for step, r in self.done if (step.protocol, step.dataset) == (protocol, dataset)]

    def base(self, protocol, dataset):
        runs = [self.need(Step(protocol, dataset, BASE, seed, why="strong base")) for seed in SEEDS]
        self.bases[protocol, dataset] = [r for r in runs if r]
        return runs if all(runs) else None

    def pick(self, protocol, dataset, model):
        """The model's grid on one protocol and dataset; returns its pick's setting, or None while it waits."""
        weight_key, weights = WEIGHTS[model]
        rate_key, rate = RATES[model]
        first = {}
        for i, weight in enumerate(weights):
            setting = {} if i == 0 else {weight_key: weight}
            why = "the model's defaults" if i == 0 else f"{weight_key} grid"
            first[weight] = (setting, self.need(Step(protocol, dataset, model, 2020, setting, why, 1 + (i > 0))))
        self.grids[protocol, dataset, model] = grid = list(first.values())
        if not all(record for _, record in first.values()):
            self.waiting.append(f"{protocol} {dataset} {model}: {rate_key}={rate} waits on its {weight_key} grid")
            return None
        best_weight = max(first, key=lambda w: score(first[w][1], "valid"))
        setting = {**first[best_weight][0], rate_key: rate}
        record = self.need(Step(protocol, dataset, model, 2020, setting, f"{rate_key} at the best {weight_key}", 3))
        grid.append((setting, record))
        if record is None:
            self.waiting.append(f"{protocol} {dataset} {model}: seeds of the pick wait on its grid")
            return None
        self.picks[protocol, dataset, model] = max(grid, key=lambda point: score(point[1], "valid"))[0]
        return self.picks[protocol, dataset, model]

    def seeds(self, protocol, dataset, model, setting, base, why="the pick"):
        """Seeds 2021-2022 of a pick close to the base (within two of its standard deviations); the records."""
        first = self.records[Step(protocol, dataset, model, 2020, setting).key]
        values = [score(r) for r in base]
        if abs(score(first) - statistics.mean(values)) > 2 * statistics.stdev(values):
            self.runs[protocol, dataset, model] = [first]
            self.final.add((protocol, dataset, model))
            return [first]
        runs = [self.need(Step(protocol, dataset, model, seed, setting, f"{why}: within 2 std of the base", 4))
                for seed in SEEDS[1:]]
        self.runs[protocol, dataset, model] = [first] + [r for r in runs if r]
        if all(runs):
            self.final.add((protocol, dataset, model))
        return [first] + runs if all(runs) else None

    def control(self, protocol, dataset, model, setting, seeds):
        setting = {**setting, **CONTROLS[model]}
        why = "control: the pick without its self-supervised term"
        runs = [self.need(Step(protocol, dataset, model, seed, setting, why, 5)) for seed in seeds]
        self.controls[protocol, dataset, model] = (setting, [r for r in runs if r])

    def build(self):
        gains = {}  # model: relative test NDCG@10 gains over the base, RecBole's protocol
        for protocol in PROTOCOLS:
            for dataset in DATASETS:
                base = self.base(protocol, dataset)
                picks = {model: self.pick(protocol, dataset, model) for model in MODELS}
                if base is None:
                    self.waiting.append(f"{protocol} {dataset}: the picks' seeds wait on the base's three seeds")
                    continue
                for model, setting in picks.items():
                    runs = None if setting is None else self.seeds(protocol, dataset, model, setting, base)
                    if runs and model in CONTROLS:
                        self.control(protocol, dataset, model, setting, [r["seed"] for r in runs])
                    if runs and protocol == "recbole":
                        mean = statistics.mean(score(r) for r in base)
                        gains.setdefault(model, []).append(statistics.mean(score(r) for r in runs) / mean - 1)
        complete = {m: statistics.mean(g) for m, g in gains.items() if len(g) == len(DATASETS)}
        if len(complete) < len(MODELS):
            self.waiting.append("yelp waits on every model's picks under RecBole's protocol on the Amazon sets")
            return self.ordered()
        self.base("recbole", "yelp")
        for model in sorted(complete, key=complete.get, reverse=True)[:YELP_MODELS]:
            setting = self.pick("recbole", "amazon-toys", model)
            self.picks["recbole", "yelp", model] = setting
            why = "one of the two best on the Amazon sets"
            runs = [self.need(Step("recbole", "yelp", model, seed, setting, why, 4)) for seed in SEEDS]
            self.runs["recbole", "yelp", model] = [r for r in runs if r]
        return self.ordered()


def estimate_s(step, records):
    """A step's expected wall time: the median of the same model, dataset and protocol so far; else the model on
    amazon-toys under the protocol scaled by the base's cost ratio between the datasets; else 45 minutes."""
    def walls(model, dataset):
        tag = PROTOCOLS[step.protocol]["tag"]
        return [r["wall_time_s"] for r in records.values() if r["model"] == model and r["dataset"] == dataset
                and (r.get("tag") or "").startswith(tag) and r.get("wall_time_s")]
    same = walls(step.model, step.dataset)
    if same:
        return statistics.median(same)
    toys, base_here, base_toys = walls(step.model, "amazon-toys"), walls(BASE, step.dataset), walls(BASE, "amazon-toys")
    if toys and base_here and base_toys:
        return statistics.median(toys) * statistics.median(base_here) / statistics.median(base_toys)
    return 45 * 60.0


def plan(study, records):
    print(f"done: {len(study.done)} runs, {fmt_time(sum(r.get('wall_time_s') or 0 for _, r in study.done))} of "
          "wall time")
    total = 0.0
    if study.ready:
        print(f"ready to run, in order ({len(study.ready)}):")
    for step in study.ready:
        total += estimate_s(step, records)
        print(f"  {step.protocol:9} {step.dataset:13} {step.model:12} seed {step.seed}  {step.tag}  ({step.why}, "
              f"~{fmt_time(estimate_s(step, records))})")
    print(f"estimated wall time of the ready runs on this machine's history: {fmt_time(total)}")
    for line in study.waiting:
        print(f"  waits: {line}")


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("action", choices=["plan", "run"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--raw-data-dir", default=None, help="folder with the raw benchmark files")
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=None, help="only these")
    parser.add_argument("--datasets", nargs="+", default=None, help="only these datasets")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    args = parser.parse_args(argv)

    def ready():
        records = load_all()
        study = Study(records).build()
        study.ready = [s for s in study.ready if (not args.protocols or s.protocol in args.protocols)
                       and (not args.datasets or s.dataset in args.datasets)]
        return study, records

    study, records = ready()
    if args.action == "plan":
        plan(study, records)
        return 0
    ran = 0
    while study.ready and (args.max_runs is None or ran < args.max_runs):
        step = study.ready[0]
        print(f"\n== {step.protocol} {step.dataset} {step.model} seed {step.seed} {step.tag} ({step.why}) "
              f"{common.now_utc()}", flush=True)
        if subprocess.call(step.command(args.threads, args.raw_data_dir), cwd=REPO) != 0:
            raise SystemExit(f"error: the run failed or was stopped: {step.tag} (its log is in bench/runs/)")
        ran += 1
        study, records = ready()
        if step.key not in records:  # recorded but not ok (failed, interrupted): do not loop on it
            raise SystemExit(f"error: {step.model} seed {step.seed} {step.tag} did not finish; see its record")
    print(f"\n{ran} runs this time; " + ("the study is complete" if not study.ready and not study.waiting
                                         else "rerun to continue"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
