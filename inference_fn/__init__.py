"""The DistilBERT question-answering Lambda function that capture-ext is demonstrated on.

Nothing is imported here: the handler lives in :mod:`inference_fn.app`, and torch/transformers
load only when a model does.
"""
