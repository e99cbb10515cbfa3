"""Issue 49's recipe pieces: gBCE and per-batch negatives, LiGR layers, and the two evaluation switches."""

import pytest
import torch
from tiny import assert_same_loss_and_gradients, build, loss_and_gradients, tiny_config

from recbole_srma import PROPERTIES_DIR
from recbole_srma.config import Config, protocol_settings
from recbole_srma.quick_start import run_recbole_srma

FAST = {"hidden_size": 16, "inner_size": 32}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
BENCHMARK = str(PROPERTIES_DIR / "protocol" / "transformer-benchmark.yaml")


def _loss_and_scores(model, rows, per_batch=False, seed=0):
    """The model's sampled loss on random representations, and the same draw of negatives recomputed by hand:
    ``(loss, positive [rows], negative [rows, k], collision [rows, k])``."""
    hidden, targets = torch.randn(rows, 16), torch.randint(1, model.n_items, (rows,))
    torch.manual_seed(seed)
    loss = model.rec_loss(hidden, targets)
    torch.manual_seed(seed)
    weights, k = model.item_weights(), model.n_negatives
    negatives = torch.randint(1, model.n_items, (k,) if per_batch else (rows, k))
    positive = (hidden * weights[targets]).sum(-1)
    if per_batch:
        return loss, positive, hidden @ weights[negatives].t(), negatives[None, :] == targets[:, None]
    return loss, positive, torch.einsum("nh,nkh->nk", hidden, weights[negatives]), negatives == targets[:, None]


def _softmax_against(positive, negative, collision):
    negative = negative.masked_fill(collision, -1e30)
    return (torch.logsumexp(torch.cat([positive[:, None], negative], 1), 1) - positive).mean()


@pytest.mark.parametrize("per_batch", [False, True])
def test_sampled_softmax_scores_the_target_against_uniform_negatives_never_itself(tmp_path, per_batch):
    sampling = "per_batch" if per_batch else "per_position"
    _, model, *_ = build("PluginSASRec", tmp_path, next_item_loss="sampled_softmax", n_negatives=5,
                         negative_sampling=sampling, **FAST)
    loss, positive, negative, collision = _loss_and_scores(model, 64, per_batch)
    torch.testing.assert_close(loss, _softmax_against(positive, negative, collision))
    # a negative equal to the target is left out: with only the target to draw, the loss is exactly 0
    model.n_items = 2  # item ids 1 .. n_items - 1: only item 1 can be drawn
    assert model.rec_loss(torch.randn(4, 16), torch.ones(4, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_is_gsasrecs_generalised_binary_cross_entropy(tmp_path, t):
    _, model, *_ = build("PluginSASRec", tmp_path, next_item_loss="gbce", n_negatives=5, gbce_t=t, **FAST)
    loss, positive, negative, collision = _loss_and_scores(model, 16, seed=2)
    alpha = 5 / (model.n_items - 2)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)  # t = 0: beta = 1, plain BCE
    keep = (~collision).float()
    expected = (-torch.log(torch.sigmoid(positive) ** beta) - (torch.log(1 - torch.sigmoid(negative)) * keep).sum(1))
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-4, atol=1e-5)
    assert (beta == 1.0) == (t == 0.0)


@pytest.mark.parametrize("model_name", ["PluginSASRec", "DuoRec"])
@pytest.mark.parametrize("objective", ["prefixes", "every_position"])
def test_softmax_chunk_rows_changes_the_computation_not_the_loss_or_gradients(
    tmp_path, monkeypatch, model_name, objective
):
    from recbole_srma.model import losses

    calls = []
    chunked = losses._ChunkedFullSoftmax.apply
    monkeypatch.setattr(losses._ChunkedFullSoftmax, "apply", lambda *a: calls.append(a[3]) or chunked(*a))
    results = []
    for chunk_rows in (0, 7):
        _, model, train_data, *_ = build(model_name, tmp_path, softmax_chunk_rows=chunk_rows,
                                         train_objective=objective, **FAST, **NO_DROPOUT)
        results.append(loss_and_gradients(model, next(iter(train_data))))
    assert calls == [7]  # the switch switches: one chunked loss in the second run, none in the first
    assert_same_loss_and_gradients(results[0], results[1])
    _, model, *_ = build(model_name, tmp_path, train_objective=objective, **FAST)
    assert model.softmax_chunk_rows == 64  # the default on a CPU


#: the SASRec authors' arrangement, as RecTools has it: their block, Xavier initialisation, positions from the end
RECTOOLS_SASREC = {"layer_type": "sasrec_original", "weight_init": "xavier_normal", "position_order": "from_end"}


@pytest.mark.parametrize("layers", [{"n_layers": 1, "n_heads": 1}, {"n_layers": 2, "n_heads": 2}])
@pytest.mark.parametrize("encoder", [{"layer_type": "sasrec"}, {"layer_type": "ligr"}, RECTOOLS_SASREC],
                         ids=["sasrec", "ligr", "sasrec_original-xavier-from_end"])
def test_fast_path_equals_padded_path_for_each_layer_type_and_one_block_one_head(tmp_path, encoder, layers):
    results = []
    for fast_path in (True, False):
        _, model, train_data, *_ = build("PluginSASRec", tmp_path, **encoder, fast_path=fast_path,
                                         train_objective="every_position", **layers, **FAST, **NO_DROPOUT)
        batch = next(iter(train_data))
        loss, grads = loss_and_gradients(model, batch)
        with torch.no_grad():
            scores = model.full_sort_predict(batch)
        results.append(((loss, grads), scores))
    assert_same_loss_and_gradients(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def test_ligr_layers_are_pre_norm_gated_blocks_not_sasrecs(tmp_path):
    _, sasrec, *_ = build("PluginSASRec", tmp_path, **FAST)
    _, ligr, *_ = build("PluginSASRec", tmp_path, layer_type="ligr", **FAST)
    block = ligr.backbone.trm_encoder.layer[0]
    assert type(block).__name__ == "LiGRLayer" and type(sasrec.backbone.trm_encoder.layer[0]).__name__ != "LiGRLayer"
    assert block.feed_forward.gate.out_features == 32  # inner_size: the feed-forward multiplier times hidden_size
    hidden = torch.randn(3, 5, 16)
    with torch.no_grad():  # closed gates: the block is the identity (the gated residual's point)
        for gate in (block.attention_gate, block.feed_forward_gate):
            gate.weight.zero_(), gate.bias.fill_(-1e4)
        block.eval()
        mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
        torch.testing.assert_close(block(hidden, mask), hidden)


def test_sasrec_original_normalises_the_query_only_and_adds_residuals_to_the_normalised_input(tmp_path):
    import torch.nn.functional as F

    _, model, *_ = build("PluginSASRec", tmp_path, n_layers=1, n_heads=1, hidden_act="relu", **RECTOOLS_SASREC, **FAST)
    backbone = model.backbone.eval()
    block = backbone.trm_encoder.layer[0]
    assert type(block).__name__ == "QueryNormLayer"
    assert isinstance(backbone.LayerNorm, torch.nn.Identity) and isinstance(backbone.output_norm, torch.nn.LayerNorm)
    x = torch.randn(2, 4, 16)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()[None, None]
    attention, ff = block.multi_head_attention, block.feed_forward
    with torch.no_grad():
        normed = block.attention_norm(x)
        scores = attention.query(normed) @ attention.key(x).transpose(1, 2) / 4.0 + torch.full((4, 4), -1e9).triu(1)
        y = normed + attention.dense(scores.softmax(-1) @ attention.value(x))
        m = block.feed_forward_norm(y)
        torch.testing.assert_close(block(x, mask), m + ff.dense_2(F.relu(ff.dense_1(m))), rtol=1e-4, atol=1e-5)


def test_positions_from_the_end_give_the_last_item_position_zero():
    from recbole_srma.model.encoder import position_ids

    lengths = torch.tensor([3, 1, 4])
    assert position_ids(lengths, 4, "from_start").tolist() == [[0, 1, 2, 3]] * 3
    assert position_ids(lengths, 4, "from_end").tolist() == [[2, 1, 0, 0], [0, 0, 0, 0], [3, 2, 1, 0]]


def test_xavier_normal_initialisation_replaces_recboles_normal(tmp_path):
    _, recbole, *_ = build("PluginSASRec", tmp_path, **FAST)
    _, xavier, *_ = build("PluginSASRec", tmp_path, weight_init="xavier_normal", **FAST)
    rows = recbole.backbone.position_embedding.num_embeddings
    for model, expected in ((recbole, 0.02), (xavier, (2.0 / (16 + rows)) ** 0.5)):
        std = model.backbone.position_embedding.weight.std().item()
        assert abs(std - expected) < 0.25 * expected


def _loaders(tmp_path, **settings):
    return build("PluginSASRec", tmp_path, **FAST, **settings)


def test_exclude_history_items_never_ranks_an_earlier_item_and_is_off_by_default(tmp_path):
    from recbole_srma.trainer import Trainer

    config, model, train_data, valid_data, test_data = _loaders(tmp_path, exclude_history_items=True)
    default_config, *_ = _loaders(tmp_path)
    assert default_config["exclude_history_items"] is False
    batch = next(iter(test_data))
    interaction = batch[0]
    model.eval()  # evaluate() scores in eval mode: no dropout
    masked, plain = [], []
    for settings, out in ((config, masked), (default_config, plain)):
        trainer = Trainer(settings, model)
        trainer.tot_item_num = test_data._dataset.item_num  # what evaluate() sets before scoring
        trainer._eval_history = getattr(test_data._dataset, "history_items", None)
        with torch.no_grad():
            out.append(trainer._full_sort_batch_eval(batch)[1])
    masked, plain = masked[0], plain[0]
    history = interaction[model.ITEM_SEQ]
    assert torch.isinf(masked.gather(1, history)).all()
    assert torch.isfinite(plain.gather(1, history)[history > 0]).all()
    # exactly the user's earlier items: its training sequence and validation item, older ones than the window too
    feat = train_data._dataset.inter_feat
    for row, user in enumerate(interaction[config["USER_ID_FIELD"]].tolist()[:30]):
        rows = feat[config["USER_ID_FIELD"]] == user
        earlier = set(feat[model.POS_ITEM_ID][rows].tolist()) | set(feat[model.ITEM_SEQ][rows][:, 0].tolist())
        earlier |= set(valid_data._dataset.inter_feat[model.POS_ITEM_ID][
            valid_data._dataset.inter_feat[config["USER_ID_FIELD"]] == user].tolist())
        assert set(torch.isinf(masked[row]).nonzero().squeeze(1).tolist()) == earlier | {0}
    outside = torch.isfinite(masked)
    assert torch.equal(masked[outside], plain[outside])  # nothing else changes


def test_train_on_validation_item_adds_each_users_validation_item_as_a_training_target(tmp_path):
    config, model, train, valid, *_ = _loaders(tmp_path)
    _, _, with_valid, *_ = _loaders(tmp_path, train_on_validation_item=True)
    uid, target = config["USER_ID_FIELD"], model.POS_ITEM_ID
    plain, extended, validation = (d._dataset.inter_feat for d in (train, with_valid, valid))
    assert len(extended) == len(plain) + len(validation)
    _, _, per_user, *_ = _loaders(tmp_path, train_on_validation_item=True, train_objective="every_position")
    ours = per_user._dataset.inter_feat
    assert len(ours) == len(validation[uid].unique())
    order = torch.argsort(ours[uid])
    torch.testing.assert_close(ours[target][order], validation[target][torch.argsort(validation[uid])])


def test_records_name_a_switch_only_when_it_is_on(tmp_path):
    plain = Config("PluginSASRec", config_dict=tiny_config(tmp_path))
    switched = Config("PluginSASRec", config_dict=tiny_config(tmp_path, exclude_history_items=True))
    assert "exclude_history_items" not in protocol_settings(plain)
    assert protocol_settings(switched)["exclude_history_items"] is True


def test_the_benchmark_protocol_file_runs_and_says_so(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    for key in ("hidden_size", "inner_size"):
        config.pop(key)  # the protocol file's
    result = run_recbole_srma(model="PluginSASRec", config_file_list=[BENCHMARK], config_dict=config)
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    settings = Config("PluginSASRec", config_file_list=[BENCHMARK], config_dict=config)
    assert settings["train_objective"] == "every_position" and settings["n_layers"] == 1
    assert protocol_settings(settings)["exclude_history_items"] is True


@pytest.mark.parametrize(
    "base_file", ["sasrec-plus.yaml", "sasrec-plus-rectools.yaml", "sasrec-plus-recbole-protocol.yaml"])
@pytest.mark.parametrize("model", ["PluginSASRec", "CL4SRec", "DuoRec"])
def test_the_strong_base_config_layers_on_either_protocol(tmp_path, model, base_file):
    base = str(PROPERTIES_DIR / "strong-base" / base_file)
    config = tiny_config(tmp_path)
    for key in ("hidden_size", "inner_size"):
        config.pop(key)
    on_benchmark = Config(model, config_file_list=[BENCHMARK, base], config_dict=config)
    on_recbole = Config(model, config_file_list=[base], config_dict=config)
    layers = 1 if base_file == "sasrec-plus-rectools.yaml" else 2
    for settings in (on_benchmark, on_recbole):
        assert settings["next_item_loss"] == "full_softmax" and settings["n_layers"] == layers
        assert settings["train_objective"] == "every_position"
    assert on_benchmark["exclude_history_items"] and not on_recbole["exclude_history_items"]


def test_adam_beta2_reaches_the_optimiser_and_is_torchs_default_when_unset(tmp_path):
    from recbole_srma.trainer import Trainer

    for beta2, expected in ((None, 0.999), (0.98, 0.98)):
        config, model, *_ = build("PluginSASRec", tmp_path, adam_beta2=beta2, **FAST)
        trainer = Trainer(config, model)
        assert {group["betas"] for group in trainer.optimizer.param_groups} == {(0.9, expected)}
    from recbole_srma.errors import ConfigError

    with pytest.raises(ConfigError, match=r"adam_beta2.*\[0, 1\)"):  # 1 divides Adam's bias correction by zero
        build("PluginSASRec", tmp_path, adam_beta2=1.0, **FAST)


def test_item_dropout_drops_out_the_scored_item_table_in_training_only(tmp_path):
    _, plain, *_ = build("PluginSASRec", tmp_path, **FAST)
    _, dropped, *_ = build("PluginSASRec", tmp_path, item_dropout_prob=0.5, **FAST)
    table = dropped.backbone.item_embedding.weight[: dropped.n_items]
    plain.train(), dropped.train()
    assert torch.equal(plain.item_weights(), plain.backbone.item_embedding.weight[: plain.n_items])
    zeroed = (dropped.item_weights() == 0).float().mean().item()
    assert 0.4 < zeroed < 0.6
    dropped.eval()
    assert torch.equal(dropped.item_weights(), table)


def test_the_rectools_encoder_file_layers_on_the_benchmark_protocol_and_trains(tmp_path):
    encoder = str(PROPERTIES_DIR / "encoder" / "rectools-sasrec.yaml")
    config = tiny_config(tmp_path, epochs=1)
    for key in ("hidden_size", "inner_size"):
        config.pop(key)
    settings = Config("PluginSASRec", config_file_list=[BENCHMARK, encoder], config_dict=config)
    assert (settings["layer_type"], settings["weight_init"], settings["position_order"]) == (
        "sasrec_original", "xavier_normal", "from_end")
    assert settings["item_dropout_prob"] == 0.2 and settings["adam_beta2"] == 0.98
    assert settings["next_item_loss"] == "sampled_softmax"  # the protocol's recipe stays
    result = run_recbole_srma(model="PluginSASRec", config_file_list=[BENCHMARK, encoder], config_dict=config)
    assert 0 < result["test_result"]["ndcg@10"] <= 1
