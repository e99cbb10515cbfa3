"""Config: plugin yaml layering under RecBole's precedence, model lookup, and start-up checks."""

import sys

import pytest
import torch
from tiny import tiny_config

from recbole_srma.config import Config
from recbole_srma.errors import ConfigError


def _cfg(tmp_path, model="CL4SRec", **overrides):
    return Config(model=model, config_dict=tiny_config(tmp_path, **overrides))


def test_layers_recbole_then_plugin_defaults(tmp_path):
    config = _cfg(tmp_path)
    assert config["n_heads"] == 2  # properties/backbone.yaml
    assert config["cl_lambda"] == 0.1  # properties/model/CL4SRec.yaml
    assert config["metrics"] == ["Hit", "NDCG"]  # plugin overall.yaml over RecBole's default metric list
    assert config["valid_metric"] == "NDCG@10"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["train_neg_sample_args"]["distribution"] == "none"
    assert config["weight_decay"] == 0.0  # RecBole default, untouched


def test_plugin_overall_applies_to_recbole_models(tmp_path):
    from recbole.model.sequential_recommender.sasrec import SASRec

    config = Config(model="SASRec", config_dict=tiny_config(tmp_path))
    assert config.model_class is SASRec
    assert config["metrics"] == ["Hit", "NDCG"] and config["topk"] == [5, 10, 20]
    assert config["loss_type"] == "CE"


def test_precedence_files_dict_command_line(tmp_path, monkeypatch):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("cl_lambda: 0.3\ntau: 0.5\ncrop_eta: 0.4\nmask_gamma: 0.2\n")
    second.write_text("tau: 0.7\nmask_gamma: 0.25\n")
    base = tiny_config(tmp_path)
    config = Config(model="CL4SRec", config_file_list=[str(first), str(second)], config_dict=dict(base, crop_eta=0.5))
    assert config["cl_lambda"] == 0.3  # file > plugin default
    assert config["tau"] == 0.7  # later file > earlier file
    assert config["crop_eta"] == 0.5  # config dict > file
    monkeypatch.setattr(sys, "argv", ["run", "--mask_gamma=0.9", "--model=CL4SRec"])
    config = Config(config_file_list=[str(first), str(second)], config_dict=dict(base, mask_gamma=0.5))
    assert config["mask_gamma"] == 0.9  # command line > config dict
    assert config["model"] == "CL4SRec"


def test_model_and_dataset_from_a_config_file(tmp_path):
    base = tiny_config(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(f"model: CL4SRec\ndataset: {base['dataset']}\ndata_path: {base['data_path']}\n")
    config = Config(config_file_list=[str(path)])
    assert config["model"] == "CL4SRec" and config["dataset"] == base["dataset"]


def test_dataset_yaml_is_layered(tmp_path):
    config = Config(model="CL4SRec", dataset="amazon-toys", config_dict={"data_path": str(tmp_path)})
    assert config["raw_file"] == "Toys_and_Games.txt"
    assert len(config["raw_sha256"]) == 64


def test_misspelt_hyper_parameter_fails_with_the_right_name(tmp_path):
    with pytest.raises(ConfigError, match="cl_lamda.*did you mean 'cl_lambda'"):
        _cfg(tmp_path, cl_lamda=0.2)


def test_missing_hyper_parameter_fails_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="needs the hyper-parameter 'cl_lambda'"):
        _cfg(tmp_path, cl_lambda=None)


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("mask_gamma", 1.5, r"mask_gamma' must be in \[0, 1\]"),
        ("crop_eta", -0.1, r"crop_eta' must be in \[0, 1\]"),
        ("tau", 0, "tau' must be > 0"),
        ("sim", "euclid", "sim' must be one of"),
        ("augmentations", ["crop", "shuffle"], "unknown entries"),
        ("n_heads", 3, "multiple of n_heads"),
        ("hidden_dropout_prob", 2.0, r"hidden_dropout_prob' must be in \[0, 1\]"),
    ],
)
def test_out_of_range_hyper_parameters_fail_at_start(tmp_path, key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _cfg(tmp_path, **{key: value})


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'CL4Srec'.*Did you mean.*CL4SRec"):
        _cfg(tmp_path, model="CL4Srec")
    with pytest.raises(ConfigError, match="unknown model 'NotAModel'"):
        _cfg(tmp_path, model="NotAModel")


def test_unrelated_unknown_keys_are_reported_not_fatal(tmp_path):
    config = _cfg(tmp_path, my_experiment_tag="run-7")
    assert config.unknown_keys == ["my_experiment_tag"]


def test_device_follows_use_gpu_and_availability(tmp_path):
    config = _cfg(tmp_path, use_gpu=False)
    assert config["device"] == torch.device("cpu")
    config = _cfg(tmp_path)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config["device"].type == expected


def test_raw_config_rebuilds_the_same_config(tmp_path):
    from recbole_srma.compat import checkpoint_config

    config = _cfg(tmp_path, tau=0.3)
    plain = checkpoint_config(config)
    again = Config(model=plain["model"], dataset=plain["dataset"], config_dict=dict(plain))
    for key in ("tau", "data_path", "eval_args", "train_neg_sample_args", "metrics", "hidden_size"):
        assert again[key] == config[key], key


@pytest.mark.parametrize(
    "model, key, old, new",
    [
        ("SRMA", "complement_mode", "official", "contrast_original"),
        ("MCLRec", "meta_schedule", "official", "encoder_augmenter_encoder"),
        ("DuoRec", "contrast", "us_x", "dropout_view_vs_same_target"),
    ],
)
def test_renamed_option_values_keep_their_old_spelling_with_one_line_saying_so(tmp_path, model, key, old, new):
    from tiny import tiny_config

    config = Config(model=model, config_dict=tiny_config(tmp_path, **{key: old}))
    assert config[key] == new
    assert config.start_warnings == [f"{key}: '{old}' is a deprecated name, read as '{new}' (the same setting); "
                                     f"write {key}: {new}"]
    assert Config(model=model, config_dict=tiny_config(tmp_path, **{key: new})).start_warnings == []
