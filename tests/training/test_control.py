"""Flow control of training: the rules one by one, then whole runs checked exhaustively
against the pre-refactor loop (its `done` flag set in three places, transcribed below)."""

from __future__ import annotations

import itertools
import math

import pytest

from multitask_bert.training.control import Actions, TrainingControl

STRATEGIES = [("epoch", None), ("no", None), ("steps", 1), ("steps", 2), ("steps", 3)]


# -- the rules ----------------------------------------------------------------------------
def test_after_step_logs_every_n_steps():
    for every in range(1, 6):
        control = TrainingControl(total_steps=100, epochs=1, log_every_n_steps=every)
        for step in range(1, 31):
            assert control.after_step(step, 0).log == (step % every == 0), (every, step)


@pytest.mark.parametrize(("strategy", "eval_steps"), STRATEGIES)
def test_after_step_evaluates_only_with_the_steps_strategy_every_eval_steps(
        strategy, eval_steps):
    control = TrainingControl(total_steps=100, epochs=1, eval_strategy=strategy,
                              eval_steps=eval_steps)
    for step in range(1, 31):
        expected = strategy == "steps" and step % eval_steps == 0
        assert control.after_step(step, 0).evaluate == expected, step


@pytest.mark.parametrize("every", [None, 1, 2, 3, 7])
def test_after_step_checkpoints_every_n_steps_but_not_on_the_last_step(every):
    total = 14
    control = TrainingControl(total_steps=total, epochs=1, checkpoint_every_n_steps=every)
    for step in range(1, total + 1):
        act = control.after_step(step, 0)
        assert act.stop == (step == total), step
        expected = every is not None and step % every == 0 and step < total
        assert act.checkpoint == expected, step  # the final checkpoint is _finish's


def test_after_step_is_the_same_in_every_epoch_before_the_last():
    control = TrainingControl(total_steps=40, epochs=4, eval_strategy="steps", eval_steps=3,
                              checkpoint_every_n_steps=2, log_every_n_steps=5)
    for step, epoch in itertools.product(range(1, 41), range(4)):
        assert control.after_step(step, epoch) == control.after_step(step, 0)


@pytest.mark.parametrize(("strategy", "eval_steps"), STRATEGIES)
def test_after_epoch_evaluates_with_the_epoch_strategy_and_checkpoints_unless_last(
        strategy, eval_steps):
    control = TrainingControl(total_steps=100, epochs=3, eval_strategy=strategy,
                              eval_steps=eval_steps, checkpoint_every_n_steps=1)
    for done in (1, 2, 3):
        act = control.after_epoch(10 * done, done)
        last = done == 3
        assert act == Actions(log=False, evaluate=strategy == "epoch", checkpoint=not last,
                              stop=last), done


def test_early_stopped_stops_without_a_checkpoint_and_keeps_the_rest():
    for log, evaluate, checkpoint, stop in itertools.product([False, True], repeat=4):
        act = Actions(log=log, evaluate=evaluate, checkpoint=checkpoint, stop=stop)
        assert act.early_stopped() == Actions(log=log, evaluate=evaluate, checkpoint=False,
                                              stop=True)


def test_at_start_stops_when_the_steps_or_the_epochs_are_used_up():
    control = TrainingControl(total_steps=10, epochs=2)
    assert not control.at_start(0, 0).stop
    assert not control.at_start(9, 1).stop
    assert control.at_start(10, 1).stop  # resumed from the final checkpoint
    assert control.at_start(5, 2).stop


def test_from_config_reads_the_training_section():
    from multitask_bert.config import TrainingConfig

    args = TrainingConfig(epochs=4, eval_strategy="steps", eval_steps=7,
                          checkpoint_every_n_steps=None)
    assert TrainingControl.from_config(args, log_every_n_steps=3, total_steps=20) == (
        TrainingControl(total_steps=20, epochs=4, eval_strategy="steps", eval_steps=7,
                        checkpoint_every_n_steps=None, log_every_n_steps=3))
    default = TrainingControl.from_config(TrainingConfig(), 10, 5)
    assert (default.eval_strategy, default.checkpoint_every_n_steps) == ("epoch", 200)


# -- whole runs -----------------------------------------------------------------------------
def simulate(control: TrainingControl, plan_len: int, accum: int,
             stop_at_eval: int | None = None, state: tuple[int, int, int] = (0, 0, 0)):
    """The skeleton of ``Trainer.train``: steps over windows of ``accum`` batches of an
    epoch plan of ``plan_len`` batches, asking ``control``; records what it does. The
    ``stop_at_eval``-th evaluation says "stop early". Returns (events, final state)."""
    step, epoch, window = state
    events: list[tuple] = []
    evals = 0

    def evaluate_and_checkpoint(act: Actions) -> Actions:
        nonlocal evals
        if act.evaluate:
            evals += 1
            events.append(("eval", step))
            if evals == stop_at_eval:
                act = act.early_stopped()
        if act.checkpoint:
            events.append(("ckpt", step, epoch, window))
        return act

    act = control.at_start(step, epoch)
    while not act.stop:
        for start in range(window, plan_len, accum):
            step, window = step + 1, start + accum
            act = control.after_step(step, epoch)
            if act.log:
                events.append(("log", step))
            act = evaluate_and_checkpoint(act)
            if act.stop:
                break
        if window >= plan_len:
            epoch, window = epoch + 1, 0
            events.append(("epoch", epoch))
            if not act.stop:
                act = evaluate_and_checkpoint(control.after_epoch(step, epoch))
    return events, (step, epoch, window)


def reference(total: int, epochs: int, strategy: str, eval_steps: int | None,
              every: int | None, log_every: int, plan_len: int, accum: int,
              stop_at_eval: int | None = None, state: tuple[int, int, int] = (0, 0, 0)):
    """``Trainer.train``'s flow control before the refactor (f7c8262), transcribed."""
    step, epoch, window = state
    events: list[tuple] = []
    evals = 0

    def evaluate() -> bool:
        nonlocal evals
        evals += 1
        events.append(("eval", step))
        return evals == stop_at_eval

    done = step >= total
    while epoch < epochs and not done:
        for start in range(window, plan_len, accum):
            step, window = step + 1, start + accum
            if step % log_every == 0:
                events.append(("log", step))
            if strategy == "steps" and step % eval_steps == 0:
                done = evaluate()
            done = done or step >= total
            if every and step % every == 0 and not done:
                events.append(("ckpt", step, epoch, window))
            if done:
                if window >= plan_len:  # the cap fell on the epoch's last step
                    epoch, window = epoch + 1, 0
                    events.append(("epoch", epoch))
                break
        else:
            epoch, window = epoch + 1, 0
            events.append(("epoch", epoch))
            if strategy == "epoch":
                done = evaluate() or done
            if not done and epoch < epochs:
                events.append(("ckpt", step, epoch, window))
    return events, (step, epoch, window)


def runs():
    """Every combination of the cadence settings on small plans; max_steps takes every value
    from 1 to the epochs' steps, so the cap lands mid-epoch and on each epoch's last step."""
    for (strategy, eval_steps), every, plan_len, accum, epochs in itertools.product(
            STRATEGIES, [None, 1, 2, 3], [1, 4, 5], [1, 2, 3], [1, 2, 3]):
        steps = math.ceil(plan_len / accum) * epochs
        for max_steps in [None, *range(1, steps + 1)]:
            total = min(steps, max_steps or steps)
            yield dict(total=total, epochs=epochs, strategy=strategy, eval_steps=eval_steps,
                       every=every, plan_len=plan_len, accum=accum)


def control_of(run: dict, log_every: int) -> TrainingControl:
    return TrainingControl(total_steps=run["total"], epochs=run["epochs"],
                           eval_strategy=run["strategy"], eval_steps=run["eval_steps"],
                           checkpoint_every_n_steps=run["every"], log_every_n_steps=log_every)


def test_whole_runs_match_the_pre_refactor_loop_exhaustively():
    n = 0
    for run in runs():
        for log_every, stop_at_eval in itertools.product([1, 3], [None, 1, 2]):
            got = simulate(control_of(run, log_every), run["plan_len"], run["accum"],
                           stop_at_eval)
            assert got == reference(**run, log_every=log_every, stop_at_eval=stop_at_eval), (
                run, log_every, stop_at_eval)
            n += 1
    assert n > 10_000


def test_resumed_runs_match_the_pre_refactor_loop_from_every_checkpoint():
    for run in runs():
        events, _ = reference(**run, log_every=1)
        for event in events:
            if event[0] == "ckpt":
                state = event[1:]
                got = simulate(control_of(run, 1), run["plan_len"], run["accum"], state=state)
                assert got == reference(**run, log_every=1, state=state), (run, state)


def test_whole_runs_use_the_step_budget_and_never_checkpoint_on_the_way_out():
    for run in runs():
        for stop_at_eval in (None, 1):
            events, (step, epoch, window) = simulate(control_of(run, 1), run["plan_len"],
                                                     run["accum"], stop_at_eval)
            evals = [i for i, e in enumerate(events) if e[0] == "eval"]
            if stop_at_eval is not None and len(evals) >= stop_at_eval:
                # stopped early: nothing after the evaluation that said stop
                assert len(evals) == stop_at_eval and events[evals[-1] + 1 :] in (
                    [], [("epoch", epoch)]), run
            else:
                assert step == run["total"], run
                assert all(e[1] < step for e in events if e[0] == "ckpt"), run
            assert [e[1] for e in events if e[0] == "log"] == list(range(1, step + 1))
            assert epoch <= run["epochs"]
            assert window == 0 or epoch < run["epochs"]


def test_cap_mid_epoch():
    # 4 steps per epoch, 2 epochs, max_steps 6: evaluations at 3 and 6 (then stop, no
    # checkpoint at 6), checkpoints at 2 and 4, and the epoch-end checkpoint after step 4
    control = TrainingControl(total_steps=6, epochs=2, eval_strategy="steps", eval_steps=3,
                              checkpoint_every_n_steps=2, log_every_n_steps=100)
    events, state = simulate(control, plan_len=4, accum=1)
    assert events == [("ckpt", 2, 0, 2), ("eval", 3), ("ckpt", 4, 0, 4), ("epoch", 1),
                      ("ckpt", 4, 1, 0), ("eval", 6)]
    assert state == (6, 1, 2)  # stopped two steps into the second epoch


def test_cap_on_an_epochs_last_step_ends_the_epoch_without_its_evaluation_or_checkpoint():
    # max_steps 4 = the first epoch's last step: the epoch counts as done, but its epoch-end
    # evaluation and checkpoint are left to _finish (which evaluates and checkpoints)
    control = TrainingControl(total_steps=4, epochs=3, eval_strategy="epoch",
                              checkpoint_every_n_steps=2, log_every_n_steps=100)
    events, state = simulate(control, plan_len=4, accum=1)
    assert events == [("ckpt", 2, 0, 2), ("epoch", 1)]
    assert state == (4, 1, 0)


def test_last_epoch_has_no_checkpoint_and_accumulation_windows_end_the_epoch():
    # 5 batches, windows of 2: steps end at batches 2, 4, 5(+1): 3 steps per epoch
    control = TrainingControl(total_steps=6, epochs=2, eval_strategy="epoch",
                              log_every_n_steps=100)
    events, state = simulate(control, plan_len=5, accum=2)
    assert events == [("epoch", 1), ("eval", 3), ("ckpt", 3, 1, 0), ("epoch", 2)]
    assert state == (6, 2, 0)


def test_early_stop_at_an_epoch_end_skips_its_checkpoint():
    control = TrainingControl(total_steps=9, epochs=3, eval_strategy="epoch",
                              log_every_n_steps=100)
    events, state = simulate(control, plan_len=3, accum=1, stop_at_eval=2)
    assert events == [("epoch", 1), ("eval", 3), ("ckpt", 3, 1, 0), ("epoch", 2),
                      ("eval", 6)]
    assert state == (6, 2, 0)


def test_early_stop_on_a_step_keeps_the_log_before_it_and_drops_the_checkpoint():
    control = TrainingControl(total_steps=20, epochs=1, eval_strategy="steps", eval_steps=2,
                              checkpoint_every_n_steps=2, log_every_n_steps=2)
    events, state = simulate(control, plan_len=20, accum=1, stop_at_eval=2)
    assert events == [("log", 2), ("eval", 2), ("ckpt", 2, 0, 2), ("log", 4), ("eval", 4)]
    assert state == (4, 0, 4)
