"""The real local rig: D601 and the master server as real systemd hosts (see ``rig.py``).

API (others code against exactly this)::

    from tests.rig import Rig, Host, StepResult
    rig = Rig.up()                  # or the session fixture ``rig`` (tests/integration/conftest.py)
    rig.d601 / rig.master           # Host: name, address, port, user (the operator "ubuntu"), private_key, pid, docker_host,
                                    #       sh(), ssh(), run_step(), netns_argv(), write_file()
    rig.registry                    # "127.0.0.1:5000" (D601 loopback only)
    rig.d601_from_master            # "ubuntu@d601.rig": what the master (as ubuntu) ssh-es to
    rig.publish_test_image(id, commit, variant=..., pad_bytes=...) -> {"digest", "imageId", "ref"}
    rig.stack_config(env, {id: commit}) -> raw dict for artifact_cd.config.parse_stack_config
    with rig.fresh_host("h1") as h: ...
    rig.host("d601.rig")            # a Host by name or stack-config address
    rig.execute(call)               # executor for tests.engine.run_program (real SSH)
    rig.ensure_ready()              # back to baseline after a fault test (units, registry files, /v2/)
    rig.down()

Humans: ``python -m tests.rig up --dir DIR`` / ``python -m tests.rig down --dir DIR``.
"""

from .host import Host, RigError, StepResult
from .rig import Rig, install_registry, stale_rig_dirs, teardown

__all__ = ["Host", "Rig", "RigError", "StepResult", "install_registry", "stale_rig_dirs", "teardown"]
