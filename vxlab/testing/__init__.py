"""Test support, kept apart from the runtime: `fakekernel` (the agent's kernel in memory)
and `fuzz` (hypothesis properties of every RPC and both parsers; needs the test extra).

No runtime module imports this package (an import-linter contract in pyproject.toml);
the one exception is the `vxlab fuzz` verb, which imports `fuzz` when it runs.
"""
