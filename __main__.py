"""unidesk-artifact-cd: the Pulumi program (``pulumi preview`` is the dry-run, ``pulumi up`` deploys).

Everything is in ``components/program.py``; the plan documents come from ``artifact_cd.plan``.
"""

from components.program import main

main()
