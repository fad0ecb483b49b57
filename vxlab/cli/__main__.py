"""`python -m vxlab.cli`: the same as the `vxlab` command."""

from vxlab.cli.main import main

main()
