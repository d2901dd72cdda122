import sys

from bchw.cli import main

sys.exit(main())
