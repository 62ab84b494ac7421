from melvin_trio.cli import main

raise SystemExit(main())
