from clawlan.cli import main

raise SystemExit(main())
