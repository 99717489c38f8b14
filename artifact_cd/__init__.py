"""Artifact CD core for the D601 artifact registry: pure, imports no Pulumi."""
