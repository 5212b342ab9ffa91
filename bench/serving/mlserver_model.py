"""Seldon MLServer peer: a custom MLModel wrapping onnxruntime (MLServer ships no ONNX runtime)."""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {self.input_name: x})
        outputs = [NumpyCodec.encode_output(n, v) for n, v in zip(names, values, strict=True)]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
