"""Config: the experiment's core sections and YAML loading. A leaf layer: it imports no implementation."""

from harness.config.endpoint import EndpointSpec
from harness.config.loading import deep_merge, set_dotted
from harness.config.sections import (DataSpec, Distribution, EvalSpec, LoraSpec, ModelSpec, OptimArgs, PricingSpec,
                                     ReportSpec, SearchSpec, TrackingSpec, TrainSpec)

__all__ = ["DataSpec", "Distribution", "EndpointSpec", "EvalSpec", "LoraSpec", "ModelSpec", "OptimArgs",
           "PricingSpec", "ReportSpec", "SearchSpec", "TrackingSpec", "TrainSpec", "deep_merge", "set_dotted"]
