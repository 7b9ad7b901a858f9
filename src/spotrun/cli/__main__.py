import sys

from spotrun.cli.main import main

sys.exit(main())
