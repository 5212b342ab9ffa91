"""A kubeconfig pointing at a local stand-in for the Kubernetes API server, for tests of what knflow sends it."""

from __future__ import annotations

from pathlib import Path


def kubeconfig(path: Path, port: int) -> Path:
    """Write a kubeconfig whose one cluster is ``http://127.0.0.1:port`` (bearer token ``t``); → its path."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    return path
