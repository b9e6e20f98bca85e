"""Entry point of the distributed tests' ranks: `torchrun --nproc-per-node N dist_worker.py MODE OUT`.

MODE train: SFT and DPO of the toy model (`train_fixtures`) with the ranks sharing every step
(`dist_worker.py train OUT ddp|fsdp`); rank 0 writes OUT/train.json (per-step records and the
final weights) and saves the model in OUT/model.
MODE study: the shrunken study of `test_dist_study` in the run directory OUT (extra `key=value`
overrides may follow); with KILL_RANK and KILL_AT in the environment, that rank SIGKILLs itself
right after the artifact KILL_AT lands (or, for a rank that writes nothing, when the step of
that name starts).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run_train(out: Path, mode: str) -> None:
    import torch
    from test_dist_train import DPO_CFG, SFT_CFG
    from train_fixtures import dpo_pairs, sft_examples, toy_model, toy_tokenizer

    from reversalkit import dist
    from reversalkit.train import reference_logprobs, train_dpo, train_sft

    torch.set_num_threads(1)
    group = dist.process_group("cpu")
    tok = toy_tokenizer()
    model = toy_model(len(tok), seed=0 + group.rank)  # rank 0's weights must reach every rank
    sft = train_sft(model, tok, sft_examples(16), SFT_CFG.replace(data_parallel=mode), progress=False,
                    group=group)
    pairs = dpo_pairs(16)
    ref = reference_logprobs(model, tok, pairs, DPO_CFG)
    ref_shared = reference_logprobs(model, tok, pairs, DPO_CFG, group=group)  # batches split over ranks
    dpo = train_dpo(model, tok, pairs, ref, DPO_CFG.replace(data_parallel=mode), progress=False, group=group)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    same = group.all_gather(weights.tolist())
    if group.is_main:
        record = {"sft": sft.to_dict(), "dpo": dpo.to_dict(), "weights": weights.tolist(),
                  "ref_shared_equal": bool(torch.equal(ref, ref_shared)),
                  "replicas_equal": all(w == same[0] for w in same)}
        (out / "train.json").write_text(json.dumps(record))
        model.save_pretrained(out / "model")
    dist.close()


def run_study(out: Path, overrides: list[str]) -> None:
    from test_dist_study import study_config

    from reversalkit import dist
    from reversalkit.study import Study

    rank = dist.rank_from_env()
    kill_rank, kill_at = os.environ.get("KILL_RANK"), os.environ.get("KILL_AT")

    def on_event(kind: str, name: str) -> None:
        if kill_rank is not None and int(kill_rank) == rank and name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    Study(study_config(out, overrides), on_event=on_event, print_summary=False).run()
    dist.close()


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "train":
        run_train(out, sys.argv[3])
    else:
        run_study(out, sys.argv[3:])
