"""Record processing shared by the sequential runner and the workers.

Pure of network, threads and clocks: input formats and splits, key
serialisation, partitioning, the intermediate record format, sort/spill/merge,
the task runners and the output committer.
"""
