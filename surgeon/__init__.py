"""surgeon: declarative, reviewable graph surgery for ONNX models.

    import surgeon
    model = surgeon.load("model_foo.onnx")              # gs.Graph inside, weights lazy
    result = surgeon.apply("recipes/strip_fooop.yaml", model)
    surgeon.save(model, "clean.onnx")                    # validated, atomic
"""

from surgeon.errors import (
    ExportError,
    ModelLoadError,
    PassError,
    RecipeError,
    StepError,
    SurgeonError,
)
from surgeon.io.load import load
from surgeon.io.model import Model
from surgeon.io.save import save
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.custom_ops import declare_op
from surgeon.passes.registry import register_pass, registry
from surgeon.passes.result import PassResult
from surgeon.passes.runner import ApplyResult, StepReport, apply, run_pass
from surgeon.passes.select import Selector
from surgeon.progress import Progress
from surgeon.recipe import Recipe, Step, load_recipe, parse_recipe
from surgeon.verify import VerificationError, VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "ApplyResult", "Contract", "ExportError", "Model", "ModelLoadError", "PassError", "PassResult", "Progress",
    "Recipe",
    "RecipeError", "Selector", "Step", "StepError", "StepReport", "SurgeonError", "__version__", "apply",
    "declare_op",
    "load", "load_recipe", "parse_recipe", "register_pass", "registry", "run_pass", "save",
    "VerificationError", "VerifyReport", "verified_by", "verify",
]
