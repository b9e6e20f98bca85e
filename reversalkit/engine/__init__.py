"""The paged-KV batched sampler: continuous batching, shared prefix KV blocks, HF-exact greedy.

    from reversalkit.engine import Engine, SamplingParams
    engine = Engine(hf_model, tokenizer)                      # or Engine("path/to/checkpoint")
    outs = engine.generate(prompts, SamplingParams(n=8, temperature=0.75, top_p=0.95, seed=0))
    outs[i][j]  # Completion(text, token_ids, cumulative_logprob, finish_reason, token_logprobs)
    engine.load_weights(trained_model.state_dict())          # after a training round

Pieces, each usable alone: sequence (SamplingParams, Completion, Sequence), block_manager (KV
block allocator), scheduler, model (Llama-family forward), attention (paged KV storage,
prefill, paged decode), rows (CPU decode rows), cuda_graphs, sampling, host (CPU allocator
tuning), runner, engine. The decode attention and top-p sampling ops they call live in
reversalkit.kernels (paged_decode, sample_top_p); tokenization is shared with training:
reversalkit.tokenization.
"""

from reversalkit.engine.engine import Engine
from reversalkit.engine.sequence import Completion, SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
