"""inference.compile: the base's and drafter's forwards through torch.compile (inductor, on CPU here) decode the
same tokens as eager, batched and ragged, for chain, tree and budget strategies; compiled base features equal the
hooked eager ones. The static cache and CUDA graphs: tests/test_static_cache.py."""
import pytest
import torch

from specforge_het.config import ConfigError
from specforge_het.inference.compiled import check_compilable, compile_for_decoding
from specforge_het.inference.engine import speculative_decode_batch

from test_batch import STRATEGIES, setup  # noqa: F401  (the module fixture: trained drafters, eager references)
from test_hetero import EOS


@pytest.fixture(scope="module")
def compiled(setup):  # noqa: F811
    base, drafters, prompts, refs = setup
    eager_features = base.forward(torch.tensor([prompts[0]]), feature_layers=[0, 0])[0]
    for drafter in drafters.values():
        compile_for_decoding(base, drafter)
    return base, drafters, prompts, refs, eager_features


@pytest.mark.parametrize("algorithm,strategy", [("eagle2", "chain"), ("eagle2", "budget"), ("eagle3", "tree")])
def test_compiled_decoding_gives_the_eager_tokens(compiled, algorithm, strategy):
    base, drafters, prompts, refs, _ = compiled
    results = [r for i in range(0, 12, 4)
               for r in speculative_decode_batch(base, drafters[algorithm], prompts[i:i + 4], 16, EOS,
                                                 **STRATEGIES[strategy])]
    assert [r.tokens for r in results] == refs
    assert sum(a for r in results for a in r.accepted) > 0
    assert base.compiled is not None and drafters[algorithm].compiled_forward


def test_compiled_features_are_the_hooked_ones(compiled):
    base, _, prompts, _, eager_features = compiled
    features, _ = base.forward(torch.tensor([prompts[0]]), feature_layers=[0, 0])
    torch.testing.assert_close(features, eager_features, rtol=1e-5, atol=1e-5)
    # The last block's output is not among the recorded hidden states (the final norm's replaces it): hooks read it.
    last, _ = base.forward(torch.tensor([prompts[0]]), feature_layers=[base.num_layers - 1])
    assert last.shape[-1] == base.hidden_size


def test_compile_refuses_what_it_cannot_honour():
    with pytest.raises(ConfigError, match="inference.compile: not with plugins \\(offload"):
        check_compilable(["offload"], "model")
    with pytest.raises(ConfigError, match="verify_precision float32"):
        check_compilable([], "float32")
    check_compilable([], "model")
