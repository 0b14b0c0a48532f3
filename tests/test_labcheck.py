"""gradlab.labcheck: the helpers lab test cells import."""
import pytest
import torch

import gradlab
from gradlab import backprop
from gradlab.labcheck import (
    TASK_REFERENCES,
    ReferenceDisabledError,
    check_close,
    disabled_for,
    reference_disabled,
    resolve,
    substituted,
)


def test_check_close_passes_close_tensors_and_fails_the_others(capsys):
    check_close("same", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-8]))
    assert "expected" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="largest difference"):
        check_close("off", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]))
    with pytest.raises(AssertionError, match="shape"):
        check_close("shape", torch.zeros(2), torch.zeros(3))
    with pytest.raises(AssertionError, match="expected a tensor"):
        check_close("type", [1.0], torch.zeros(1))


def test_a_public_function_is_blocked_however_it_is_reached():
    from gradlab.autograd import requ as taken_before  # a reference kept under another name

    x = torch.tensor([-1.0, 2.0])
    with reference_disabled("gradlab.requ"):
        for call in (lambda: gradlab.requ(x), lambda: gradlab.autograd.requ(x), lambda: taken_before(x)):
            with pytest.raises(ReferenceDisabledError, match="write the computation yourself"):
                call()
        assert torch.equal(gradlab.autograd.ReQU.apply(x), torch.tensor([0.0, 4.0]))  # only what was named
    assert torch.equal(taken_before(x), torch.tensor([0.0, 4.0]))


def test_a_public_class_has_every_method_blocked_including_inherited_ones_and_only_there():
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)

    def make_dist(t):
        return torch.distributions.Independent(torch.distributions.Normal(t, torch.ones_like(t)), 1)

    def f(x):
        return (x**2).sum(-1)

    with reference_disabled("gradlab.ScoreFunction"):
        for call in (
            lambda: gradlab.expectation_grad(f, make_dist, theta, estimator="score", num_samples=4),
            lambda: gradlab.ScoreFunction().per_sample_grads(f, make_dist, theta, num_samples=4),  # inherited
            lambda: gradlab.surrogate_loss(f, make_dist(theta), estimator="score", num_samples=4),
        ):
            with pytest.raises(ReferenceDisabledError):
                call()
        repr(gradlab.ScoreFunction())  # dunders kept: instances can be built and printed
        # A sibling on the same base class is untouched.
        assert gradlab.expectation_grad(f, make_dist, theta, estimator="pathwise", num_samples=4).shape == (4, 2)
    assert gradlab.expectation_grad(f, make_dist, theta, estimator="score", num_samples=4).shape == (4, 2)
    assert "per_sample_grads" not in vars(gradlab.ScoreFunction), "an inherited method is removed again"


def test_a_class_is_blocked_by_what_it_has_not_by_hook_names():
    """A refactor that renames the private hooks keeps the block: every callable gradlab attribute goes."""

    class Base:
        __module__ = "gradlab.fake_base"

        def _hook_renamed(self):
            return "base"

        @staticmethod
        def helper():
            return "static"

    class Estimator(Base):
        __module__ = "gradlab.fake"

        def run(self):
            return self._hook_renamed()

    with reference_disabled(Estimator):
        for call in (Estimator().run, Estimator()._hook_renamed, Estimator.helper):
            with pytest.raises(ReferenceDisabledError):
                call()
        assert Base()._hook_renamed() == "base"
    assert Estimator().run() == "base" and Estimator.helper() == "static"


def test_methods_of_autograd_functions_and_single_methods():
    x = torch.tensor([-1.0, 2.0])
    with reference_disabled("gradlab.ReQU", "gradlab.backprop.Node.backward"):
        for call in (lambda: gradlab.autograd.ReQU.apply(x), lambda: backprop.Node(x).backward()):
            with pytest.raises(ReferenceDisabledError):
                call()
        assert torch.equal((backprop.Node(x) * 2).value, 2 * x)  # the rest of Node works
    assert isinstance(vars(gradlab.autograd.ReQU)["forward"], staticmethod)


def test_reference_disabled_restores_everything_even_after_an_error():
    x = torch.tensor([-1.0, 2.0])
    with pytest.raises(ZeroDivisionError):
        with reference_disabled("gradlab.requ", gradlab.autograd.ReQU):
            1 / 0
    y = x.clone().requires_grad_(True)
    gradlab.autograd.requ(y).sum().backward()
    assert torch.equal(y.grad, torch.tensor([0.0, 4.0]))
    assert isinstance(vars(gradlab.autograd.ReQU)["backward"], staticmethod)


def test_closures_are_blocked_too_and_what_cannot_be_blocked_is_refused():
    def outer():
        value = 1

        def closure():
            return value
        return closure

    inner = outer()
    with reference_disabled(inner):
        with pytest.raises(ReferenceDisabledError):
            inner()
    assert inner() == 1
    for bad, match in ((42, "public gradlab function"), ("torch.exp", "starting with 'gradlab'"),
                       ("gradlab.no_such_name", "not a public name"), ("gradlab.__version__", "function or class")):
        with pytest.raises(TypeError, match=match):
            with reference_disabled(bad):
                pass
    assert gradlab.autograd.requ(torch.tensor([3.0])).item() == 9.0


def test_every_task_list_names_public_gradlab_objects():
    """A refactor that drops or moves a public name fails here, not silently in the labs."""
    assert len(TASK_REFERENCES) >= 25
    for task, names in TASK_REFERENCES.items():
        for name in names:
            owner, obj = resolve(name)
            assert callable(obj), f"{task}: {name}"
        with disabled_for(task):
            pass
    with pytest.raises(KeyError, match="unknown task"):
        disabled_for("lab9/nothing")


def test_substituted_binds_names_for_the_block_and_restores_or_removes_them():
    namespace = {"earlier": "student's"}

    def later():
        return namespace["earlier"]

    with substituted(namespace, earlier="reference", missing="added"):
        assert later() == "reference" and namespace["missing"] == "added"
    assert namespace == {"earlier": "student's"}
    with pytest.raises(RuntimeError):
        with substituted(namespace, earlier="reference"):
            raise RuntimeError
    assert namespace == {"earlier": "student's"}
    global _probe
    with substituted(_probe="caller's globals"):  # the default namespace is the caller's module
        assert _probe == "caller's globals"
    assert "_probe" not in globals()


# ------------------------------------------------------------------ statistical grading: size and power

from gradlab.labcheck import (check_frequencies, check_mean_bound, check_same_law, check_unbiased,  # noqa: E402
                              check_variance_below, check_variance_ratio)


def fails(check, *args, **kwargs) -> bool:
    try:
        check(*args, **kwargs)
    except AssertionError:
        return True
    return False


def test_check_unbiased_has_its_stated_size_and_power(capsys):
    """Over many seeds a correct estimator fails at about the stated rate (never much more), and a biased one of
    the size `detect` names fails at least 90% of the time."""
    truth = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    n, seeds, alpha = 400, 300, 0.05
    detect = float(3.0 * (2.39 + 1.29) / n**0.5 * 1.25)  # above the smallest detectable bias of coordinate 1
    failures = biased = 0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        samples = truth + scale * torch.randn(n, 3, generator=g, dtype=torch.float64)
        failures += fails(check_unbiased, "correct", samples, truth, alpha=alpha, detect=detect)
        biased += fails(check_unbiased, "biased", samples + torch.tensor([0.0, detect, 0.0], dtype=torch.float64),
                        truth, alpha=alpha, detect=detect)
    capsys.readouterr()
    # Binomial(300, <= 0.05): mean <= 15, sd about 3.8; Bonferroni over 3 coordinates makes it a little smaller.
    assert 3 <= failures <= 15 + 3 * 3.8, f"size: {failures} of {seeds} correct runs failed at alpha = {alpha}"
    assert biased >= 0.9 * seeds - 3 * (seeds * 0.09) ** 0.5, f"power: only {biased} of {seeds} biased runs failed"


def test_check_mean_bound_has_its_stated_size_and_power(capsys):
    """One-sided: values whose mean sits exactly on the bound fail at about the stated rate, values with mean
    `detect` beyond it fail at least 90% of the time, values well inside never fail; both sides."""
    n, seeds, alpha, bound = 250, 300, 0.05, 0.7
    detect = 2.0 * (1.645 + 1.282) / n**0.5 * 1.1  # scale 2: just above the smallest detectable offset
    for side, sign in (("at most", 1.0), ("at least", -1.0)):
        on = beyond = inside = 0
        for seed in range(seeds):
            noise = 2.0 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            on += fails(check_mean_bound, "on", bound + noise, bound, side=side, alpha=alpha, detect=detect)
            beyond += fails(check_mean_bound, "beyond", bound + sign * detect + noise, bound, side=side, alpha=alpha,
                            detect=detect)
            inside += fails(check_mean_bound, "inside", bound - sign * detect + noise, bound, side=side, alpha=alpha)
        capsys.readouterr()
        # Binomial(300, 0.05): mean 15, sd 3.8.
        assert 3 <= on <= 15 + 3 * 3.8, f"{side}: size {on} of {seeds}"
        assert beyond >= 0.9 * seeds - 3 * (seeds * 0.09) ** 0.5, f"{side}: power {beyond} of {seeds}"
        assert inside == 0, side
    with pytest.raises(AssertionError, match="too noisy"):
        check_mean_bound("noisy", torch.randn(20, dtype=torch.float64), 0.0, detect=0.01)
    with pytest.raises(AssertionError, match="side"):
        check_mean_bound("side", torch.zeros(5), 0.0, side="below")
    assert check_mean_bound("constant", torch.full((4,), -1.0), 0.0) == 0.0


def test_check_unbiased_refuses_a_sample_too_noisy_for_the_stated_bias():
    samples = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(AssertionError, match="too noisy"):
        check_unbiased("noisy", samples, torch.zeros(2), detect=0.01)
    with pytest.raises(AssertionError, match="shape"):
        check_unbiased("shape", samples, torch.zeros(3))


def test_check_same_law_accepts_any_convention_for_the_same_law_and_rejects_another_law(capsys):
    """Gumbel noise as -log(-log(u)) or -log(-log(1 - u)) is the same law; a shift of a fifth of a standard
    deviation is another. Size and power over seeds, against reference draws and against a CDF."""
    seeds, n, alpha = 100, 2000, 0.05
    gumbel_cdf = lambda x: torch.exp(-torch.exp(-x))  # noqa: E731
    failures = shifted = cdf_failures = 0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        u, w = torch.rand(n, 2, generator=g, dtype=torch.float64), torch.rand(n, 2, generator=g, dtype=torch.float64)
        one, other = -torch.log(-torch.log(u)), -torch.log(-torch.log(1 - w))
        failures += fails(check_same_law, "same law", one, other, alpha=alpha)
        cdf_failures += fails(check_same_law, "same law, CDF", other, gumbel_cdf, alpha=alpha)
        shifted += fails(check_same_law, "shifted", one + 0.25, other, alpha=alpha)
    capsys.readouterr()
    assert failures <= 5 + 3 * 2.2 and cdf_failures <= 5 + 3 * 2.2, (failures, cdf_failures)
    assert shifted >= 90, f"power: only {shifted} of {seeds} shifted samples were rejected"


def test_check_frequencies_for_categories_and_bits(capsys):
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    p_bits = torch.tensor([0.1, 0.5, 0.85], dtype=torch.float64)
    seeds, n, alpha = 100, 1000, 0.05
    failures = wrong = bit_failures = flipped = 0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(probs, n, replacement=True, generator=g).T  # (n, 2)
        failures += fails(check_frequencies, "categories", draws, probs, alpha=alpha)
        wrong += fails(check_frequencies, "wrong", draws, probs.flip(-1), alpha=alpha)
        u = torch.rand(n, 3, generator=g, dtype=torch.float64)
        bit_failures += fails(check_frequencies, "u > 1 - p", (u > 1 - p_bits).double(), p_bits, alpha=alpha)
        flipped += fails(check_frequencies, "1 - p", (u < 1 - p_bits).double(), p_bits, alpha=alpha)
    capsys.readouterr()
    assert failures <= 5 + 3 * 2.2 and bit_failures <= 5 + 3 * 2.2, (failures, bit_failures)
    assert wrong == seeds and flipped == seeds
    with pytest.raises(AssertionError, match="0 or 1"):
        check_frequencies("bits", torch.full((5, 3), 0.5), p_bits)


def test_check_variance_ratio_within_a_factor():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert abs(check_variance_ratio("same", a, b, factor=1.2) - 1) < 0.1
    with pytest.raises(AssertionError, match="outside"):
        check_variance_ratio("double", 2 * a, b, factor=1.5)
    with pytest.raises(AssertionError, match="outside"):
        check_variance_ratio("half", 0.5 * a, b, factor=1.5)
    assert check_variance_ratio("smaller is fine", 0.5 * a, b, factor=1.5, upper_only=True) < 0.3


def test_check_variance_below_has_its_stated_size_and_power(capsys):
    """At equal cost: an estimator three times as costly with exactly a third of the variance ties (true ratio 1)
    and passes at most at about the stated rate; one with 0.9 of that variance passes at least 90% of the time;
    half the variance at three times the cost is a ratio of 1.5, which fails (it would pass at equal samples)."""
    seeds, n, alpha = 300, 4000, 0.05
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    tied = better = 0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        reference = scale * torch.randn(3 * n, 3, generator=g, dtype=torch.float64)
        costly = scale * torch.randn(n, 3, generator=g, dtype=torch.float64) / 3**0.5
        tied += not fails(check_variance_below, "tied", costly, reference, cost=3, alpha=alpha)
        better += not fails(check_variance_below, "better", 0.9**0.5 * costly, reference, cost=3, alpha=alpha)
    capsys.readouterr()
    assert tied <= 15 + 3 * 3.8, f"size: {tied} of {seeds} tied estimators passed at alpha = {alpha}"
    assert better >= 0.9 * seeds, f"power: only {better} of {seeds} better estimators passed"
    g = torch.Generator().manual_seed(7)
    reference = torch.randn(3 * n, 3, generator=g, dtype=torch.float64)
    half = 0.5**0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    ratio, upper = check_variance_below("half the variance at three times the cost", half, reference, cost=3,
                                        factor=2.0)
    assert abs(ratio - 1.5) < 0.1 and upper > ratio
    with pytest.raises(AssertionError, match="not below 1"):
        check_variance_below("equal cost", half, reference, cost=3)


def test_lab4_rebar_task_states_the_truth(capsys):
    """Lab 4, Part 6: on the stated three-bit toy, REBAR with eta = 1 loses to REINFORCE at equal cost whatever tau
    (the ratio's lower confidence bound is above 1), and the reference solution's tuned (1.5, 0.5) wins."""
    from torch.distributions import Bernoulli

    f64, bern = torch.float64, lambda theta: Bernoulli(logits=theta)  # noqa: E731
    theta = torch.tensor([-1.0, 0.3, 2.0], dtype=f64)
    f = lambda b: ((b - 0.45) ** 2).sum(-1)  # noqa: E731
    n = 40_000
    reinforce = gradlab.expectation_grad(f, bern, theta, estimator="score", num_samples=3 * n,
                                         generator=torch.Generator().manual_seed(1))

    def rebar(eta, tau, seed):
        return gradlab.REBAR(eta=eta, tau=tau).to(dtype=f64).per_sample_grads(
            f, bern, theta, num_samples=n, generator=torch.Generator().manual_seed(seed))

    for seed, tau in enumerate([0.2, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0, 2.0]):
        # REINFORCE beats eta = 1 at equal cost: swap the roles (REINFORCE at cost 1/3 of a REBAR sample).
        check_variance_below(f"eta = 1, tau = {tau} loses", reinforce, rebar(1.0, tau, seed + 10),
                             cost=1 / 3, factor=1.0)
    ratio, upper = check_variance_below("tuned wins", rebar(1.5, 0.5, 2), reinforce, cost=3)
    capsys.readouterr()
    assert upper < 0.9
