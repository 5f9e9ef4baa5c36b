"""Speed and memory benchmarks (not tests): ratios against a peer timed in the same process."""
