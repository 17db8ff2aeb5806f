"""DFlash training: the block recipe of block_common/train.py with the plain distillation loss."""
from __future__ import annotations

import torch

from ...algorithms import Algorithm, register
from ..block_common.train import block_distillation, block_simulated_acceptance, feature_layers, training_blocks
from .model import build_dflash_drafter


def dflash_loss(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    blocks = training_blocks(drafter, batch, alg, training)
    return block_distillation(drafter.logits(blocks.outputs), blocks, alg)


def build(base, modeling, layers, meta, draft_vocab):
    return build_dflash_drafter(base, layers, modeling.block_size, modeling.mask_token_id,
                                modeling.draft_config_overrides, meta=meta, family=modeling.draft_family,
                                hidden_size=modeling.draft_hidden_size, own_embedding=modeling.embedding == "own",
                                own_lm_head=modeling.lm_head == "own" or draft_vocab is not None,
                                draft_vocab=draft_vocab, draft_layers=modeling.draft_layers)


register(Algorithm("dflash", dflash_loss, build, feature_layers, modeling_keys=("block_size", "mask_token_id"),
                   algorithm_keys=("num_anchors",), packs=True, architecture="dflash_drafter",
                   simulate=block_simulated_acceptance))
