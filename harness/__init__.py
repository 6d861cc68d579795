"""Sanity checks for saliency maps: a benchmarking harness (Adebayo et al., NeurIPS 2018 and successors)."""
import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the harness's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
