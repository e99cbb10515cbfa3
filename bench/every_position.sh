#!/usr/bin/env bash
# Issue 49's runs (docs/results.md, docs/performance.md), in priority order, one (model, seed) per job.
#
#   bench/every_position.sh
#   THREADS=2 RAW_DATA_DIR=../shared/data setsid nohup bench/every_position.sh > bench/runs/every_position.log 2>&1 &
#
# Resumable like bench/reproduce.sh: finished runs are skipped, stopped ones continue from their last finished epoch.
# Records: bench/results/transformer-benchmark.json (the benchmark protocol, properties/protocol/
# transformer-benchmark.yaml, its own section of docs/results.md) and bench/results/every-position.json (RecBole's
# protocol, rows of each dataset's table). Then: python bench/render_results.py
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
RAW_DATA_DIR=${RAW_DATA_DIR:-../shared/data}
THREADS=${THREADS:-}
BENCHMARK=properties/protocol/transformer-benchmark.yaml

run() {  # results-file tag dataset models seeds [extra run_models.py arguments]
    local results=$1 tag=$2 dataset=$3 models=$4 seeds=$5
    shift 5
    # shellcheck disable=SC2086  # models and seeds are word lists
    "$PYTHON" bench/run_models.py --dataset "$dataset" --models $models --seeds $seeds --tag "$tag" \
        --raw-data-dir "$RAW_DATA_DIR" ${THREADS:+--threads "$THREADS"} --results "bench/results/$results.json" "$@"
}

# 1. The benchmark's SASRec+SS recipe and the full-softmax SASRec+, under the benchmark protocol, seed 2020 first.
for dataset in amazon-toys amazon-beauty amazon-sports; do
    run transformer-benchmark tb-sasrec-ss "$dataset" PluginSASRec 2020 --config-files "$BENCHMARK"
    run transformer-benchmark tb-sasrec-plus "$dataset" PluginSASRec 2020 --config-files "$BENCHMARK" \
        --set next_item_loss=full_softmax
done
# 2. The cheap negatives, under both protocols, and the README-vs-configs question (embedding size 256).
run every-position every-position-sampled-per-batch amazon-toys PluginSASRec 2020 --set train_objective=every_position \
    --set next_item_loss=sampled_softmax --set negative_sampling=per_batch
run transformer-benchmark tb-sasrec-ss-per-batch amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set negative_sampling=per_batch
run transformer-benchmark tb-sasrec-ss-256 amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set hidden_size=256 --set inner_size=256 --set stopping_step=10
run transformer-benchmark tb-esasrec amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set layer_type=ligr --set stopping_step=10  # eSASRec on Toys: LiGR, feed-forward multiplier 1 (inner_size 64)
# 2b. The reproduction gap: RecTools' encoder arrangement (docs/datasets.md, "Protocols"), patience 10.
RECTOOLS=(--set layer_type=sasrec_original --set weight_init=xavier_normal --set position_order=from_end
    --set adam_beta2=0.98)
run transformer-benchmark tb-sasrec-ss-rectools amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    "${RECTOOLS[@]}" --set stopping_step=10
# RecTools' dropout of the whole item table, on the plugin's block and on RecTools' arrangement
run transformer-benchmark tb-sasrec-ss-item-dropout amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set item_dropout_prob=0.2 --set stopping_step=10
# the last one reproduces SASRec+SS on Toys: its seeds, then SASRec+ (full softmax) on the same encoder, the file
# properties/encoder/rectools-sasrec.yaml holding the same five keys
run transformer-benchmark tb-sasrec-ss-rectools-item-dropout amazon-toys PluginSASRec "2020 2021 2022" \
    --config-files "$BENCHMARK" "${RECTOOLS[@]}" --set item_dropout_prob=0.2 --set stopping_step=10
run transformer-benchmark tb-sasrec-plus-rectools amazon-toys PluginSASRec 2020 \
    --config-files "$BENCHMARK" properties/encoder/rectools-sasrec.yaml --set next_item_loss=full_softmax \
    --set stopping_step=10
# 2c. The same encoder on Beauty and Sports: the reproduction's seeds and SASRec+ on it.
for dataset in amazon-beauty amazon-sports; do
    run transformer-benchmark tb-sasrec-ss-rectools-item-dropout "$dataset" PluginSASRec "2020 2021 2022" \
        --config-files "$BENCHMARK" "${RECTOOLS[@]}" --set item_dropout_prob=0.2 --set stopping_step=10
    run transformer-benchmark tb-sasrec-plus-rectools "$dataset" PluginSASRec 2020 \
        --config-files "$BENCHMARK" properties/encoder/rectools-sasrec.yaml --set next_item_loss=full_softmax \
        --set stopping_step=10
done
# eSASRec on the same arrangement: LiGR layers instead of the SASRec authors' block (Toys: multiplier 1)
run transformer-benchmark tb-esasrec-rectools amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    properties/encoder/rectools-sasrec.yaml --set layer_type=ligr --set stopping_step=10
# 3. A small grid for the strong base (SASRec+): dropout 0.5 with 1 and 2 blocks, patience 10 to keep it cheap.
run transformer-benchmark tb-sasrec-plus-grid-d05-l1 amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set next_item_loss=full_softmax --set hidden_dropout_prob=0.5 --set attn_dropout_prob=0.5 --set stopping_step=10
run transformer-benchmark tb-sasrec-plus-grid-d05-l2 amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    --set next_item_loss=full_softmax --set hidden_dropout_prob=0.5 --set attn_dropout_prob=0.5 --set n_layers=2 \
    --set n_heads=2 --set stopping_step=10
# the grid's pick, properties/strong-base/sasrec-plus.yaml, under RecBole's protocol
run every-position strong-base amazon-toys PluginSASRec 2020 --config-files properties/strong-base/sasrec-plus.yaml
# 3b. The strong base on RecTools' encoder (properties/strong-base/sasrec-plus-rectools.yaml, tb-sasrec-plus-rectools
# above): one factor at a time from it on Toys (2 blocks / 2 heads, dropout 0.1 and 0.3 for all three dropouts,
# embedding 128; none beat it), then the file under RecBole's protocol (where it lost to the default backbone).
PLUS_RECTOOLS=properties/strong-base/sasrec-plus-rectools.yaml
run transformer-benchmark tb-sasrec-plus-rectools-l2 amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    "$PLUS_RECTOOLS" --set n_layers=2 --set n_heads=2 --set stopping_step=10
for p in 0.1 0.3; do
    run transformer-benchmark "tb-sasrec-plus-rectools-d$p" amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
        "$PLUS_RECTOOLS" --set hidden_dropout_prob=$p --set attn_dropout_prob=$p --set item_dropout_prob=$p \
        --set stopping_step=10
done
run transformer-benchmark tb-sasrec-plus-rectools-h128 amazon-toys PluginSASRec 2020 --config-files "$BENCHMARK" \
    "$PLUS_RECTOOLS" --set hidden_size=128 --set inner_size=128 --set stopping_step=10
run every-position strong-base-rectools amazon-toys PluginSASRec 2020 --config-files "$PLUS_RECTOOLS"
# 4. Every plugin model on every position, RecBole's protocol, package defaults, to early stopping.
run every-position every-position amazon-toys "CL4SRec DuoRec BT4SRec CoSeRec SRMA MCLRec PluginBERT4Rec" 2020 \
    --set train_objective=every_position
# 4b. The time goal (PluginSASRec on every position in a quarter of the prefix run's time): larger steps, since one
# sequence per user makes 76 updates an epoch instead of 428.
run every-position every-position-lr0.002 amazon-toys PluginSASRec "2020 2021 2022" --set train_objective=every_position \
    --set learning_rate=0.002
run every-position every-position-lr0.004 amazon-toys PluginSASRec 2020 --set train_objective=every_position \
    --set learning_rate=0.004
# or more updates: smaller batches of sequences (304 updates an epoch at 64, 152 at 128)
run every-position every-position-batch64 amazon-toys PluginSASRec 2020 --set train_objective=every_position \
    --set train_batch_size=64
run every-position every-position-batch128 amazon-toys PluginSASRec 2020 --set train_objective=every_position \
    --set train_batch_size=128
# 5. The strong base's three seeds on the three sets under both protocols, each protocol's own pick on Toys'
# validation: under the benchmark's, "$PLUS_RECTOOLS" (3b kept it), given as the command of tb-sasrec-plus-rectools
# above (the same keys; a run's record is keyed by its command line); under RecBole's, every position on the package's
# defaults (properties/strong-base/sasrec-plus-recbole-protocol.yaml holds the same keys), tag every-position, which
# beat strong-base-rectools, strong-base and the learning-rate and batch variants there.
for dataset in amazon-toys amazon-beauty amazon-sports; do
    run transformer-benchmark tb-sasrec-plus-rectools "$dataset" PluginSASRec "2020 2021 2022" \
        --config-files "$BENCHMARK" properties/encoder/rectools-sasrec.yaml --set next_item_loss=full_softmax \
        --set stopping_step=10
    run every-position every-position "$dataset" PluginSASRec "2020 2021 2022" --set train_objective=every_position
done
