"""The study layer: evaluate (pruned) models on the paper's tasks and analyse their features.

Evaluation, bottom to top:
  tasks.py    the tasks (names, headline metrics, EvalError) and their item loaders
  scorer.py   Scorer: a whole causal LM that scores continuations and generates
  runner.py   evaluate(): one model, one task, several languages; format_table, load_results
  compare.py  paired bootstrap between two results; compare_models for several side by side
Analysis and shared pieces:
  analysis.py feature magnitudes per layer and condition, top/bottom overlaps (paper Figs 1-3)
  plots.py    every figure (matplotlib, imported on first use)
  metrics.py  the numbers: perplexity, intervals, paired bootstrap, RankC, chrF/BLEU, overlaps

Nothing is imported here: import the module you need (`from featprune_ext.study import runner`).
"""
