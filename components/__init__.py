"""Pulumi components of unidesk-artifact-cd: they translate ``artifact_cd.plan`` steps into resources.

- :mod:`components.registry_host`    ``unidesk:registry:ArtifactRegistryHost``
- :mod:`components.compose_consumer` ``unidesk:cd:ComposeServiceConsumer`` (master-server / D601 Compose)
- :mod:`components.k3s_consumer`     ``unidesk:cd:K3sServiceConsumer`` (native k3s on D601)
- :mod:`components.program`          the program ``__main__.py`` runs
- :mod:`components.preview`          previews ``__main__.py`` in-process under Pulumi mocks (--resources)

Nothing is imported here, so ``import components.<module>`` loads only what it needs.
"""
