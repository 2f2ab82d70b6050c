"""Deployment assets as code: the shipped deploy/ folder, the local Prometheus and Alertmanager stack, and the
Grafana dashboards."""
