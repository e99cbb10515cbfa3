"""BT4SRec: the Barlow Twins loss (diagonal term of identical decorrelated views, order invariance, hand
computation), gradients to the encoder, each view type and positive training an epoch, batches of one, the
pre-training stage and its switch, and configuration errors."""

from pathlib import Path

import pytest
import torch
from tiny import build, tiny_config

from recbole_srma.config import Config
from recbole_srma.errors import ConfigError
from recbole_srma.model.layers import Projector
from recbole_srma.model.losses import barlow_twins, cross_correlation
from recbole_srma.model_trainers import BT4SRecTrainer
from recbole_srma.quick_start import run_recbole_srma
from recbole_srma.trainer import Trainer

FAST = {"hidden_size": 16, "inner_size": 32, "projector_sizes": [32, 16]}


def _decorrelated(B=64, D=8, seed=0):
    """Rows whose standardised columns are exactly uncorrelated (orthogonal, centred columns)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)  # orthonormal columns, still centred (they span the centred columns)
    return q * torch.linspace(1, 5, D, dtype=torch.float64)  # scales differ: standardisation removes them


# --- the loss ------------------------------------------------------------------------------------------------------


def test_identical_decorrelated_views_have_zero_diagonal_and_off_diagonal_terms():
    z = _decorrelated()
    c = cross_correlation(z, z, eps=0.0)
    torch.testing.assert_close(c, torch.eye(z.shape[1], dtype=z.dtype), atol=1e-10, rtol=0)
    assert barlow_twins(z, z, lambda_off=0.0, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert barlow_twins(z, z, lambda_off=10.0, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    # with the default eps the diagonal is only close to 1: the loss is small but not exactly 0
    assert 0 < barlow_twins(z, z, lambda_off=0.0).item() < 1e-6


def test_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)
    n1 = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    n2 = (z2 - z2.mean(0)) / z2.std(0, unbiased=False)
    expected = 0.0
    for i in range(4):
        for j in range(4):
            c = sum(n1[b, i] * n2[b, j] for b in range(10)) / 10
            expected += (1 - c) ** 2 if i == j else 0.3 * c**2
    assert barlow_twins(z1, z2, lambda_off=0.3, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-10)


def test_loss_does_not_depend_on_the_order_of_the_batch():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    perm = torch.randperm(32, generator=g)
    torch.testing.assert_close(barlow_twins(z1[perm], z2[perm], 0.02), barlow_twins(z1, z2, 0.02))
    # ...but it does depend on which rows are paired
    assert barlow_twins(z1[perm], z2, 0.02).item() != pytest.approx(barlow_twins(z1, z2, 0.02).item())


def test_redundancy_term_is_weighted_by_lambda_off():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    l0, l1, l2 = (barlow_twins(z1, z2, lam).item() for lam in (0.0, 1.0, 2.0))
    assert l1 > l0 and l2 - l1 == pytest.approx(l1 - l0, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", True])
def test_lambda_off_is_checked(bad, tmp_path):
    # once, when the Config is built (the loss takes it as given): the check the Config runs, on the value as given
    from tiny import tiny_config

    from recbole_srma.config import Config
    from recbole_srma.model.bt4srec import BT4SRec

    settings = Config(model="BT4SRec", config_dict=tiny_config(tmp_path)).final_config_dict
    with pytest.raises(ValueError, match="lambda_off"):
        BT4SRec.check_config({**settings, "lambda_off": bad})


def test_a_single_row_is_refused_by_the_loss():
    with pytest.raises(ValueError, match="at least 2 rows"):
        cross_correlation(torch.randn(1, 3), torch.randn(1, 3))


def test_projector_shapes_and_identity():
    assert Projector(16, [])(torch.randn(5, 16)).shape == (5, 16)
    assert len(Projector(16, [])) == 0
    p = Projector(16, [32, 8])
    assert p(torch.randn(5, 16)).shape == (5, 8) and p.out_features == 8
    assert [type(m).__name__ for m in p] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in p if isinstance(m, torch.nn.Linear))


# --- the model -----------------------------------------------------------------------------------------------------


def test_gradient_flows_to_the_encoder_through_the_barlow_twins_term(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, **FAST)
    batch = next(iter(train_data))
    model.train()
    _, pairs = model.encode_pairs(batch)
    model.bt_loss(pairs).backward()
    encoder_grads = [p.grad for n, p in model.named_parameters() if n.startswith(("backbone", "item_embedding"))]
    assert encoder_grads and all(g is not None for g in encoder_grads)
    assert any(g.abs().sum() > 0 for g in encoder_grads)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())


def test_augmented_views_differ_from_the_batch_and_leave_the_stored_data_alone(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, **FAST)
    stored = train_data._dataset.inter_feat[model.ITEM_SEQ].clone()
    batch = next(iter(train_data))
    seq = batch[model.ITEM_SEQ].clone()
    views = model.data_augmentation.views(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], n_views=2)
    assert all(not torch.equal(v, seq) for v, _ in views) and not torch.equal(views[0][0], views[1][0])
    model.train()
    model.calculate_loss(batch)[1].backward()
    assert torch.equal(batch[model.ITEM_SEQ], seq)
    assert torch.equal(train_data._dataset.inter_feat[model.ITEM_SEQ], stored)


def test_same_target_positive_pairs_the_batch_with_its_partners(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, bt_positive="same_target", **FAST)
    batch = next(iter(train_data))
    model.eval()  # no dropout: the pair can be recomputed
    torch.manual_seed(5)
    (seq_output, targets), pairs = model.encode_pairs(batch)
    torch.manual_seed(5)
    partner_seq, partner_len, _ = model.same_target.partners(batch)
    assert len(pairs) == 1 and torch.equal(targets, batch[model.POS_ITEM_ID])
    torch.testing.assert_close(pairs[0][0], seq_output)
    torch.testing.assert_close(pairs[0][1], model.forward(partner_seq, partner_len), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"augmentations": ["mask"]},
        {"augmentations": ["segment_mask"]},
        {"augmentations": ["reorder"]},
        {"bt_positive": "same_target"},
        {"bt_positive": "both"},
        {"projector_sizes": []},
    ],
    ids=["mask", "segment_mask", "reorder", "same_target", "both", "no-projector"],
)
def test_each_view_type_trains_an_epoch(tmp_path, options):
    config, model, train_data, valid_data, _ = build("BT4SRec", tmp_path, **{**FAST, **options})
    trainer = Trainer(config, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = trainer._train_epoch(train_data, 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in loss) and loss[1] > 0
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert "backbone.position_embedding.weight" in moved and "backbone.item_embedding.weight" in moved
    projector = {n for n in before if n.startswith("projector.")}
    assert projector <= moved and (len(projector) > 0) == (options.get("projector_sizes") != [])
    result = trainer.evaluate(valid_data, load_best_model=False)
    assert 0 <= result["ndcg@10"] <= 1


def test_both_adds_the_two_terms(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, bt_positive="both", **FAST)
    batch = next(iter(train_data))
    _, pairs = model.encode_pairs(batch)
    assert len(pairs) == 2
    model.train()
    separate = [model.bt_loss([pair]) for pair in pairs]
    torch.testing.assert_close(model.bt_loss(pairs), separate[0] + separate[1])


def test_a_batch_of_one_skips_the_ssl_term_without_nan(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, bt_positive="both", **FAST)
    batch = next(iter(train_data))[:1]
    model.train()
    rec, bt = model.calculate_loss(batch)
    assert torch.isfinite(rec) and bt.item() == 0.0
    (rec + bt).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad.abs().sum() == 0 for p in model.projector.parameters())
    assert model.pretrain_loss(batch).item() == 0.0


def test_alpha_zero_is_next_item_loss_only(tmp_path):
    _, model, train_data, *_ = build("BT4SRec", tmp_path, alpha=0.0, **FAST)
    batch = next(iter(train_data))
    model.eval()
    rec, bt = model.calculate_loss(batch)
    assert bt.item() == 0.0
    seq_output = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    torch.testing.assert_close(rec, model.rec_loss(seq_output, batch[model.POS_ITEM_ID]))


def test_alpha_weights_the_ssl_term(tmp_path):
    values = []
    for alpha in (0.1, 0.3):
        _, model, train_data, *_ = build("BT4SRec", tmp_path, alpha=alpha, **FAST)
        model.train()
        torch.manual_seed(0)
        values.append(model.calculate_loss(next(iter(train_data)))[1].item())
    assert values[1] == pytest.approx(3 * values[0], rel=1e-4)


def test_pretraining_runs_once_on_the_barlow_twins_loss_then_training_goes_on(tmp_path):
    config, model, train_data, valid_data, _ = build(
        "BT4SRec", tmp_path, pretrain_epochs=2, alpha=0.0, epochs=1, **FAST
    )
    trainer = BT4SRecTrainer(config, model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = {"pretrain": 0, "rec": 0}
    pretrain_loss, calculate_loss = model.pretrain_loss, model.calculate_loss
    model.pretrain_loss = lambda i: (calls.__setitem__("pretrain", calls["pretrain"] + 1), pretrain_loss(i))[1]
    model.calculate_loss = lambda i: (calls.__setitem__("rec", calls["rec"] + 1), calculate_loss(i))[1]
    trainer.pretrain(train_data)
    assert bool(model.pretrained) and calls == {"pretrain": 2 * len(train_data), "rec": 0}
    after_pretraining = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert not torch.equal(start["projector.0.weight"], after_pretraining["projector.0.weight"])
    assert any(not torch.equal(start[n], after_pretraining[n]) for n in start if n.startswith("backbone"))
    trainer.pretrain(train_data)  # already done: no second stage
    assert calls["pretrain"] == 2 * len(train_data)
    trainer.fit(train_data, valid_data, saved=True)
    assert calls["pretrain"] == 2 * len(train_data) and calls["rec"] == len(train_data)
    state = torch.load(trainer.saved_model_file, weights_only=True)["state_dict"]
    assert bool(state["pretrained"])


def test_pretraining_switch_off_means_no_stage(tmp_path):
    config, model, train_data, valid_data, _ = build("BT4SRec", tmp_path, pretrain_epochs=0, **FAST)
    model.pretrain_loss = lambda i: pytest.fail("pre-training ran with pretrain_epochs 0")
    BT4SRecTrainer(config, model).pretrain(train_data)
    assert not bool(model.pretrained)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bt_positive": "negatives"}, "bt_positive"),
        ({"lambda_off": -1.0}, "lambda_off"),
        ({"alpha": -0.5}, "alpha"),
        ({"mask_gamma": 1.5}, "mask_gamma"),
        ({"segment_mask_gamma": -0.1}, "segment_mask_gamma"),
        ({"augmentations": ["crop", "shuffle"]}, "augmentations"),
        ({"projector_sizes": [64, 0]}, "projector_sizes"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        build("BT4SRec", tmp_path, **{**FAST, **options})


# --- the variants, one config file away ----------------------------------------------------------------------------

ABLATIONS = Path(__file__).resolve().parents[1] / "properties" / "ablation"
# variant file -> check of (config, model after the run): the switch really switches
VARIANT_CHECKS = {
    "BT4SRec-same-target.yaml": lambda config, state: config["bt_positive"] == "same_target"
    and not bool(state["pretrained"]),
    "BT4SRec-both.yaml": lambda config, state: config["bt_positive"] == "both",
    "BT4SRec-pretrain-finetune.yaml": lambda config, state: config["alpha"] == 0 and bool(state["pretrained"]),
}


def test_every_bt4srec_variant_file_is_checked():
    assert sorted(p.name for p in ABLATIONS.glob("BT4SRec-*.yaml")) == sorted(VARIANT_CHECKS)


@pytest.mark.parametrize("variant", sorted(VARIANT_CHECKS))
def test_each_variant_file_trains_and_switches(tmp_path, variant):
    files = [str(ABLATIONS / variant)]
    overrides = tiny_config(tmp_path, hidden_size=16, inner_size=32)
    if variant.endswith("pretrain-finetune.yaml"):
        overrides["pretrain_epochs"] = 2  # the file's 20 epochs, shortened for the test
    result = run_recbole_srma(config_file_list=files, config_dict=overrides)
    assert result["epochs_trained"] == 1 and 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    config = Config(config_file_list=files, config_dict=overrides)
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    assert VARIANT_CHECKS[variant](config, state)
