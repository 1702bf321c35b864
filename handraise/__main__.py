import sys

from handraise.cli import main

sys.exit(main())
