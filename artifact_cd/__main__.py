from artifact_cd.cli import main

raise SystemExit(main())
