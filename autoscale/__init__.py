"""Demand-driven autoscaling: pure policies, cost model, traces and simulator; Ray Serve adapter."""
