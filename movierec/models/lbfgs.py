"""L-BFGS with a strong-Wolfe line search in numpy: ``torch.optim.LBFGS(line_search_fn="strong_wolfe")`` step
for step, for the fits that answering does without torch (a new user of the item-based rating RBM).

The same algorithm as torch's (itself after minFunc): the same directions, step lengths, bracketing and stopping
rules, so a convex problem ends at the same minimiser to rounding. Scalars are Python floats here where torch keeps
0-d tensors, the only difference. Give it float64: a float32 value stops changing (torch's "lack of progress" stop)
long before a flat problem's minimiser is reached, at a point that rounding decides.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""``x`` (n,) -> (value, gradient (n,) of ``x``'s dtype)."""


def minimize(  # noqa: PLR0913 -- torch.optim.LBFGS's settings, by the same names
    objective: Objective, x0: np.ndarray, *, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
    tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
) -> np.ndarray:
    """The ``x`` one ``torch.optim.LBFGS(...).step`` with ``line_search_fn="strong_wolfe"`` ends at, from
    ``x0``."""
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    x = np.array(x0)
    loss, grad = objective(x)
    evals = 1
    if float(np.abs(grad).max()) <= tolerance_grad:
        return x
    dirs: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    ro: list[float] = []
    h_diag = 1.0
    d = -grad
    t = 0.0
    prev_grad = grad
    for n_iter in range(1, max_iter + 1):
        if n_iter > 1:
            y = grad - prev_grad
            s = d * t
            ys = float(y @ s)
            if ys > 1e-10:
                if len(dirs) == history_size:
                    dirs.pop(0)
                    steps.pop(0)
                    ro.pop(0)
                dirs.append(y)
                steps.append(s)
                ro.append(1.0 / ys)
                h_diag = ys / float(y @ y)
            al = [0.0] * len(dirs)
            q = -grad
            for i in range(len(dirs) - 1, -1, -1):
                al[i] = float(steps[i] @ q) * ro[i]
                q = q - al[i] * dirs[i]
            r = q * h_diag
            for i in range(len(dirs)):
                be_i = float(dirs[i] @ r) * ro[i]
                r = r + (al[i] - be_i) * steps[i]
            d = r
        prev_grad, prev_loss = grad, loss
        t = min(1.0, 1.0 / float(np.abs(grad).sum())) * lr if n_iter == 1 else lr
        gtd = float(grad @ d)
        if gtd > -tolerance_change:
            break
        loss, grad, t, used = _strong_wolfe(objective, x, t, d, loss, grad, gtd, max_ls=max_eval - evals)
        x = x + t * d
        evals += used
        if n_iter == max_iter or evals >= max_eval or float(np.abs(grad).max()) <= tolerance_grad:
            break
        if float(np.abs(d * t).max()) <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
            break
    return x


def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: tuple[float, float] | None = None) -> float:
    """The minimiser of the cubic through two points with their slopes, within ``bounds``."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square < 0:
        return (lo + hi) / 2.0
    d2 = d2_square**0.5
    if x1 <= x2:
        at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(at, lo), hi)


def _strong_wolfe(  # noqa: C901, PLR0912, PLR0913, PLR0915 -- torch's line search, branch for branch
    objective: Objective, x: np.ndarray, t: float, d: np.ndarray, f: float, g: np.ndarray, gtd: float,
    c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25,
) -> tuple[float, np.ndarray, float, int]:
    """A step ``t`` along ``d`` from ``x`` meeting the strong Wolfe conditions: (value, gradient, t, evaluations)."""
    d_norm = float(np.abs(d).max())

    def at(step: float) -> tuple[float, np.ndarray, float]:
        value, grad = objective(x + step * d)
        return value, grad, float(grad @ d)

    f_new, g_new, gtd_new = at(t)
    evals = 1
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[float] = []
    bracket_f: list[float] = []
    bracket_g: list[np.ndarray] = []
    bracket_gtd: list[float] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new, gtd_new = at(t)
        evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]

    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new, gtd_new = at(t)
        evals += 1
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = t, f_new, g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals
