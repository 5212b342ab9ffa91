"""KServe Python ModelServer peer: a custom kserve.Model wrapping onnxruntime, REST and gRPC.

Usage: kserve_server.py MODEL HTTP_PORT GRPC_PORT
"""

import sys

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {self.input_name: x})
        outputs = []
        binary = payload.use_binary_outputs  # raw gRPC inputs or REST binary_data_output: answer in kind
        for n, v in zip(names, values, strict=True):
            out = InferOutput(name=n, shape=list(v.shape), datatype="FP32")
            out.set_data_from_numpy(v, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "0", model_name=self.name, infer_outputs=outputs, use_binary_outputs=binary
        )


if __name__ == "__main__":
    path, port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.argv = sys.argv[:1]
    ModelServer(http_port=port, grpc_port=grpc_port, workers=1, enable_grpc=True, enable_latency_logging=False).start(
        [OnnxModel("digits", path)]
    )
