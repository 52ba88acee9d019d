"""MUSIC synthesis: seeds, the rollout engine (the paper's Algorithm 1), the runner that writes
pairs resumably, and the synthesis report."""
