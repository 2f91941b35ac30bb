from multitask_bert.cli import main

raise SystemExit(main())
