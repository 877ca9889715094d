"""rl.rollout.processors.disallowed_tokens: the rollout's logits processors replayed over a whole completion,
as the GRPO learner applies them to its log-probs."""

from __future__ import annotations

import torch

from rewards.rec.trie import CodeTrie, TrieConstraint
from rl.rollout.processors import disallowed_tokens

EOS, PAD, V = 9, 0, 10


def test_each_position_masks_what_the_trie_forbids_after_the_tokens_before_it():
    trie = CodeTrie([(3, 4), (3, 5), (6, 7)], eos_token_id=EOS)
    # left-padded prompts of width 3, then completions of 3 tokens
    input_ids = torch.tensor([[PAD, 1, 2, 3, 5, EOS], [1, 2, 2, 6, 7, EOS]])
    forbidden = disallowed_tokens([TrieConstraint(trie)], input_ids, logits_to_keep=3, vocab_size=V)
    assert forbidden.shape == (2, 3, V) and forbidden.dtype == torch.bool
    allowed = [[set(torch.nonzero(~forbidden[b, j]).flatten().tolist()) for j in range(3)] for b in range(2)]
    assert allowed[0] == [{3, 6}, {4, 5}, {EOS}]  # start of an ID, after 3, after the complete ID (3, 5)
    assert allowed[1] == [{3, 6}, {7}, {EOS}]


def test_no_processors_forbid_nothing_and_two_processors_combine():
    input_ids = torch.tensor([[1, 2, 3, 4]])
    assert not disallowed_tokens([], input_ids, 2, V).any()
    a = TrieConstraint(CodeTrie([(3, 4), (6, 7)], eos_token_id=EOS))
    b = TrieConstraint(CodeTrie([(3, 4), (3, 8)], eos_token_id=EOS))
    forbidden = disallowed_tokens([a, b], input_ids, 2, V)
    assert torch.nonzero(~forbidden[0, 0]).flatten().tolist() == [3]  # 3 is the only first token both allow
    assert torch.nonzero(~forbidden[0, 1]).flatten().tolist() == [4]
