#!/usr/bin/env bash
# The runs of the reproduction report (docs/results.md), in priority order, one (model, seed) per job.
#
#   bench/reproduce.sh                       # every dataset, in the order below
#   DATASETS="amazon-toys" bench/reproduce.sh
#   THREADS=1 RAW_DATA_DIR=../shared/data bench/reproduce.sh
#
# Run it again to continue: finished runs are skipped, stopped ones continue from their last finished epoch
# (bench/README.md). Start it twice (THREADS=1 each on a 2-core machine) and the two copies share the work: a run
# that one copy is training is skipped by the other. Stop a copy started with setsid/nohup with
# `kill -TERM -- -<its pid>`: the run in progress is recorded as interrupted and continues next time.
#
# All runs use the protocol's defaults (properties/overall.yaml) and the tag "full": early stopping on valid
# NDCG@10 with patience 10, at most 300 epochs. The order: every dataset's table first (one seed of every model, the
# Table 2 ablations on amazon-toys, two more seeds of SASRec, CL4SRec and SRMA), then the checks of the fast paths
# against RecBole's own classes and the other ablations. SASRec runs as PluginSASRec, RecBole's SASRec on the
# plugin's fast path (same parameters and scores, 3-5x faster on CPU); one run of RecBole's own class checks that
# they agree.
# BERT4Rec runs as PluginBERT4Rec, the same for RecBole's BERT4Rec; RecBole's own class comes last of all, as it
# costs about 10x more per CPU epoch (a run of 10+ hours on a CPU).
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
RAW_DATA_DIR=${RAW_DATA_DIR:-../shared/data}
DATASETS=${DATASETS:-"amazon-toys amazon-beauty amazon-sports yelp"}
THREADS=${THREADS:-}

run() {  # dataset model seed [extra run_models.py arguments]
    local dataset=$1 model=$2 seed=$3
    shift 3
    "$PYTHON" bench/run_models.py --dataset "$dataset" --models "$model" --seeds "$seed" --tag "${TAG:-full}" \
        --raw-data-dir "$RAW_DATA_DIR" ${THREADS:+--threads "$THREADS"} "$@"
}

for dataset in $DATASETS; do
    # one seed of every model first, so that every row of the table fills before any gets its extra seeds; the
    # cheapest first (amazon-toys, 1 CPU thread: PluginSASRec, GRU4Rec 0.5-1 h ... DuoRec, MCLRec 2-3 h), so that
    # the most rows fill for the hours spent
    for model in PluginSASRec GRU4Rec PluginBERT4Rec BT4SRec SRMA CoSeRec CL4SRec DuoRec MCLRec; do
        run "$dataset" "$model" 2020
    done
    if [ "$dataset" = amazon-toys ]; then  # the SRMA paper's Table 2 ablations
        for variant in SRMA-wo-D SRMA-wo-M; do
            TAG="full-$variant" run "$dataset" SRMA 2020 --config-files "properties/ablation/$variant.yaml"
        done
    fi
    for seed in 2021 2022; do
        for model in PluginSASRec CL4SRec SRMA; do
            run "$dataset" "$model" "$seed"
        done
    done
done
# checks and extra ablations only after every dataset has its table
for dataset in $DATASETS; do
    run "$dataset" SASRec 2020  # RecBole's own class, against PluginSASRec seed 2020
    if [ "$dataset" = amazon-toys ] || [ "$dataset" = amazon-sports ]; then  # the rest of the paper's ablations
        for variant in CL4SRec-wo-D CL4SRec-p0; do
            TAG="full-$variant" run "$dataset" CL4SRec 2020 --config-files "properties/ablation/$variant.yaml"
        done
        for variant in SRMA-complement-none SRMA-complement-transformer SRMA-complement-gru; do
            TAG="full-$variant" run "$dataset" SRMA 2020 --config-files "properties/ablation/$variant.yaml"
        done
    fi
done
for dataset in $DATASETS; do
    if [ "$dataset" = amazon-toys ]; then
        run "$dataset" BERT4Rec 2020  # RecBole's own class, against PluginBERT4Rec seed 2020
    fi
done
