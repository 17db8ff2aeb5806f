"""Tree bookkeeping on hand-made trees: masks, acceptance, and the chain as a special case."""
import torch

from specforge_het.inference.tree import DraftTree, ancestor_matrix, greedy_accept, tree_attention_mask

#        0 (root, token 10)
#      /   \
#   1(11)  2(12)
#   /  \      \
# 3(13) 4(14)  5(15)
#  |
# 6(16)
TREE = DraftTree(tokens=torch.tensor([10, 11, 12, 13, 14, 15, 16]),
                 parents=torch.tensor([-1, 0, 0, 1, 1, 2, 3]),
                 depths=torch.tensor([0, 1, 1, 2, 2, 2, 3]))


def test_ancestor_matrix():
    anc = ancestor_matrix(TREE.parents, TREE.depths)
    assert anc[6].nonzero().flatten().tolist() == [0, 1, 3, 6]
    assert anc[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert anc[0].nonzero().flatten().tolist() == [0]
    assert anc.sum().item() == 1 + 2 + 2 + 3 + 3 + 3 + 4


def test_tree_mask_sees_prefix_and_ancestors_only():
    anc = ancestor_matrix(TREE.parents, TREE.depths)
    mask = tree_attention_mask(anc, prefix_len=3, dtype=torch.float32)[0, 0]
    assert mask.shape == (7, 10)
    assert (mask[:, :3] == 0).all()
    visible = (mask[4, 3:] == 0).nonzero().flatten().tolist()
    assert visible == [0, 1, 4]


def test_greedy_accept_walks_the_matching_path():
    anc = ancestor_matrix(TREE.parents, TREE.depths)
    # base argmax per node: after root → 11, after 1 → 13, after 3 → 16, after 6 → 99 (bonus)
    argmax = torch.tensor([11, 13, 0, 16, 0, 0, 99])
    assert greedy_accept(TREE, anc, argmax).tolist() == [0, 1, 3, 6]
    # after root → 12, after 2 → 7 (no child matches): accept node 2 only
    argmax = torch.tensor([12, 0, 7, 0, 0, 0, 0])
    assert greedy_accept(TREE, anc, argmax).tolist() == [0, 2]
    # no child of the root matches: only the root
    argmax = torch.tensor([42, 13, 15, 16, 0, 0, 0])
    assert greedy_accept(TREE, anc, argmax).tolist() == [0]


def test_chain_is_a_tree():
    chain = DraftTree(tokens=torch.tensor([5, 6, 7, 8]), parents=torch.tensor([-1, 0, 1, 2]),
                      depths=torch.tensor([0, 1, 2, 3]))
    anc = ancestor_matrix(chain.parents, chain.depths)
    assert torch.equal(anc, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert greedy_accept(chain, anc, torch.tensor([6, 7, 1, 1])).tolist() == [0, 1, 2]
