"""SRMA: each model augmentation does what it says, switches off when asked, and every paper ablation trains."""

from pathlib import Path

import pytest
import torch
from tiny import build, tiny_config

from recbole_srma.errors import CheckpointError, ConfigError
from recbole_srma.model.layers import sample_kept_layers
from recbole_srma.model_trainers import SRMATrainer
from recbole_srma.quick_start import run_recbole_srma

ABLATIONS = Path(__file__).resolve().parents[1] / "properties" / "ablation"
NO_COMPLEMENT = {"complement_type": "none"}


def _batch(loader):
    return next(iter(loader))


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"layer_drop_K": 2, "layer_drop_M": 2}, "layer_drop_M < layer_drop_K"),
        ({"layer_drop_K": 1, "layer_drop_M": 3}, "layer_drop_M < layer_drop_K"),
        ({"layer_drop_K": 0, "layer_drop_M": 1}, "adds none"),
        ({"layer_drop_K": -1}, "layer_drop_K' must be an integer >= 0"),
        ({"neuron_mask_p": 1.2}, r"neuron_mask_p' must be in \[0, 1\]"),
        ({"complement_type": "lstm"}, "complement_type' must be one of"),
        ({"complement_gamma": -0.5}, "complement_gamma' must be >= 0"),
    ],
)
def test_invalid_settings_fail_at_start(tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build("SRMA", tmp_path, **overrides)


def test_kept_layer_patterns():
    torch.manual_seed(0)
    for _ in range(50):
        keep = sample_kept_layers(2, 4, 1)
        assert keep.shape == (2, 4) and keep.sum(1).tolist() == [3, 3]
    shared = sample_kept_layers(2, 4, 2, shared=True)
    assert torch.equal(shared[0], shared[1]) and shared[0].sum() == 2
    patterns = {tuple(map(tuple, sample_kept_layers(2, 3, 1).tolist())) for _ in range(60)}
    assert any(a != b for a, b in patterns)  # independent per view: the two views can differ


def test_exactly_M_layers_dropped_per_view_in_training_and_none_at_evaluation(tmp_path):
    _, model, train_data, valid_data, _ = build("SRMA", tmp_path, layer_drop_K=3, layer_drop_M=2, **NO_COMPLEMENT)
    calls = []
    for k, layer in enumerate(model.layer_drop.layers):
        layer.register_forward_hook(lambda mod, inp, out, k=k: calls.append(k))
    seen = []
    original = model.layer_drop.forward
    model.layer_drop.forward = lambda hidden, keep=None: seen.append(keep) or original(hidden, keep)

    batch = _batch(train_data)
    batch_size = len(batch)
    model.train()
    model.encode_with_views(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    keep = seen[-1]
    assert keep.shape == (3 * batch_size, 3)
    rows_of_rec_loss, view1, view2 = keep.chunk(3)
    assert rows_of_rec_loss.all()  # the next-item loss's rows run every layer
    assert (view1 == view1[0]).all() and (view2 == view2[0]).all()  # one pattern per view
    assert view1[0].sum() == 1 and view2[0].sum() == 1  # K - M = 1 layer kept

    # the dropped layers really are skipped: the kept layer alone reproduces the view
    model.eval()
    with torch.no_grad():
        seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
        hidden = model.backbone(seq, length)
        k = int(view1[0].nonzero())
        alone = model.layer_drop.layers[k](hidden)
        torch.testing.assert_close(model.layer_drop(hidden, view1), alone)
        calls.clear()
        seen.clear()
        full = model.full_sort_predict(batch)
    assert seen == [None] and sorted(calls) == [0, 1, 2]  # evaluation runs all K layers
    assert full.shape[1] == model.n_items


def test_next_item_loss_uses_the_evaluation_stack(tmp_path):
    _, model, train_data, *_ = build("SRMA", tmp_path, **NO_COMPLEMENT)
    batch = _batch(train_data)
    model.eval()
    with torch.no_grad():
        rec, _ = model.calculate_loss(batch)
        expected = torch.nn.functional.cross_entropy(model.full_sort_predict(batch), batch[model.POS_ITEM_ID])
    torch.testing.assert_close(rec, expected)


def test_model_augmentation_alone_makes_two_views_differ_and_switches_off(tmp_path):
    _, model, train_data, *_ = build("SRMA", tmp_path, augmentations=["identity"], **NO_COMPLEMENT)
    batch = _batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    model.train()
    _, z1, z2, (view_seq, _) = model.encode_with_views(seq, length)
    assert torch.equal(view_seq, seq)  # no data augmentation
    assert not torch.allclose(z1, z2)

    off = {"neuron_mask_p": 0.0, "neuron_mask_scope": "all", "layer_drop_K": 0, "layer_drop_M": 0}
    _, model, train_data, *_ = build("SRMA", tmp_path, augmentations=["identity"], **NO_COMPLEMENT, **off)
    model.train()
    _, z1, z2, _ = model.encode_with_views(seq, length)
    torch.testing.assert_close(z1, z2)  # nothing left to make them differ


def test_neuron_mask_p_sets_the_feed_forward_dropout(tmp_path):
    _, model, *_ = build("SRMA", tmp_path, neuron_mask_p=0.2, **NO_COMPLEMENT)
    ffn = model.backbone.trm_encoder.layer[0].feed_forward
    assert ffn.dropout.p == 0.2 and model.layer_drop.layers[0].dropout.p == 0.2
    assert model.backbone.dropout.p == 0.5  # scope 'ffn' leaves the other dropouts alone
    _, model, *_ = build("SRMA", tmp_path, neuron_mask_p=0.0, neuron_mask_scope="all", **NO_COMPLEMENT)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.backbone.trm_encoder.layer[0].multi_head_attention.attn_dropout_prob == 0.0


@pytest.mark.parametrize("kind", ["transformer", "gru", "same"])
def test_complement_is_pretrained_frozen_cached_and_unused_at_inference(tmp_path, kind):
    settings = {"complement_type": kind, "complement_epochs": 1}
    config, model, train_data, valid_data, _ = build("SRMA", tmp_path, **settings)
    trainer = SRMATrainer(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    assert bool(model.complement_ready)
    cached = list((Path(config["checkpoint_dir"]) / "srma_complement").glob(f"*-{kind}-*.pth"))
    assert len(cached) == 1

    # frozen: eval mode even when the model trains, no gradient, unchanged by training
    model.train()
    assert not model.complement.training
    assert all(not p.requires_grad for p in model.complement.parameters())
    before = {k: v.clone() for k, v in model.complement.state_dict().items()}
    trainer._train_epoch(train_data, 1)
    for name, value in model.complement.state_dict().items():
        assert torch.equal(value, before[name]), name

    # not used at inference: scrambling it changes no prediction
    batch = _batch(valid_data)[0]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        for p in model.complement.parameters():
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(model.full_sort_predict(batch), scores)

    # the cache is reused by the next run with the same data and settings, and matched by type
    config2, model2, train2, valid2, _ = build("SRMA", tmp_path, **settings)
    SRMATrainer(config2, model2).prepare_complement(train2, valid2)
    assert bool(model2.complement_ready)
    assert len(list(cached[0].parent.glob("*.pth"))) == 1
    other = "gru" if kind != "gru" else "transformer"
    config3, model3, *_ = build("SRMA", tmp_path, complement_type=other)
    with pytest.raises(CheckpointError, match=f"holds a '{kind}' complement encoder"):
        SRMATrainer(config3, model3).load_complement(str(cached[0]))


def test_complement_changes_the_contrastive_term(tmp_path):
    config, model, train_data, valid_data, _ = build("SRMA", tmp_path, complement_epochs=1)
    SRMATrainer(config, model).prepare_complement(train_data, valid_data)
    batch = _batch(train_data)
    torch.manual_seed(3)
    _, with_complement = model.calculate_loss(batch)
    model.complement_gamma = 0.0
    torch.manual_seed(3)
    _, without = model.calculate_loss(batch)
    assert not torch.isclose(with_complement, without)


def test_unprepared_complement_is_an_error_not_a_random_encoder(tmp_path):
    _, model, train_data, *_ = build("SRMA", tmp_path)
    with pytest.raises(RuntimeError, match="no pre-trained weights"):
        model.calculate_loss(_batch(train_data))


@pytest.mark.parametrize(
    "ablation", sorted(p.name for p in ABLATIONS.glob("*.yaml") if p.name.startswith(("SRMA-", "CL4SRec-")))
)
def test_each_paper_ablation_trains_for_an_epoch(tmp_path, ablation):
    result = run_recbole_srma(
        config_file_list=[str(ABLATIONS / ablation)], config_dict=tiny_config(tmp_path, complement_epochs=1)
    )
    assert result["epochs_trained"] == 1
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
