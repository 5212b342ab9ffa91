"""Plain ML code of the lifecycle steps: readers, validation, datasets, features, models, training, ONNX export."""
