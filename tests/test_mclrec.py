"""MCLRec and its meta-trainer: which parameters each phase updates, the schedules, the loss terms, checkpoints that
resume meta-training, the paper's ablations, and bad settings."""

from pathlib import Path

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from tiny import build, tiny_config

from recbole_srma.config import Config
from recbole_srma.errors import CheckpointError, ConfigError
from recbole_srma.model.losses import info_nce, margin_regulariser
from recbole_srma.model.mclrec import MCLRec
from recbole_srma.model_trainers import MetaTrainer, PhaseOptimizer
from recbole_srma.quick_start import run_recbole_srma
from recbole_srma.registry import get_trainer

ABLATIONS = Path(__file__).resolve().parents[1] / "properties" / "ablation"


class FirstBatches:
    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.n:
                return
            yield batch

    def __len__(self):
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _meta(tmp_path, **overrides):
    config, model, train_data, valid_data, test_data = build("MCLRec", tmp_path, **overrides)
    return config, model, MetaTrainer(config, model), train_data, valid_data


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(params, before):
    return [not torch.equal(p, b) for p, b in zip(params, before)]


def test_registry_picks_the_meta_trainer(tmp_path):
    config, model, *_ = build("MCLRec", tmp_path)
    assert get_trainer(config["MODEL_TYPE"], "MCLRec") is MetaTrainer


@pytest.mark.parametrize("phase", ["encoder", "augmenter"])
def test_each_phase_updates_only_its_own_parameters(tmp_path, phase):
    _, model, trainer, train_data, _ = _meta(tmp_path)
    encoder, augmenters = model.encoder_parameters(), model.augmenter_parameters()
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in augmenters)
    assert len(encoder) + len(augmenters) == len(list(model.parameters()))
    before_encoder, before_augmenters = _snapshot(encoder), _snapshot(augmenters)

    trainer.schedule = (phase,)  # one step of that phase on one batch, through RecBole's loop
    trainer._train_epoch(FirstBatches(train_data, 1), 0)

    encoder_changed, augmenter_changed = _changed(encoder, before_encoder), _changed(augmenters, before_augmenters)
    if phase == "encoder":
        assert not any(augmenter_changed)
        assert all(encoder_changed)
    else:
        assert not any(encoder_changed)
        assert all(augmenter_changed)


def test_augmenter_phase_gives_the_encoder_no_gradient(tmp_path):
    _, model, _, train_data, _ = _meta(tmp_path)
    batch = next(iter(train_data))
    views = model.draw_views(batch)
    sum(model.augmenter_loss(batch, views)).backward()
    assert all(p.grad is None for p in model.encoder_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.augmenter_parameters())


@pytest.mark.parametrize(
    "schedule, encoder_steps, augmenter_steps",
    [("alternate", 1, 1), ("encoder_augmenter_encoder", 2, 1), ("official", 2, 1)],  # the last: the old spelling
)
def test_schedules_step_each_optimiser_per_batch_and_share_the_views(
    tmp_path, schedule, encoder_steps, augmenter_steps
):
    _, model, trainer, train_data, _ = _meta(tmp_path, meta_schedule=schedule)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, PhaseOptimizer)
    steps, draws = [], []
    for name, opt in optimizer.optimizers.items():
        opt.register_step_post_hook(lambda *args, name=name: steps.append(name))
    original = model.draw_views
    model.draw_views = lambda interaction: draws.append(1) or original(interaction)

    n = 3
    losses = trainer._train_epoch(FirstBatches(train_data, n), 0)
    per_batch = ["encoder", "augmenter", "encoder"][: encoder_steps + augmenter_steps]
    assert steps == per_batch * n
    assert len(draws) == n  # one draw of the two views per batch, shared by its phases
    assert len(losses) == len(model.LOSS_TERMS) + len(model.AUGMENTER_LOSS_TERMS)
    assert all(x > 0 for x in losses)


def test_joint_schedule_is_one_optimiser_over_everything(tmp_path):
    _, model, trainer, train_data, _ = _meta(tmp_path, meta_schedule="joint")
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    encoder, augmenters = model.encoder_parameters(), model.augmenter_parameters()
    before_encoder, before_augmenters = _snapshot(encoder), _snapshot(augmenters)
    losses = trainer._train_epoch(FirstBatches(train_data, 1), 0)
    assert len(losses) == len(model.LOSS_TERMS)
    assert any(_changed(encoder, before_encoder)) and all(_changed(augmenters, before_augmenters))


def test_augmenter_learning_rate(tmp_path):
    _, _, trainer, *_ = _meta(tmp_path, learning_rate=0.002)
    assert trainer.optimizer.optimizers["augmenter"].param_groups[0]["lr"] == 0.002  # ~ follows learning_rate
    _, _, trainer, *_ = _meta(tmp_path, learning_rate=0.002, augmenter_learning_rate=0.0005)
    assert trainer.optimizer.optimizers["encoder"].param_groups[0]["lr"] == 0.002
    assert trainer.optimizer.optimizers["augmenter"].param_groups[0]["lr"] == 0.0005


def test_loss_terms_match_a_hand_computation_with_the_configured_similarity(tmp_path):
    _, model, _, train_data, _ = _meta(tmp_path, tau=0.5, sim="cos", cl_lambda=0.3, cl2_beta=0.2, reg_gamma=0.4)
    model.eval()  # no dropout: the same representations when recomputed below
    batch = next(iter(train_data))
    views = model.draw_views(batch)
    with torch.no_grad():
        rec, cl1, cl2, reg = model.encoder_loss(batch, views)
        aug_cl2, aug_reg = model.augmenter_loss(batch, views)
        h1, h2 = model.forward(views[0][0], views[0][1]), model.forward(views[1][0], views[1][1])
        g1, g2 = model.learnable_augmenters[0](h1), model.learnable_augmenters[1](h2)
        args = {"temperature": 0.5, "similarity": "cos"}
        pairs = [(h1, g2), (h2, g1), (g1, g2)]
        want_cl2 = sum(info_nce(a, b, **args) for a, b in pairs)
        want_reg = sum(margin_regulariser(a, b, **args) for a, b in pairs)
        want_rec = torch.nn.functional.cross_entropy(model.full_sort_predict(batch), batch[model.POS_ITEM_ID])
    torch.testing.assert_close(rec, want_rec)
    torch.testing.assert_close(cl1, 0.3 * info_nce(h1, h2, **args))
    torch.testing.assert_close(cl2, 0.2 * want_cl2)
    torch.testing.assert_close(reg, 0.2 * 0.4 * want_reg)
    torch.testing.assert_close(aug_cl2, want_cl2)
    torch.testing.assert_close(aug_reg, 0.4 * want_reg)
    # the augmenters' views are unit vectors and are not the encoder's
    torch.testing.assert_close(g1.norm(dim=1), torch.ones(len(g1)))
    assert not torch.allclose(g1, torch.nn.functional.normalize(h1, dim=1))


@pytest.mark.parametrize("hidden, sizes", [(64, [64, 32, 16, 64]), (16, [16, 8, 4, 16]), (96, [96, 48, 24, 96])])
def test_augmenter_sizes_follow_hidden_size(tmp_path, hidden, sizes):
    _, model, *_ = build("MCLRec", tmp_path, hidden_size=hidden, inner_size=2 * hidden)
    assert [a.sizes for a in model.learnable_augmenters] == [sizes, sizes]
    out = model.learnable_augmenters[0](torch.randn(3, hidden))
    assert out.shape == (3, hidden)


def test_checkpoint_round_trip_restores_augmenters_and_both_optimisers(tmp_path):
    config, model, trainer, train_data, _ = _meta(tmp_path)
    trainer._train_epoch(FirstBatches(train_data, 2), 0)
    trainer._save_checkpoint(0, verbose=False)
    saved = torch.load(trainer.saved_model_file, weights_only=True)
    assert set(saved["optimizer"]["phases"]) == {"encoder", "augmenter"}
    assert any(k.startswith("learnable_augmenters.1.") for k in saved["state_dict"])

    config2, model2, trainer2, *_ = _meta(tmp_path)
    for a, b in zip(model.augmenter_parameters(), model2.augmenter_parameters()):
        assert not torch.equal(a, b)  # trained vs fresh: the check below is not vacuous
    trainer2.resume_checkpoint(trainer.saved_model_file)
    assert trainer2.start_epoch == 1
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    for name in ("encoder", "augmenter"):
        state_a = trainer.optimizer.optimizers[name].state_dict()
        state_b = trainer2.optimizer.optimizers[name].state_dict()
        assert state_a["state"].keys() == state_b["state"].keys() and state_a["state"]
        for key in state_a["state"]:
            for field in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state_a["state"][key][field], state_b["state"][key][field])

    # the same next step from both (same random draws for views and dropout)
    batch = next(iter(train_data))
    for t in (trainer, trainer2):
        torch.manual_seed(11)
        t._train_epoch(FirstBatches([batch], 1), 1)
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b)


def test_checkpoint_of_another_schedule_is_refused(tmp_path):
    _, _, trainer, *_ = _meta(tmp_path, meta_schedule="joint")
    trainer._save_checkpoint(0, verbose=False)
    _, _, phased, *_ = _meta(tmp_path, meta_schedule="alternate")
    with pytest.raises(CheckpointError, match="optimiser state .* does not match"):
        phased.resume_checkpoint(trainer.saved_model_file)


def test_shared_augmenter_is_one_module_for_both_views(tmp_path):
    _, shared, *_ = build("MCLRec", tmp_path, shared_augmenter=True)
    _, separate, *_ = build("MCLRec", tmp_path, shared_augmenter=False)
    assert len(shared.learnable_augmenters) == 1 and len(separate.learnable_augmenters) == 2
    assert 2 * len(shared.augmenter_parameters()) == len(separate.augmenter_parameters())
    seen = []
    for model in (shared, separate):
        for augmenter in model.learnable_augmenters:
            augmenter.register_forward_hook(lambda mod, inp, out: seen.append(mod))
        seen.clear()
        model.meta_terms(torch.randn(4, 16), torch.randn(4, 16))
        assert len(seen) == 2 and (seen[0] is seen[1]) == (model is shared)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"use_cl2": False, "reg_gamma": 0.0}, "leaves the learnable augmenters out"),
        ({"augmenter_ratios": [0.5, -1]}, "augmenter_ratios' has an entry that must be > 0"),
        ({"augmenter_ratios": 0.5}, "augmenter_ratios' must be a list"),
        ({"meta_schedule": "interleaved"}, "meta_schedule' must be one of"),
        ({"cl2_beta": -0.1}, "cl2_beta' must be >= 0"),
        ({"augmenter_learning_rate": 0}, "augmenter_learning_rate' must be > 0"),
        ({"mask_gamma": 1.5}, r"mask_gamma' must be in \[0, 1\]"),
    ],
)
def test_invalid_settings_fail_at_start(tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build("MCLRec", tmp_path, **overrides)


def test_paper_settings_per_dataset_and_overrides(tmp_path):
    base = {"data_path": str(tmp_path), "state": "WARNING"}
    for dataset, (lam, beta) in {"amazon-sports": (0.04, 0.4), "amazon-beauty": (0.0, 0.05), "yelp": (0.03, 0.1),
                                 "amazon-toys": (0.03, 0.1)}.items():
        config = Config(model="MCLRec", dataset=dataset, config_dict=dict(base))
        assert (config["cl_lambda"], config["cl2_beta"]) == (lam, beta), dataset
    config = Config(model="MCLRec", dataset="amazon-sports", config_dict=dict(base, cl2_beta=0.2))
    assert config["cl2_beta"] == 0.2  # config dict > the paper's per-dataset default


# ablation file -> check of (trainer, loss terms of one batch): the switch really switches
ABLATION_CHECKS = {
    "MCLRec-wo-Lcl1.yaml": lambda trainer, terms: terms[1] == 0 and terms[2] > 0 and terms[3] > 0,
    "MCLRec-wo-Lcl2.yaml": lambda trainer, terms: terms[1] > 0 and terms[2] == 0 and terms[3] > 0,
    "MCLRec-wo-R.yaml": lambda trainer, terms: terms[1] > 0 and terms[2] > 0 and terms[3] == 0,
    "MCLRec-shared-augmenter.yaml": lambda trainer, terms: len(trainer.model.learnable_augmenters) == 1,
    "MCLRec-J.yaml": lambda trainer, terms: isinstance(trainer.optimizer, torch.optim.Adam),
    "MCLRec-official-schedule.yaml": lambda trainer, terms: trainer.schedule == ("encoder", "augmenter", "encoder"),
}


def test_every_mclrec_ablation_file_is_checked():
    assert sorted(p.name for p in ABLATIONS.glob("MCLRec-*.yaml")) == sorted(ABLATION_CHECKS)


@pytest.mark.parametrize("ablation", sorted(ABLATION_CHECKS))
def test_each_ablation_trains_for_an_epoch_and_switches(tmp_path, ablation):
    files = [str(ABLATIONS / ablation)]
    result = run_recbole_srma(config_file_list=files, config_dict=tiny_config(tmp_path))
    assert result["epochs_trained"] == 1
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0

    config = Config(config_file_list=files, config_dict=tiny_config(tmp_path))
    train_data, *_ = data_preparation(config, create_dataset(config))
    model = MCLRec(config, train_data._dataset)
    terms = [t.item() for t in model.calculate_loss(next(iter(train_data)))]
    assert ABLATION_CHECKS[ablation](MetaTrainer(config, model), terms), terms
