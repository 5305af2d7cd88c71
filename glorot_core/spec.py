"""ExperimentSpec: what to build, on which data, how to train it and what to measure.

The README's spec section lists every field; docs/architecture.md says where each part is used.

Validation is pydantic v2, so every error carries its field path (``model.hidden.2``). Limits that
depend on the installation (the parameter-count cap) come from the validation context
(``validate_spec(data, max_parameters=...)``) or the ``GLOROT_MAX_PARAMETERS`` environment variable.

Choices the paper leaves open (docs/science.md §4) are parameters here, with the defaults
documented on each field.

Numbers are strict: ``"200"`` or ``true`` where a number belongs are refused, not coerced. As in JSON
Schema, ``200.0`` is an integer (``200.5`` is not) and a JSON integer is a valid float. Every number
is bounded by what it meets downstream: seeds by ``torch.Generator.manual_seed`` (an unsigned 64-bit
word), sizes by what a job can allocate, floats are finite — so a spec that validates never fails
later on an overflow.
"""

from __future__ import annotations

import itertools
import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from glorot_core.activations import ACTIVATION_NAMES
from glorot_core.uploads.architecture import Architecture
from glorot_core.uploads.metadata import InputSpec
from glorot_core.uploads.probe_data import UPLOAD_ID_PATTERN, NpzData, RandomData, TokenData

MAX_WIDTH = 65_536
DEFAULT_MAX_PARAMETERS = 100_000_000
MAX_STEPS = 100_000_000
MAX_SEED = 2**64 - 1
"""``torch.Generator.manual_seed`` takes an unsigned 64-bit word (above it: "Overflow when unpacking long
long"); the data generators mix their seed as a 64-bit word too, so larger seeds would only alias."""
MAX_INPUT_MAGNITUDE = 1e6
MAX_SNAPSHOTS = 2_000
"""A snapshot of the paper's 5×1000 network is ≈50 KB of JSON; 2,000 keep a report near 100 MB. The
paper's own curves need far fewer (5·10⁶ updates at one snapshot per 20,000-update epoch: 251)."""

def _not_text_or_bool(value: Any) -> Any:
    """Refuse what lax mode would coerce into a number (``"200"``, ``true``); JSON Schema's integers
    (``200`` and ``200.0``) go on to pydantic's int validation, which refuses ``200.5``."""
    if isinstance(value, str | bytes | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not {kind}",
                                  {"kind": "a boolean" if isinstance(value, bool) else "a string"})
    return value


NotTextOrBool = BeforeValidator(_not_text_or_bool)
"""Last in an integer's ``Annotated[int, Field(ge=…, le=…), NotTextOrBool]``: placed after the bounds it
leaves them native integer constraints (exact comparisons, ``minimum``/``maximum`` in the JSON schema)."""
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite float; JSON integers are accepted (strict mode still takes an int for a float), strings and
booleans are not."""
Bool = Annotated[bool, Strict()]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), NotTextOrBool]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH), NotTextOrBool]
InitName = Literal["standard", "normalized", "he", "orthogonal", "lsuv"]
DatasetName = Literal["shapeset3x2", "mnist", "cifar10", "idx", "npz"]
"""idx / npz: the user's own files; their input_dim and num_classes are read from the files and checked
when the run opens them (the spec cannot know them)."""
DATASET_SHAPES: dict[str, tuple[int, int]] = {"shapeset3x2": (1024, 9), "mnist": (784, 10), "cifar10": (3072, 10)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The network: an MLP ``input_dim → hidden[0] → … → hidden[-1] → num_classes`` (softmax output)."""

    source: Literal["mlp"] = "mlp"
    input_dim: Width = 1024
    hidden: list[Width] = Field(default_factory=lambda: [1000] * 5, min_length=1, max_length=64)
    num_classes: Annotated[int, Field(ge=2, le=MAX_WIDTH), NotTextOrBool] = 9
    activation: str = Field("tanh", description=f"one of {', '.join(ACTIVATION_NAMES)}",
                            json_schema_extra={"enum": list(ACTIVATION_NAMES)})
    init: InitName = Field("standard", description="standard (eq. 1), normalized (eq. 16), he, orthogonal, lsuv")
    init_gain: Float | None = Field(
        None, gt=0, le=100, description="orthogonal/lsuv gain; default 1 (orthogonal) — ignored by the others"
    )
    bias_init: Float = Field(0.0, ge=-100, le=100, description="biases start at this constant (paper: 0)")

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        if v not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {v!r}; expected one of: {', '.join(ACTIVATION_NAMES)}")
        return v

    @property
    def widths(self) -> list[int]:
        """All layer widths, input and output included."""
        return [self.input_dim, *self.hidden, self.num_classes]

    @property
    def parameter_count(self) -> int:
        w = self.widths
        return sum(a * b + b for a, b in itertools.pairwise(w))


class UploadedModelSpec(_Strict):
    """A model uploaded to the service (``POST /v1/models``), named by its id (docs/uploads.md)."""

    source: Literal["uploaded"]
    model_id: str = Field(min_length=1, max_length=64, pattern=UPLOAD_ID_PATTERN)


class FileModelSpec(_Strict):
    """A model file on this machine, for offline runs (``glorot run``); the service refuses it.

    ``format``, ``architecture`` and ``input`` mean what they mean in an upload's metadata."""

    source: Literal["file"]
    path: str = Field(min_length=1, max_length=4096)
    format: Literal["safetensors", "state_dict", "exported"]
    architecture: Architecture | None = None
    input: InputSpec | None = None

    @model_validator(mode="after")
    def _described(self) -> FileModelSpec:
        from glorot_core.uploads.errors import UploadRefused
        from glorot_core.uploads.metadata import parse_metadata

        try:
            parse_metadata(self.metadata())
        except UploadRefused as e:
            raise PydanticCustomError("model_file", "{detail}", {"detail": e.detail}) from None
        return self

    def metadata(self) -> dict[str, Any]:
        """The file's description in the form of an upload's ``metadata``."""
        return self.model_dump(mode="json", include={"format", "architecture", "input"}, exclude_none=True)


def _model_source(v: Any) -> str | None:
    """The model union's tag: ``source``, the built-in MLP when absent (every spec before uploads)."""
    source = v.get("source", "mlp") if isinstance(v, dict) else getattr(v, "source", None)
    return source if isinstance(source, str) else None


AnyModelSpec = Annotated[
    Annotated[ModelSpec, Tag("mlp")] | Annotated[UploadedModelSpec, Tag("uploaded")]
    | Annotated[FileModelSpec, Tag("file")],
    Discriminator(_model_source),
]
"""``model``: the built-in MLP (``source`` "mlp", the default), an uploaded model or a local model file."""


def _data_kind(v: Any) -> str | None:
    """The data union's tag: probe data for uploaded models (random, tokens, an uploaded .npz) or a data set."""
    if isinstance(v, dict):
        dataset, uploaded = v.get("dataset"), "upload_id" in v
    else:
        dataset, uploaded = getattr(v, "dataset", None), isinstance(v, NpzData)
    if dataset in ("random", "tokens"):
        return str(dataset)
    return "npz_upload" if dataset == "npz" and uploaded else "data_set"


InputBound = Annotated[Float, Field(ge=-MAX_INPUT_MAGNITUDE, le=MAX_INPUT_MAGNITUDE)]


class DataSpec(_Strict):
    """The data. Shapeset-3x2 is generated online (infinite); MNIST / CIFAR-10 load from a local folder."""

    dataset: DatasetName = "shapeset3x2"
    input_range: tuple[InputBound, InputBound] = Field((-1.0, 1.0), description="pixels /255 mapped to this range")
    seed: Seed = Field(0, description="seed of the training stream; test and monitor sets use their own")
    root: str | None = Field(None, description="folder with MNIST IDX or CIFAR-10 binary files; for idx, a folder "
                             "of MNIST-named IDX files of any image size; for npz, an .npz file of arrays x, y "
                             "(and optionally x_test, y_test) or a folder holding exactly one")
    test_examples: Annotated[int, Field(ge=1, le=100_000), NotTextOrBool] = Field(
        2000, description="size of the fixed test set used for test_error (not stated in the paper)"
    )

    @field_validator("input_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise PydanticCustomError("range_order", "input_range must be (low, high) with low < high")
        return v


class TrainSpec(_Strict):
    """Plain SGD on mini-batches (paper §2.3: batch 10, no momentum). ``steps = 0``: diagnose at init."""

    steps: Annotated[int, Field(ge=0, le=MAX_STEPS), NotTextOrBool] = 0
    batch_size: Annotated[int, Field(ge=1, le=65_536), NotTextOrBool] = 10
    optimizer: Literal["sgd"] = "sgd"
    lr: Float = Field(0.01, gt=0, le=1e3)
    momentum: Float = Field(0.0, ge=0, lt=1)
    loss: Literal["cross_entropy", "quadratic"] = Field(
        "cross_entropy", description="−log P(y|x) (paper) or the quadratic cost of §4.1 / Fig 5"
    )
    seed: Seed = Field(0, description="seed of the initial weights")


class JacobianSpec(_Strict):
    """Per-layer Jacobians J^i = ∂z^{i+1}/∂z^i = diag(f'(s)) Wᵀ and the end-to-end one (input → last hidden;
    for an uploaded model: per block between consecutive probe points, and input → logits)."""

    mode: Literal["exact", "estimate", "auto", "off"] = Field(
        "exact", description="exact: every singular value; estimate: matrix-free Lanczos / Hutchinson / SLQ with "
        "error bounds; auto: exact where a Jacobian's smaller side is at most exact_max_dim, estimated otherwise "
        "(the default for uploaded models; the built-in MLP's exact path is cheap at any width, so auto is exact "
        "there); off")
    examples: Annotated[int, Field(ge=1, le=4096), NotTextOrBool] = 16
    end_to_end: Bool = True
    estimate_iterations: Annotated[int, Field(ge=2, le=512), NotTextOrBool] = Field(
        32, description="Lanczos steps per example in estimate mode"
    )
    every_snapshots: Annotated[int, Field(ge=1, le=MAX_STEPS), NotTextOrBool] = Field(
        1, description="compute the spectra at snapshot 0, every this many snapshots after it, and the last: the "
        "Jacobian is the expensive instrument, so it may run less often than the cheap statistics")
    precision: Literal["float32", "float64"] = Field(
        "float32",
        description="exact mode: dtype of the Gram matrices and eigen-solves: float32 resolves singular values "
        "down to ≈1e-3·σ_max (mean σ within 1e-5 of float64), float64 down to ≈1e-7·σ_max at ≈1.4× the cost on "
        "the CPU (more on GPUs with slow float64); estimate mode's Lanczos always runs in float64",
    )
    exact_max_dim: Annotated[int, Field(ge=1, le=65_536), NotTextOrBool] = Field(
        1024, description="mode auto (uploaded models): a Jacobian whose smaller side (per example) is at most this "
        "is formed and solved exactly (that many Jacobian-vector products); a larger one is estimated matrix-free")


class CostSurfaceSpec(_Strict):
    """Fig 5: the cross-entropy and the quadratic cost on a grid of two weights (W1 into the last hidden
    layer, W2 of the output layer; glorot_core/cost_surface.py), computed once at the end of the run on
    the monitor examples and stored as the report's ``cost_surface`` section."""

    enabled: Bool = False
    points: Annotated[int, Field(ge=3, le=101), NotTextOrBool] = Field(41, description="grid points per weight")
    extent: Float = Field(10.0, gt=0, le=1000, description="each weight varies over its value at the end of the "
                          "run ± extent (10: wide enough for tanh and the softmax to saturate, where the "
                          "quadratic cost's plateaus are)")


class CurvatureSpec(_Strict):
    """λ_max of the Hessian of the monitor cost by Lanczos on Hessian-vector products, and the learning-rate
    bound 2/λ_max it implies (glorot_core.instruments.curvature; docs/science.md)."""

    mode: Literal["auto", "init", "init_and_last", "off"] = Field(
        "auto", description="init: at snapshot 0 only; init_and_last: also at the last snapshot; off: never; auto "
        "(default): as init for uploaded models and for built-in networks of at most 10^6 parameters (one "
        "λ_max costs ≈ iterations × 4 passes over the examples), off above. Never at the snapshots in between")
    iterations: Annotated[int, Field(ge=2, le=200), NotTextOrBool] = Field(
        16, description="Lanczos steps (each one Hessian-vector product: ≈3 passes over the examples)")
    examples: Annotated[int, Field(ge=1, le=100_000), NotTextOrBool] = Field(
        128, description="the first this many monitor examples define the cost whose Hessian is measured")
    seed: Seed = Field(0, description="seed of the Lanczos start vector")


class DiagnosticsSpec(_Strict):
    """What is measured, how often, on how many fixed monitor examples (paper: 300 test examples)."""

    every: Annotated[int, Field(ge=1, le=MAX_STEPS), NotTextOrBool] = Field(
        1000, description="a snapshot every this many steps")
    monitor_examples: Annotated[int, Field(ge=1, le=100_000), NotTextOrBool] = 300
    histogram_bins: Annotated[int, Field(ge=4, le=1000), NotTextOrBool] = Field(
        200, description="bins of each fixed-edge histogram (tanh: width 0.01 over [-1, 1], resolving Fig 6's "
        "narrowest peak, layer 5 under the standard init, within 3 %; 50 bins gave 31 % too low)",
    )
    gradient_basis: Literal["mean_cost", "per_example"] = Field(
        "mean_cost", description="weight gradients: of the mean cost over the monitor examples, or every "
        "example's own (the paper's Figs 8-9; ≈√n wider): moments exact, histogram of a fixed sample of "
        "2^20 entries. ∂C/∂s and the theory rows are per example either way",
    )
    jacobian: JacobianSpec = Field(default_factory=JacobianSpec)
    curvature: CurvatureSpec = Field(default_factory=CurvatureSpec)
    cost_surface: CostSurfaceSpec = Field(default_factory=CostSurfaceSpec)


DeviceName = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
AnyDataSpec = Annotated[
    Annotated[DataSpec, Tag("data_set")] | Annotated[RandomData, Tag("random")] | Annotated[TokenData, Tag("tokens")]
    | Annotated[NpzData, Tag("npz_upload")],
    Discriminator(_data_kind),
]
"""``data``: a data set (built-in or the user's files), or probe data for an uploaded model."""


class ExperimentSpec(_Strict):
    """A whole experiment: model, data, training and diagnostics (the README's spec section)."""

    schema_version: Literal[1] = 1
    name: str = Field("experiment", min_length=1, max_length=200)
    model: AnyModelSpec = Field(default_factory=ModelSpec)
    data: AnyDataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    device: DeviceName = "auto"

    @model_validator(mode="wrap")
    @classmethod
    def _untagged_paths(cls, data: Any, handler: Any) -> Any:
        """Error paths without the unions' tags: ``model.hidden.2``, not ``model.mlp.hidden.2``."""
        try:
            return handler(data)
        except ValidationError as e:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=PydanticCustomError(err["type"], _literal(err["msg"])), loc=_untag(err["loc"]),
                                 input=err.get("input"))
                for err in e.errors()]) from None

    @model_validator(mode="before")
    @classmethod
    def _no_jacobian_by_default(cls, data: Any) -> Any:
        """For an uploaded or local model, ``diagnostics.jacobian.mode`` defaults to "auto" (exact where small
        enough, matrix-free otherwise; so the resolved spec says what runs, and validates again as it is)."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
                and data["model"].get("source") in ("uploaded", "file")):
            return data
        diag = data.get("diagnostics", {})
        jac = diag.get("jacobian", {}) if isinstance(diag, dict) else None
        if not isinstance(jac, dict) or "mode" in jac:
            return data
        return {**data, "diagnostics": {**diag, "jacobian": {**jac, "mode": "auto"}}}

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, v: Any) -> Any:
        """A Literal cannot be strict: refuse ``true`` here (it compares equal to 1)."""
        if isinstance(v, str | bool):
            raise ValueError("schema_version must be the integer 1")
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ExperimentSpec:
        errors: list[InitErrorDetails] = []
        if not isinstance(self.model, ModelSpec):
            errors = _uploaded_model_errors(self)
        elif not isinstance(self.data, DataSpec):
            errors.append(_error("probe_data_needs_uploaded_model", ("data", "dataset"), self.data.dataset,
                                 f"data set {self.data.dataset!r} is probe data for uploaded models; the built-in "
                                 "MLP needs a data set with labels"))
        if errors or not isinstance(self.model, ModelSpec) or not isinstance(self.data, DataSpec):
            if errors:
                raise ValidationError.from_exception_data(type(self).__name__, errors)
            return self
        cap = _parameter_cap(info.context)
        count = self.model.parameter_count
        if count > cap:
            errors.append(_error("parameter_cap", ("model", "hidden"), self.model.hidden,
                                 f"the model has {count:,} parameters, above the cap of {cap:,}"))
        errors.extend(_snapshot_errors(self))
        in_dim, classes = DATASET_SHAPES.get(self.data.dataset, (self.model.input_dim, self.model.num_classes))
        if self.model.input_dim != in_dim:
            errors.append(_error("dataset_mismatch", ("model", "input_dim"), self.model.input_dim,
                                 f"{self.data.dataset} has {in_dim} inputs"))
        if self.model.num_classes != classes:
            errors.append(_error("dataset_mismatch", ("model", "num_classes"), self.model.num_classes,
                                 f"{self.data.dataset} has {classes} classes"))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


_UNION_TAGS = {"model": frozenset({"mlp", "uploaded", "file"}),
               "data": frozenset({"data_set", "random", "tokens", "npz_upload"})}


def _untag(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without the tag pydantic inserts after a tagged union's field name."""
    if len(loc) >= 2 and loc[1] in _UNION_TAGS.get(str(loc[0]), ()):
        return (loc[0], *loc[2:])
    return loc


def _literal(message: str) -> str:
    """``message`` as a PydanticCustomError template that renders to itself."""
    return message.replace("{", "{{").replace("}", "}}")


def _snapshot_errors(spec: ExperimentSpec) -> list[InitErrorDetails]:
    """At most MAX_SNAPSHOTS snapshots (step 0, every ``diagnostics.every`` steps, the last)."""
    snapshots = spec.train.steps // spec.diagnostics.every + 1
    if snapshots <= MAX_SNAPSHOTS:
        return []
    return [_error("too_many_snapshots", ("diagnostics", "every"), spec.diagnostics.every,
                   f"{snapshots:,} snapshots for {spec.train.steps:,} steps; at most {MAX_SNAPSHOTS:,}: "
                   f"use every >= {-(-spec.train.steps // (MAX_SNAPSHOTS - 1)):,}")]


def _uploaded_model_errors(spec: ExperimentSpec) -> list[InitErrorDetails]:
    """An uploaded model is diagnosed where it stands, or fine-tuned for ``train.steps`` steps when its data
    have labels (docs/uploads.md): a data set, or an uploaded .npz with ``labels`` (checked when the job is
    submitted and when it runs); random inputs and token ids have none. Its Jacobians are computed per
    block (``glorot_core.uploads.jacobians``); their mode defaults to "auto"."""
    errors = []
    if spec.train.steps != 0 and isinstance(spec.data, RandomData | TokenData):
        errors.append(_error("fine_tuning_needs_labels", ("train", "steps"), spec.train.steps,
                             f"fine-tuning an uploaded model needs labels, and probe data {spec.data.dataset!r} "
                             "have none: set train.steps to 0, or use a data set or an uploaded .npz with "
                             "'labels'"))
    errors.extend(_snapshot_errors(spec))
    if spec.diagnostics.cost_surface.enabled:
        errors.append(_error("cost_surface_unavailable", ("diagnostics", "cost_surface", "enabled"), True,
                             "the cost surface (Fig 5) is computed for the built-in MLP only"))
    return errors


def _error(kind: str, loc: tuple[str, ...], value: Any, message: str) -> InitErrorDetails:
    """A field-level error raised from a cross-field check, so its path points at the field at fault."""
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _parameter_cap(context: Any) -> int:
    if isinstance(context, dict) and context.get("max_parameters") is not None:
        return int(context["max_parameters"])
    return int(os.environ.get("GLOROT_MAX_PARAMETERS", DEFAULT_MAX_PARAMETERS))


def validate_spec(data: Any, *, max_parameters: int | None = None) -> ExperimentSpec:
    """Validate a JSON-like object into an ExperimentSpec; raises ``pydantic.ValidationError``."""
    return ExperimentSpec.model_validate(data, context={"max_parameters": max_parameters})
