import sys

from kernel_hub.cli import main

sys.exit(main())
