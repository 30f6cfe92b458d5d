import sys

from notify_relay.cli import main

sys.exit(main())
