"""The suite's shared harness lives in ``tests/support/`` (see its ``__init__``).

This file only loads the fixtures plugin; helpers are imported from the
package (``from support.waiting import TIMEOUT, wait_until``), never from here.
"""

pytest_plugins = ["support.fixtures"]
