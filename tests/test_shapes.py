"""benchmark.shapes: proposal shapes written `chain:D` / `tree:D:K:N`, parsed by one function, checked when the
config loads (one line naming the key and the syntax), and what the benchmark decodes when set."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specforge_het.config import ConfigError, resolve_config
from specforge_het.config.shapes import parse_shape
from specforge_het.inference.strategies import shape_plan

positive = st.integers(1, 64)


@given(positive)
def test_a_chain_of_d_drafts_verifies_d_tokens(depth):
    assert parse_shape(f"chain:{depth}") == ("chain", {"depth": depth, "top_k": 1, "total_tokens": depth})


@given(positive, positive, positive)
def test_a_tree_shape_is_depth_top_k_nodes(depth, top_k, nodes):
    assert parse_shape(f"tree:{depth}:{top_k}:{nodes}") == (
        "tree", {"depth": depth, "top_k": top_k, "total_tokens": nodes})


@given(st.text(max_size=12))
def test_anything_else_is_refused_in_one_line(text):
    try:
        kind, params = parse_shape(text)
    except ConfigError as e:
        assert "\n" not in str(e) and "benchmark.shapes" in str(e) and "tree:DEPTH:TOP_K:NODES" in str(e)
    else:  # only the two forms parse, with positive integers
        assert kind in ("chain", "tree") and min(params.values()) >= 1 and text.startswith(kind + ":")


@pytest.mark.parametrize("bad", ["chain:0", "tree:2:4", "budget:3", "chain:two", "tree:3:4:10:1"])
def test_a_bad_shape_stops_the_config_load(bad):
    with pytest.raises(ConfigError, match="benchmark.shapes"):
        resolve_config(["--benchmark.shapes", f"['chain:2', '{bad}']"])


def test_shapes_replace_the_strategies_and_keep_their_order():
    cfg, _ = resolve_config(["--benchmark.shapes", "['tree:3:4:10', 'chain:2']"])
    assert shape_plan(cfg) == [("tree:3:4:10", {"depth": 3, "top_k": 4, "total_tokens": 10}),
                               ("chain:2", {"depth": 2, "top_k": 1, "total_tokens": 2})]
    cfg, _ = resolve_config(["--inference.strategy", "both", "--inference.depth", "4"])
    assert [label for label, _ in shape_plan(cfg)] == ["chain", "tree"]
