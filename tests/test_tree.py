"""Tree bookkeeping on hand-made trees: masks, acceptance, and the chain as a special case."""
import torch

from specforge_het.inference.accept import greedy_accept
from specforge_het.inference.tree import DraftTree, ancestor_matrix, tree_attention_mask

#        0 (root, token 10)
#      /   \
#   1(11)  2(12)
#   /  \      \
# 3(13) 4(14)  5(15)
#  |
# 6(16)
TREE = DraftTree(tokens=torch.tensor([[10, 11, 12, 13, 14, 15, 16]]),
                 parents=torch.tensor([[-1, 0, 0, 1, 1, 2, 3]]),
                 depths=torch.tensor([[0, 1, 1, 2, 2, 2, 3]]))


def accept(tree, argmax):
    paths, lens = greedy_accept(tree, ancestor_matrix(tree.parents), argmax)
    return [p[:n] for p, n in zip(paths.tolist(), lens.tolist())]


def test_ancestor_matrix():
    anc = ancestor_matrix(TREE.parents)[0]
    assert anc[6].nonzero().flatten().tolist() == [0, 1, 3, 6]
    assert anc[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert anc[0].nonzero().flatten().tolist() == [0]
    assert anc.sum().item() == 1 + 2 + 2 + 3 + 3 + 3 + 4


def test_tree_mask_sees_prefix_and_ancestors_only():
    anc = ancestor_matrix(TREE.parents)
    mask = tree_attention_mask(anc, torch.tensor([[True, False, True]]), dtype=torch.float32)[0, 0]
    assert mask.shape == (7, 10)
    assert (mask[:, [0, 2]] == 0).all() and (mask[:, 1] < 0).all()  # a padding slot is never seen
    visible = (mask[4, 3:] == 0).nonzero().flatten().tolist()
    assert visible == [0, 1, 4]


def test_greedy_accept_walks_the_matching_path():
    # base argmax per node: after root → 11, after 1 → 13, after 3 → 16, after 6 → 99 (bonus)
    argmax = torch.tensor([[11, 13, 0, 16, 0, 0, 99]])
    assert accept(TREE, argmax) == [[0, 1, 3, 6]]
    # after root → 12, after 2 → 7 (no child matches): accept node 2 only
    argmax = torch.tensor([[12, 0, 7, 0, 0, 0, 0]])
    assert accept(TREE, argmax) == [[0, 2]]
    # no child of the root matches: only the root
    argmax = torch.tensor([[42, 13, 15, 16, 0, 0, 0]])
    assert accept(TREE, argmax) == [[0]]


def test_batched_rows_accept_their_own_paths():
    """Three sequences' trees of the same size but different shapes, verified together: each row gets its own
    path and length, padded with its last node."""
    other = DraftTree(tokens=torch.tensor([[20, 21, 22, 23, 24, 25, 26]]),
                      parents=torch.tensor([[-1, 0, 1, 2, 3, 4, 5]]),
                      depths=torch.tensor([[0, 1, 2, 3, 4, 5, 6]]))
    batch = DraftTree(*(torch.cat([getattr(TREE, f), getattr(other, f), getattr(TREE, f)])
                        for f in ("tokens", "parents", "depths")))
    argmax = torch.tensor([[11, 13, 0, 16, 0, 0, 99], [21, 22, 23, 24, 0, 0, 0], [42, 0, 0, 0, 0, 0, 0]])
    anc = ancestor_matrix(batch.parents)
    paths, lens = greedy_accept(batch, anc, argmax)
    assert lens.tolist() == [4, 5, 1]
    assert paths.tolist() == [[0, 1, 3, 6, 6], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    assert torch.equal(anc[1], torch.tril(torch.ones(7, 7, dtype=torch.bool)))


def test_chain_is_a_tree():
    chain = DraftTree(tokens=torch.tensor([[5, 6, 7, 8]]), parents=torch.tensor([[-1, 0, 1, 2]]),
                      depths=torch.tensor([[0, 1, 2, 3]]))
    anc = ancestor_matrix(chain.parents)[0]
    assert torch.equal(anc, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert accept(chain, torch.tensor([[6, 7, 1, 1]])) == [[0, 1, 2]]


def test_budget_tree_is_best_first_and_ancestor_closed():
    """With best_first the pool's best open nodes are expanded at any depth; the kept nodes are the budget best by
    cumulative log-prob, every parent kept before its children."""
    import torch.nn as nn
    from transformers import DynamicCache

    from specforge_het.inference.tree import expand_tree

    class Skewed(nn.Module):
        """Token 5 always gets 0.9 of the mass: the best-first tree should follow it deep."""
        feature_layers, token_only = None, False

        def forward(self, hidden, ids, pos, attention_mask=None, past_key_values=None, from_base=True):
            return hidden

        def logits(self, feats):
            logits = torch.full((*feats.shape[:-1], 16), -10.0)
            logits[..., 5] = 0.0
            logits[..., 6] = -2.2
            logits[..., 7] = -2.3
            return logits

        def draft_to_target(self, ids):
            return ids

    d = Skewed()
    kw = dict(root_token=torch.tensor([1]), root_feature=torch.zeros(1, 4), draft_cache=DynamicCache(),
              prefix_valid=torch.zeros(1, 0, dtype=torch.bool), root_position=torch.tensor([3]), depth=6, top_k=3,
              total_tokens=12)
    tree = expand_tree(d, **kw, best_first=True).row(0)
    level = expand_tree(d, **kw).row(0)
    assert tree.size == level.size == 13
    assert bool((tree.parents[1:] < torch.arange(1, 13)).all())  # parents precede children
    # The all-5 spine (cumulative p 0.9^d) is kept down to the last round's depth.
    assert int(tree.depths.max()) == 6
    node, spine = int((tree.depths == 6).nonzero()[0]), []
    while node > 0:
        spine.append(int(tree.tokens[node]))
        node = int(tree.parents[node])
    assert spine == [5] * 6
