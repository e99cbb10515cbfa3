"""The real benchmark files (../shared/data; skipped where absent): exact statistics through RecBole, and a short
training run on amazon-toys."""

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_srma.config import Config
from recbole_srma.data import prepare_dataset
from recbole_srma.registry import get_model
from recbole_srma.trainer import Trainer

# users, items, interactions (DESIGN.md section 4), training samples (one per prefix)
EXPECTED = {
    "amazon-beauty": (22363, 12101, 198502, 131413),
    "amazon-sports": (35598, 18357, 296337, 189543),
    "amazon-toys": (19412, 11924, 167597, 109361),
    "yelp": (30431, 20033, 316354, 225061),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("real")


def _load(name, data_root, raw_dir, model="SASRec", **extra):
    settings = {
        "data_path": str(data_root),
        "raw_data_dir": str(raw_dir),
        "checkpoint_dir": str(data_root / "saved"),
        "show_progress": False,
        "state": "WARNING",
    }
    config = Config(model=model, dataset=name, config_dict={**settings, **extra})
    init_seed(config["seed"], config["reproducibility"])
    prepare_dataset(config)
    dataset = create_dataset(config)
    return config, dataset


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_statistics_through_recbole(name, data_root, shared_data_dir):
    users, items, interactions, samples = EXPECTED[name]
    config, dataset = _load(name, data_root, shared_data_dir)
    assert dataset.user_num - 1 == users  # RecBole reserves id 0 for padding
    assert dataset.item_num - 1 == items
    assert dataset.inter_num == interactions
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert len(train_data._dataset) == samples
    assert len(valid_data._dataset) == users and len(test_data._dataset) == users


def test_short_cl4srec_run_on_amazon_toys(data_root, shared_data_dir):
    config, dataset = _load("amazon-toys", data_root, shared_data_dir, model="CL4SRec")
    train_data, valid_data, _ = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("CL4SRec")(config, train_data._dataset)
    trainer = Trainer(config, model)
    before = trainer.evaluate(valid_data, load_best_model=False)

    model.train()
    losses = []
    for step, batch in enumerate(train_data):
        if step == 40:
            break
        trainer.optimizer.zero_grad()
        rec, cl = model.calculate_loss(batch)
        (rec + cl).backward()
        trainer.optimizer.step()
        losses.append((rec.item(), cl.item()))
    assert all(torch.isfinite(torch.tensor(pair)).all() for pair in losses)
    first = sum(r for r, _ in losses[:5]) / 5
    last = sum(r for r, _ in losses[-5:]) / 5
    assert last < first, (first, last)

    after = trainer.evaluate(valid_data, load_best_model=False)
    assert set(after) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
    assert after["ndcg@10"] > before["ndcg@10"]
    chance = 20 / (train_data._dataset.item_num - 1)  # hit@20 of a random ranking
    assert after["hit@20"] > 2 * chance

    # padding removal does not change a single metric of the full-sort evaluation of every toys user
    model.backbone.set_fast_path(False)
    assert trainer.evaluate(valid_data, load_best_model=False) == after
