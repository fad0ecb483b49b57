"""The lab: simulated hosts as network namespaces on one underlay, each running an agent."""
