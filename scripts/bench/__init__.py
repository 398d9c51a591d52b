"""The pieces of scripts/benchmark.py (the entry point; its docstring says what is measured).

table      rows, ratios, CSV and Markdown output
measure    timing, memory, correctness checks, the raw TensorFlow limit
peers      our explain calls with the peers' settings, PAIR `saliency`, Quantus MPRT, the per-pair metric loop
context    the shared state of one run (sizes, rows, checks, loaded models, limit measurements) and its timing
targets    the targets section of the report
gradients  workloads (a) SmoothGrad and (b) Integrated Gradients
cascading  workload (c) a full cascading run
metrics    workload (d) similarity metrics
memory     workload (m) peak memory
"""
