"""gradlab.compare: metrics between an estimated and a reference gradient."""
import math

import pytest
import torch

from gradlab.compare import compare_gradients, cosine_similarity, relative_error, sign_agreement

F64 = torch.float64


def test_cosine_similarity_known_values():
    a = torch.tensor([1.0, 2.0, 0.0])
    assert cosine_similarity(a, 3 * a) == pytest.approx(1.0, abs=1e-15)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0, abs=1e-15)
    assert cosine_similarity(a, torch.tensor([-2.0, 1.0, 5.0])) == pytest.approx(0.0, abs=1e-15)
    assert cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))


def test_cosine_similarity_matches_torch_on_random_vectors():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g, dtype=F64), torch.randn(50, generator=g, dtype=F64)
    expected = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert cosine_similarity(a, b) == pytest.approx(expected, rel=1e-12)
    assert isinstance(cosine_similarity(a, b), float)


def test_cosine_of_zero_vector_is_nan():
    assert math.isnan(cosine_similarity(torch.zeros(3), torch.ones(3)))


def test_relative_error_closed_form():
    ref = torch.tensor([3.0, 4.0])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(torch.tensor([3.0, 5.0]), ref) == pytest.approx(1 / 5)
    assert relative_error(torch.zeros(2), ref) == pytest.approx(1.0)
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert relative_error(torch.ones(2), torch.zeros(2)) == math.inf


def test_sign_agreement_counts_coordinates():
    est = torch.tensor([1.0, -2.0, 3.0, 0.0, 0.0])
    ref = torch.tensor([0.5, 1.0, 2.0, 0.0, -1.0])
    assert sign_agreement(est, ref) == pytest.approx(3 / 5)  # positions 0, 2 and 3 (0 matches 0)
    assert sign_agreement(est, est) == 1.0


def test_shapes_and_lists_are_flattened():
    g = torch.Generator().manual_seed(1)
    est = [torch.randn(2, 3, generator=g), torch.randn(4, generator=g)]
    ref = [torch.randn(2, 3, generator=g), torch.randn(4, generator=g)]
    flat_est = torch.cat([t.reshape(-1) for t in est])
    flat_ref = torch.cat([t.reshape(-1) for t in ref])
    assert compare_gradients(est, ref) == compare_gradients(flat_est, flat_ref)
    # a different shape with the same number of elements is fine
    assert cosine_similarity(flat_est.reshape(5, 2), tuple(ref)) == pytest.approx(cosine_similarity(flat_est, flat_ref))


def test_compare_gradients_returns_all_metrics():
    est = torch.tensor([2.0, 0.0, -1.0], dtype=F64, requires_grad=True)
    ref = torch.tensor([1.0, 1.0, -1.0], dtype=F64)
    result = compare_gradients(est, ref)
    assert set(result) == {"cosine", "relative_error", "sign_agreement", "norm_ratio"}
    assert result["cosine"] == pytest.approx(3 / (math.sqrt(5) * math.sqrt(3)))
    assert result["relative_error"] == pytest.approx(math.sqrt(2) / math.sqrt(3))
    assert result["sign_agreement"] == pytest.approx(2 / 3)
    assert result["norm_ratio"] == pytest.approx(math.sqrt(5) / math.sqrt(3))
    assert all(isinstance(v, float) for v in result.values())


def test_float32_inputs_are_compared_in_float64():
    big = torch.tensor([1e30, -2e30], dtype=torch.float32)
    # the dot product 5e60 overflows float32 (max ~3.4e38) but not float64
    assert torch.isinf((big @ big))
    assert cosine_similarity(big, big) == pytest.approx(1.0, abs=1e-12)
    assert compare_gradients(big, 2 * big)["norm_ratio"] == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("fn", [cosine_similarity, relative_error, sign_agreement, compare_gradients])
def test_bad_inputs(fn):
    with pytest.raises(ValueError, match=r"same number of elements, got 3 and 4"):
        fn(torch.ones(3), torch.ones(2, 2))
    with pytest.raises(TypeError, match=r"est must be a torch.Tensor or a list of tensors, got ndarray"):
        fn(torch.ones(3).numpy(), torch.ones(3))
    with pytest.raises(TypeError, match=r"ref\[1\] must be a torch.Tensor, got float"):
        fn(torch.ones(2), [torch.ones(1), 1.0])
    with pytest.raises(ValueError, match=r"ref must not be an empty list"):
        fn(torch.ones(2), [])
    with pytest.raises(ValueError, match=r"est and ref must not be empty"):
        fn(torch.ones(0), torch.ones(0))
