from exo2ego.cli import main

raise SystemExit(main())
