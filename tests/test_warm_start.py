"""modeling.init_from_drafter: a new run starts from a trained drafter's weights (draft vocabulary included), and a
checkpoint of another architecture or shape is refused in one line."""
import pytest
import torch
from safetensors.torch import load_file

from specforge_het import data_gen, train
from specforge_het.config.schema import ConfigError
from specforge_het.modeling.base import load_base

from conftest import make_cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, tiny_conversations):
    work = tmp_path_factory.mktemp("warm")
    cfg = make_cfg(work, tiny_base, tiny_conversations, training__max_steps=4, training__save_steps=4,
                   training__warmup_steps=0, training__logging_steps=2)
    data_gen.run(cfg, [])
    return cfg, train.run(cfg, [])


def test_a_warm_started_drafter_holds_the_checkpoint_weights(trained, tmp_path, tiny_base, tiny_conversations):
    cfg, out = trained
    again = make_cfg(tmp_path, tiny_base, tiny_conversations, modeling__init_from_drafter=str(out),
                     training__seed=cfg.training.seed + 1)
    drafter = train.make_drafter(again, load_base(again.base))
    saved = load_file(str(out / "model.safetensors"))
    own = drafter.state_dict()
    for key, value in saved.items():
        assert torch.equal(own[key], value), f"{key} was not loaded"
    assert drafter.meta["init_from_drafter"] == str(out)
    fresh = make_cfg(tmp_path, tiny_base, tiny_conversations, training__seed=cfg.training.seed + 1)
    other = train.make_drafter(fresh, load_base(fresh.base)).state_dict()
    assert any(not torch.equal(other[k], saved[k]) for k in saved if saved[k].is_floating_point())


def test_another_architecture_is_refused(trained, tmp_path, tiny_base, tiny_conversations):
    _, out = trained
    bad = make_cfg(tmp_path, tiny_base, tiny_conversations, algorithm__name="eagle3", data__aux_layer_ids=[0, 1],
                   modeling__init_from_drafter=str(out))
    with pytest.raises(ConfigError, match=r"init_from_drafter: .* holds a eagle_drafter drafter; this run trains"):
        train.make_drafter(bad, load_base(bad.base), feature_layers=[0, 1, 1])
    wide = make_cfg(tmp_path, tiny_base, tiny_conversations, modeling__init_from_drafter=str(out),
                    modeling__draft_config_overrides={"intermediate_size": 24})
    with pytest.raises(ConfigError, match=r"init_from_drafter: .* has shape"):
        train.make_drafter(wide, load_base(wide.base))
