"""The generic resource pool (pool2 in Trio): ResourcePool, Cluster, Backoff."""
