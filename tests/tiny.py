"""A tiny synthetic dataset with learnable structure, for fast end-to-end tests that need no real files.

Users walk a fixed random "next item" table with some noise, so a sequential model can learn something in a few
epochs; ids are 1-based integers in the benchmark files' `user item item ...` format.
"""

import random

from recbole_srma.data import convert_sequences

TINY_NAME = "tiny-seq"


def write_tiny_sequences(path, n_users=300, n_items=80, min_len=5, max_len=30, seed=7):
    rng = random.Random(seed)
    successor = {i: rng.randint(1, n_items) for i in range(1, n_items + 1)}
    lines = []
    for user in range(1, n_users + 1):
        length = rng.randint(min_len, max_len)
        item = rng.randint(1, n_items)
        seq = [item]
        while len(seq) < length:
            item = successor[item] if rng.random() < 0.7 else rng.randint(1, n_items)
            seq.append(item)
        lines.append(" ".join(map(str, [user] + seq)))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_tiny_dataset(root, name=TINY_NAME, **kwargs):
    """Write and convert the tiny dataset under ``root``; return the config entries that select it."""
    raw = write_tiny_sequences(root / f"{name}.txt", **kwargs)
    convert_sequences(raw, name, root / "data")
    return {"dataset": name, "data_path": str(root / "data")}


def tiny_config(root, **overrides):
    """A fast config for end-to-end tests on the tiny dataset: small model, one epoch, no progress bars."""
    config = make_tiny_dataset(root) if not (root / "data" / TINY_NAME).exists() else {
        "dataset": TINY_NAME,
        "data_path": str(root / "data"),
    }
    config.update(
        {
            "epochs": 1,
            "train_batch_size": 64,
            "eval_batch_size": 128,
            "show_progress": False,
            "checkpoint_dir": str(root / "saved"),
            "hidden_size": 16,
            "inner_size": 32,
            "MAX_ITEM_LIST_LENGTH": 20,
            "state": "WARNING",
        }
    )
    config.update(overrides)
    return config


def build(model, root, **overrides):
    """Config, split loaders and a fresh model for ``model`` on the tiny dataset (no training)."""
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    from recbole_srma.config import Config
    from recbole_srma.data import prepare_dataset
    from recbole_srma.quick_start import split_loaders
    from recbole_srma.registry import get_model

    config = Config(model=model, config_dict=tiny_config(root, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    prepare_dataset(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = split_loaders(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset)
    return config, net, train_data, valid_data, test_data


def loss_and_gradients(net, batch):
    """The summed training loss of one batch and every parameter's gradient after its backward pass."""
    loss = net.calculate_loss(batch)
    loss = sum(loss) if isinstance(loss, tuple) else loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def assert_same_loss_and_gradients(a, b):
    """``a``, ``b``: :func:`loss_and_gradients` of two computations that must agree (fast and padded paths)."""
    import torch

    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert a[1].keys() == b[1].keys()
    for name in b[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-4, atol=1e-6, msg=name)
