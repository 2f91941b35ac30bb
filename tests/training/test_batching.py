import random

from multitask_bert.data.batching import epoch_rng, plan_batches


def test_every_index_once_and_batch_sizes():
    lengths = [random.Random(i).randint(3, 60) for i in range(103)]
    batches = plan_batches(lengths, 8, rng=epoch_rng(1, 0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert sorted(len(b) for b in batches)[1:] == [8] * 12  # one short batch of 7


def test_length_grouping_cuts_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = plan_batches(lengths, 32, rng=epoch_rng(0, 0), group_by_length=True)
    plain = plan_batches(lengths, 32, rng=epoch_rng(0, 0), group_by_length=False)
    real = sum(lengths)
    assert padded(grouped) < 1.1 * real  # < 10 % pad
    assert padded(plain) > 1.5 * real


def test_order_depends_only_on_seed_and_epoch():
    lengths = list(range(50))
    a = plan_batches(lengths, 4, rng=epoch_rng(3, 1))
    b = plan_batches(lengths, 4, rng=epoch_rng(3, 1))
    c = plan_batches(lengths, 4, rng=epoch_rng(3, 2))
    assert a == b and a != c


def test_eval_order_sorted_longest_first_without_rng():
    batches = plan_batches([3, 9, 1, 7], 2, rng=None)
    assert batches == [[1, 3], [0, 2]]
