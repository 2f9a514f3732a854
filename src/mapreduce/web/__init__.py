"""The master's status pages, JSON API and Prometheus metrics (the paper's section 4.8)."""
