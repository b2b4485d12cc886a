"""``pgd``: the projected-gradient maximum-damage attack of 000 (Eq. 4) and 001 (Eq. 5).

A shorthand for :func:`~vaerob_jax.attacks.make_attack` with a hard ball:
max_δ objective(x, δ) s.t. ‖δ‖ ≤ ε, x + δ in the pixel box, signed-gradient (or Adam) steps
of 2.5·ε/steps by default, projected after every step, best iterate kept.
"""

from __future__ import annotations

from vaerob_jax.attacks.constraints import Box
from vaerob_jax.attacks.engine import Attack, Objective, StepSize, make_attack
from vaerob_jax.attacks.threats import ball

__all__ = ["PGD_RULES", "pgd"]

PGD_RULES = ("sign", "adam", "apgd")


def pgd(
    objective: Objective,
    norm: str = "linf",
    steps: int = 100,
    step_size: StepSize = None,
    rule: str = "sign",
    restarts: int = 1,
    box: Box = (0.0, 1.0),
    *,
    constraint: str = "project",
    image_shape: tuple[int, ...] | None = None,
    schedule: str = "constant",
    start: str = "random",
    first_restart: int = 0,
) -> Attack:
    """Builds a projected-gradient maximum-damage attack (Eq. 4 of 000; Eq. 5 of 001).

    Args:
      objective: ``(params, inputs, delta, key) -> scalar`` to maximise (e.g.
        :func:`latent_damage`).
      norm: 'linf' (000's threat model) or 'l2' (001/003's).
      steps: number of gradient steps.
      step_size: None (default) for 2.5·ε/steps (2ε, the initial step, for 'apgd'; relative
        to ε, so an array expression); a float for an absolute step; or a callable
        ``eps -> step``.
      rule: 'sign' (signed/normalised-gradient PGD), 'adam' (000's reference optimiser) or
        'apgd' (sign steps with Auto-PGD's momentum and step-size halving, restarting from
        the best point; Croce & Hein 2020).
      restarts: random starts per example; the best final damage is kept (vmapped, argmax).
      box: valid pixel range of x + δ, or None.
      constraint: 'project' (default, exact projection onto ball ∩ box) or 'rescale' (000's
        reference code: ‖δ‖ = ε exactly after every step, no pixel clipping).
      image_shape: expected (H, W, C), for input validation; taken from the objective
        (``objective.image_shape``, set by this package's objectives) when omitted.
      schedule: 'constant' or 'cosine' step sizes over the steps
        (:func:`~vaerob_jax.attacks.make_attack`).
      start: 'random' (uniform in the ball) or 'ods' (output-diversified starts; see
        :func:`~vaerob_jax.attacks.make_attack`).
      first_restart: index of the first restart's keys (restarts R, R+1, ... of a key, to be
        combined with an R-restart attack by :func:`~vaerob_jax.attacks.best_of`).

    Returns:
      An :class:`~vaerob_jax.attacks.Attack`; ``attack.run(params, inputs, eps, key)``
      attacks one example and returns an :class:`~vaerob_jax.attacks.AttackResult`.

    Example:
      >>> attack = pgd(latent_damage(model), norm="linf", steps=40)
      >>> res = attack.run(params, {"x": x}, jnp.float32(0.05), jax.random.key(0))
      >>> res.delta, res.value, res.improved
    """
    if rule not in PGD_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {PGD_RULES}")
    return make_attack(
        objective,
        ball(norm, box, constraint),
        rule,
        steps,
        step_size,
        restarts,
        image_shape=image_shape,
        schedule=schedule,
        start=start,
        first_restart=first_restart,
    )
