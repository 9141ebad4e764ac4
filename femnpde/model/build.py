"""Models from a validated ``[network]`` configuration section.

``kind`` selects the model: ``"shallow"`` (default; the paper's
:class:`~femnpde.model.network.ShallowNetwork`: ``neurons``, ``beta``,
``activation``, ``seed``), ``"mlp"`` (:class:`~femnpde.model.mlp.MLP`:
``hidden``, ``activation``, ``init``, ``output_scale``, ``beta``, ``seed``)
or ``"jax"`` (:class:`~femnpde.model.jax_model.JaxModel` from
``factory = "package.module:function"``, called as
``function(input_dim=d, n_outputs=m, seed=seed, **options)``).  ``outputs``
(default 1) is the number of network-fed coefficients ``g[0], g[1], ...``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from femnpde import defaults as D
from femnpde.model.base import Model

__all__ = ["MODEL_KINDS", "build_model", "import_object"]

MODEL_KINDS: tuple[str, ...] = ("shallow", "mlp", "jax")


def import_object(spec: str, key: str) -> Any:
    """Import ``package.module:attr[.attr]`` (the rule of ``pde.residual`` and ``network.factory``).

    Args:
        spec: ``"package.module:name"``.
        key: The configuration key, for error messages.

    Raises:
        ImportError: The module cannot be imported or lacks the attribute
            (the message names ``key``, the module and the attribute).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ImportError(f"{key} = {spec!r} is not of the form 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise ImportError(f"{key} = {spec!r}: importing module {module_name!r} failed: {err}") from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{key} = {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_model(ncfg: Mapping[str, Any], input_dim: int) -> Model:
    """The model of a validated ``[network]`` section.

    Args:
        ncfg: The section (``kind`` defaults to ``"shallow"``).
        input_dim: The mesh's geometric dimension.

    Raises:
        ValueError: A bad value, or a JAX factory that fails or returns something else than ``(apply, params)``.
        ImportError: ``factory`` cannot be imported.
        ModuleNotFoundError: ``kind = "jax"`` without JAX installed (names the extra ``femnpde[jax]``).
    """
    kind = ncfg.get("kind", "shallow")
    m = int(ncfg.get("outputs", D.NETWORK_OUTPUTS))
    seed = ncfg.get("seed", D.NETWORK_SEED)
    if kind == "shallow":
        from femnpde.model.network import ShallowNetwork

        if m != 1:
            raise ValueError(f"network.outputs = {m}: kind 'shallow' has one output; use kind 'mlp' or 'jax'")
        return ShallowNetwork(
            ncfg.get("neurons", D.NETWORK_NEURONS), input_dim, beta=ncfg.get("beta", D.NETWORK_BETA),
            activation=ncfg.get("activation", D.NETWORK_ACTIVATION), seed=seed,
        )
    if kind == "mlp":
        from femnpde.model.mlp import MLP

        return MLP(
            input_dim, list(ncfg["hidden"]), n_outputs=m, activation=ncfg.get("activation", D.NETWORK_ACTIVATION),
            init=ncfg.get("init", D.MLP_INIT), output_scale=ncfg.get("output_scale", D.MLP_OUTPUT_SCALE),
            beta=ncfg.get("beta", D.NETWORK_BETA), seed=seed,
        )
    if kind == "jax":
        from femnpde.model.jax_model import JaxModel, import_jax

        import_jax()  # the clear error naming the extra before anything else
        spec = ncfg["factory"]
        factory: Callable[..., Any] = import_object(spec, "network.factory")
        if not callable(factory):
            raise ValueError(f"network.factory = {spec!r} is not callable; it must name a model factory")
        options = dict(ncfg.get("options", {}))
        try:
            made = factory(input_dim=input_dim, n_outputs=m, seed=seed, **options)
        except Exception as err:
            raise ValueError(
                f"network.factory = {spec!r}: calling it with input_dim={input_dim}, n_outputs={m}, seed={seed}, "
                f"options {options} failed: {err}"
            ) from err
        if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
            raise ValueError(
                f"network.factory = {spec!r} returned {type(made).__name__}; expected a pair (apply, params) "
                "with apply(params, tx) -> values"
            )
        return JaxModel(made[0], made[1], input_dim, m)
    raise ValueError(f"network.kind = {kind!r} is not valid; valid kinds: {', '.join(MODEL_KINDS)}")
