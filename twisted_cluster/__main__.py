"""
C{python -m twisted_cluster}: the C{twisted-cluster} command.
"""

from .control.cli import main

if __name__ == "__main__":
    main()
