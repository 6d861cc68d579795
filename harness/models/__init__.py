"""Model sources and the ModelUnderTest wrapper."""
from harness.models.sources import load_model
from harness.models.wrapper import Block, InputSpec, ModelUnderTest, ModelVariable

__all__ = ["Block", "InputSpec", "ModelUnderTest", "ModelVariable", "load_model"]
