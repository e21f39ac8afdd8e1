import sys

from stemscribe_client.cli import main

sys.exit(main())
