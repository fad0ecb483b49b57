"""The `vxlab` command line: typer verbs over vxlab.client (entry point: vxlab.cli.main:main).

One module per noun (network, host, container, controller); main.py holds the root
app and the shared helpers (client factory, error line, table/JSON output).
"""
