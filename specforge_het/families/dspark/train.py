"""DSpark training (model.py): the block recipe (families/block_common/train.py) with the Markov head in the logits
and a confidence head fitted beside them.

Slot i's logits add the Markov bias of the token before it in the data, x_{a+i−1} (teacher forcing: at inference
it is the token drafted before, which equals the data wherever the block is still being accepted). The confidence
head is fitted, by binary cross-entropy with weight `algorithm.confidence_weight`, to whether slot i's greedy draft
is the base's greedy token — the acceptance of slot i given that slots < i were accepted, as a greedy verifier
decides it. Its inputs are detached: the head calibrates the drafter and never pulls its features.
"""
from __future__ import annotations

import torch.nn.functional as F

from ...algorithms import Algorithm, register
from ...algorithms.losses import masked_mean, top1_hits
from ..block_common.train import (_targets, block_distillation, block_simulated_acceptance, feature_layers,
                                  training_blocks)
from .model import build_dspark_drafter


def dspark_loss(drafter, batch: dict, alg, training: bool = True):
    blocks = training_blocks(drafter, batch, alg, training)
    previous, _ = _targets(batch["input_ids"], blocks.anchors, drafter.block_size, shift=1)  # x_{a+i−1}
    logits, embedding = drafter.markov_logits(blocks.outputs, previous)
    total, metrics = block_distillation(logits, blocks, alg)
    accepted = top1_hits(logits.detach(), blocks.target_logits, blocks.in_vocab).float()
    confidence = drafter.confidence_head(blocks.outputs.detach(), embedding.detach())
    bce = F.binary_cross_entropy_with_logits(confidence.float(), accepted, reduction="none")
    confidence_loss = masked_mean(bce, blocks.mask.float())
    metrics["confidence_loss"] = confidence_loss.detach()
    return total + alg.confidence_weight * confidence_loss.to(total.dtype), metrics


def build(base, modeling, layers, meta, draft_vocab):
    return build_dspark_drafter(base, modeling.markov_rank, modeling.confidence_cut, feature_layers=layers,
                                block_size=modeling.block_size, mask_token_id=modeling.mask_token_id,
                                overrides=modeling.draft_config_overrides, meta=meta, family=modeling.draft_family,
                                hidden_size=modeling.draft_hidden_size, own_embedding=modeling.embedding == "own",
                                own_lm_head=modeling.lm_head == "own" or draft_vocab is not None,
                                draft_vocab=draft_vocab, draft_layers=modeling.draft_layers)


register(Algorithm("dspark", dspark_loss, build, feature_layers,
                   modeling_keys=("block_size", "mask_token_id", "markov_rank", "confidence_cut"),
                   algorithm_keys=("num_anchors", "confidence_weight"), packs=True,
                   architecture="dspark_drafter", simulate=block_simulated_acceptance))
