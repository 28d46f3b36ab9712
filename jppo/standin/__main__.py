"""``python -m jppo.standin --port P``: a Unity player stand-in (see ``jppo.standin.server``)."""
import sys

from jppo.standin.server import main

sys.exit(main())
