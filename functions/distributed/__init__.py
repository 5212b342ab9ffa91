"""Data-parallel training with several workers per job (``train.workers``): PyTorch's elastic agent on this machine
(``local``), a Kubeflow Trainer TrainJob on Kubernetes (``cluster``), and the worker every rank runs (``worker``)."""
