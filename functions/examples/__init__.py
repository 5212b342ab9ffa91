"""Example functions: the echo function in knflow's shape and in Knative's ``func`` Python shape."""
