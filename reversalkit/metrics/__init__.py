"""Metrics of the study, on plain Python/NumPy data (never models).

- accuracy: `pass_at_k`, `pass_at_k_curve`, `default_ks`, `coverage`, `sample_counts`
- transitions: `transitions` -> `Transitions` (improvement / regression sets), `pass_at_k_on`
- diversity: distinct n-grams (C++ hot loop), Sentence-BERT diversity, distinct equations; each
  with a `*_groups` form scoring many groups at once -> `GroupScores`; `fixed_size_groups` cuts
  groups to one size so those scores compare
- equations: `extract_equations`, `normalize_equation`
- embeddings: `embed_texts`, `load_sentence_model` (documented per-(model, device) cache)
- similarity: `nearest_neighbors`, `nearest_neighbor_similarity`, `semantic_dedup` (FAISS / torch / numpy)
- bootstrap: `bootstrap_ci`, `paired_bootstrap_ci`

The paper reports diversity within the correct and within the incorrect samples of each problem:
call the `*_groups` functions once with the correct groups and once with the incorrect groups.
"""

from .accuracy import coverage, default_ks, pass_at_k, pass_at_k_curve, sample_counts
from .bootstrap import BootstrapCI, bootstrap_ci, paired_bootstrap_ci
from .diversity import (
    GroupScores,
    distinct_equations,
    distinct_equations_groups,
    distinct_ngrams,
    distinct_ngrams_avg,
    distinct_ngrams_avg_groups,
    distinct_ngrams_groups,
    fixed_size_groups,
    ngram_counts,
    ngram_counts_reference,
    sbert_diversity,
    sbert_diversity_groups,
)
from .embeddings import (
    DEFAULT_SBERT_MODEL,
    clear_model_cache,
    embed_texts,
    load_sentence_model,
    resolve_model,
)
from .equations import extract_equations, normalize_equation
from .similarity import choose_backend, nearest_neighbor_similarity, nearest_neighbors, semantic_dedup
from .transitions import Transitions, pass_at_k_on, transitions

__all__ = [
    "pass_at_k", "pass_at_k_curve", "default_ks", "coverage", "sample_counts",
    "Transitions", "transitions", "pass_at_k_on",
    "GroupScores", "fixed_size_groups", "ngram_counts", "ngram_counts_reference",
    "distinct_ngrams", "distinct_ngrams_avg", "distinct_ngrams_groups", "distinct_ngrams_avg_groups",
    "sbert_diversity", "sbert_diversity_groups", "distinct_equations", "distinct_equations_groups",
    "extract_equations", "normalize_equation",
    "DEFAULT_SBERT_MODEL", "resolve_model", "load_sentence_model", "clear_model_cache", "embed_texts",
    "choose_backend", "nearest_neighbors", "nearest_neighbor_similarity", "semantic_dedup",
    "BootstrapCI", "bootstrap_ci", "paired_bootstrap_ci",
]
