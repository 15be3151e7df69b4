"""The admin server on :9990: metrics, Prometheus, the delegator and the dashboard."""
