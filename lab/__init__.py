"""The lab: the local D601 + master hosts as a part of the product, and the demo that uses them.

``./run lab up|down|status`` (``python -m lab``) keeps a local D601 and master server running in
the background: two real systemd hosts in their own namespaces with sshd, dockerd, the project's
registry unit (127.0.0.1:5000 on D601's loopback) and a containerd standing in for k3s, reached
only over SSH. ``./run demo`` (``python -m lab demo``) starts its own pair of hosts, publishes two
commits of a sample service, deploys them with the Pulumi program and tears everything down.

The hosts themselves are the test rig (``tests/rig``): this package wraps it and does not copy it.
The demo also uses the in-process Pulumi engine of the tests (``tests/engine.py``), since no
Pulumi CLI is needed to watch a deploy happen. Both are part of this checkout, which is the product.
Nothing here is imported by ``artifact_cd`` or ``components``.
"""
