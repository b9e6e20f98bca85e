"""reversalkit: measure self-improvement reversal in iterative post-training (arXiv 2407.05013).

Subpackages: `tasks` (problems, answer checking, sandbox), `engine` (paged-KV sampler), `kernels`
(fused log-prob / DPO loss), `train` (SFT and DPO steps), `metrics` (pass@k, coverage,
transitions, diversity), `study` (the iterative loop, run store, report). Import what you use;
this module stays light so that `import reversalkit` is fast.
"""

__version__ = "0.1.0"
