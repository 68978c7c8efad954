from rtseg.cli import main

raise SystemExit(main())
