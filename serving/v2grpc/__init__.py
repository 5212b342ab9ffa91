"""KServe V2 gRPC (``inference.GRPCInferenceService``): the .proto and the Python code grpcio-tools generates from it.

Regenerate with ``python scripts/gen_v2grpc.py``; tests/serving/test_v2grpc_code.py checks the committed code.
"""
