"""Prefect flows and the `g2u` CLI over the g2u_tasks core."""
