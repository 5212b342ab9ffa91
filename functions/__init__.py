"""The machine-learning lifecycle as functions: ingest, featurize, train, tune, register, deploy.

``functions.contract`` is the lifecycle's event contract and ``functions/lifecycle.yaml`` its default pipeline,
``functions.ml`` and ``functions.tuning`` the plain ML code the steps call, and ``functions.runtime``
the Knative-style runtime that hosts these steps and users' own functions (docs/architecture.md has the map).
"""
