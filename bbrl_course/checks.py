"""Helpers for the notebooks' test cells: messages in the student's terms.

A test cell calls the student's function inside ``checking(name)``: a stub that
is not written yet, or an exception, becomes an ``AssertionError`` that names
the function and says what to do, instead of a bare traceback.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

__all__ = ["checking", "shape_of", "filled_linear", "tiny_config", "UpdateCounter"]


@contextlib.contextmanager
def checking(name: str):
    """Runs a call to the student's function ``name``, with a clear message on failure."""
    try:
        yield
    except NotImplementedError:
        raise AssertionError(
            f"{name} is not written yet: replace `raise NotImplementedError()` in its body with your code."
        ) from None
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(f"{name} raised {type(error).__name__}: {error}") from error


def shape_of(value) -> str:
    """The shape of a tensor as a student reads it: (64, 64), or () for a scalar."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return f"a {type(value).__name__}, not a tensor"


def filled_linear(value: float, in_features: int = 2, out_features: int = 1) -> nn.Linear:
    """A small linear layer whose parameters all equal ``value`` (to test updates by hand)."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(value)
    return layer


def tiny_config(params, **algorithm):
    """The notebook's parameters shrunk to a few hundred steps and tiny networks.

    Test cells use it to build an algorithm quickly; ``algorithm`` overrides
    entries of ``params["algorithm"]``.
    """
    import copy

    from .config import make_config

    params = copy.deepcopy(dict(params))
    params["plot_agents"] = False
    params["verbose"] = False
    params["base_dir"] = f"checks/{params.get('base_dir', 'run')}"
    params["algorithm"] = dict(params["algorithm"])
    params["algorithm"].update(
        max_steps=320,
        learning_starts=64,
        batch_size=16,
        eval_interval=100_000,
        nb_evals=1,
        architecture={"actor_hidden_size": [8], "critic_hidden_size": [8]},
    )
    params["algorithm"].update(algorithm)
    return make_config(params)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: nn.Module, snapshot: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, s) for p, s in zip(module.parameters(), snapshot))


class UpdateCounter:
    """Counts, during training, the steps of the optimizers and the moves of the targets.

    Installed on an algorithm before training: it wraps the optimizers' ``step``
    and, at each critic step, checks which target networks moved since the
    previous one, whatever code moved them.
    """

    def __init__(self, algo, targets: dict[str, nn.Module]):
        self.counts = {"critic": 0, "actor": 0, **{name: 0 for name in targets}}
        self.targets = targets
        self.snapshots = {name: _snapshot(net) for name, net in targets.items()}
        self._wrap(algo.critic_optimizer, "critic", before=self._check_targets)
        self._wrap(algo.actor_optimizer, "actor")

    def _wrap(self, optimizer, key, before=None):
        step = optimizer.step

        def counted_step(*args, **kwargs):
            if before is not None:
                before()
            self.counts[key] += 1
            return step(*args, **kwargs)

        optimizer.step = counted_step

    def _check_targets(self):
        for name, net in self.targets.items():
            if _changed(net, self.snapshots[name]):
                self.counts[name] += 1
                self.snapshots[name] = _snapshot(net)

    def finish(self) -> dict[str, int]:
        """The counts, once training is over."""
        self._check_targets()
        return dict(self.counts)
