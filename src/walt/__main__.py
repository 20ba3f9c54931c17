from walt.cli import main

raise SystemExit(main())
