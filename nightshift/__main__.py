import sys

from nightshift.cli import main

sys.exit(main())
