from asknlearn.cli import main

raise SystemExit(main())
