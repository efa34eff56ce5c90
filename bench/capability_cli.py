"""Run ``brainjepa`` with the forecasting group registered (until the integrator adds it to cli.GROUPS).

Usage: python bench/capability_cli.py forecast ... | reconstruct ...
"""

import sys

import brainjepa.cli as cli

if "forecasting" not in cli.GROUPS:
    cli.GROUPS = (*cli.GROUPS, "forecasting")

if __name__ == "__main__":
    sys.exit(cli.main())
