"""One PPO update: jppo's jitted update against the torch reference's ppo_update, same data,
same initial weights, same minibatch order.

Cases:

- ``3DBall``: configs/3DBall.yaml's hyperparameters: buffer 12000 (12 agents x 1000 steps),
  batch 64, 3 epochs (561 Adam steps), 8 inputs, 2 continuous actions, 128 x 2 Swish,
  normalize on. Goal (a benchmark figure, not a test): jppo at least 10 x faster than torch.
- ``large batch``: the same network on 65536 samples (64 envs x 1024 steps), minibatch 4096,
  4 epochs (64 Adam steps).

The rollout holds random observations (unit normal), actions, log-probs and values sampled
from the initial policy, rewards 0.1 and 0.5% episode ends. The torch side starts from jppo's
initial weights (``reference.transfer``) and replays jppo's first minibatch order
(``jppo.minibatch_indices``), so the two first updates compute the same thing; the largest
parameter difference after it is recorded. Later (timed) updates continue from there: jppo
with fresh permutations, torch replaying the first order.

jppo: compile (``.lower().compile()``) and the first call timed apart, then ``--repeats``
updates, each ended by ``jax.block_until_ready``. torch: the first call apart, then
``--repeats`` updates, for every thread count in ``--torch-threads`` (its own row each).

    python benchmarks/bench_update_vs_torch.py [--repeats 5] [--torch-threads 1,default]

writes results/update_vs_torch_<label>.json.
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import torch

import common
import jppo
from jppo.reference import torch_ppo as ref
from jppo.reference.transfer import load_flax_params, torch_to_flax
from jppo.runs.settings import load

CONFIG_3DBALL = pathlib.Path(__file__).resolve().parent.parent / "configs" / "3DBall.yaml"
OBS, ACTIONS = 8, 2


def cases(quick: bool) -> list[dict]:
    ball = load(CONFIG_3DBALL).ppo
    if quick:
        return [dict(name="3DBall (quick: 384 samples, 1 epoch)", goal=None, steps=32, envs=12,
                     config=ball.replace(buffer_size=384, num_epoch=1)),
                dict(name="large batch (quick: 2048, mb 512)", goal=None, steps=64, envs=32,
                     config=ball.replace(buffer_size=2048, batch_size=512, num_epoch=1))]
    return [dict(name="3DBall", goal=10.0, steps=1000, envs=12, config=ball),
            dict(name="large batch 65536, mb 4096", goal=None, steps=1024, envs=64,
                 config=ball.replace(buffer_size=65536, batch_size=4096, num_epoch=4))]


def make_rollout(config: jppo.PPOConfig, state: jppo.TrainState, steps: int, envs: int,
                 key: jax.Array) -> jppo.Rollout:
    spec = jppo.ActionSpec.continuous(ACTIONS)
    obs_key, act_key, done_key = jax.random.split(key, 3)
    obs = jax.random.normal(obs_key, (steps, envs, OBS))
    policy = jppo.make_policy(config, spec)
    actions, log_probs, values = jax.jit(policy.act)(state.params, state.normalizer, obs, act_key)
    return jppo.Rollout(obs=obs, actions=actions, log_probs=log_probs, values=values,
                        rewards=jnp.full((steps, envs), 0.1),
                        dones=(jax.random.uniform(done_key, (steps, envs)) < 0.005)
                        .astype(jnp.float32),
                        last_value=jnp.zeros(envs))


def bench_case(case: dict, repeats: int, thread_counts: list[int]) -> tuple[dict, list[dict]]:
    config, steps, envs = case["config"], case["steps"], case["envs"]
    samples = steps * envs
    adam_steps = config.adam_steps_per_update(samples)
    total = config.total_adam_steps(samples)
    spec = jppo.ActionSpec.continuous(ACTIONS)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, OBS, spec)
    rollout = make_rollout(config, state, steps, envs, jax.random.PRNGKey(1))
    order = np.asarray(jppo.minibatch_indices(jax.random.split(state.key)[1], samples,
                                              config.batch_size, config.num_epoch))
    torch_rollout = {k: torch.from_numpy(np.array(v)) for k, v in rollout._asdict().items()
                     if v is not None}

    # jppo
    update = jppo.make_update(config, spec, total)
    compiled, compile_s = common.timed(lambda: update.lower(state, rollout).compile())
    (first_state, _), first_s = common.timed(
        lambda: jax.block_until_ready(compiled(state, rollout)))
    box = [first_state]

    def run_jax():
        box[0], metrics = compiled(box[0], rollout)
        jax.block_until_ready((box[0], metrics))

    jax_time = common.seconds(run_jax, repeats)

    # torch reference, one learner per thread count, all from jppo's initial weights
    rows, torch_results = [], {}
    parity = None
    for threads in thread_counts:
        torch.set_num_threads(threads)
        learner = ref.Learner.create(config, OBS, "continuous", ACTIONS, total)
        load_flax_params(learner.model, state.params)
        _, torch_first_s = common.timed(lambda: ref.ppo_update(learner, torch_rollout, order))
        if parity is None:
            diff = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                          first_state.params,
                                          torch_to_flax(learner.model.state_dict()))
            parity = max(jax.tree_util.tree_leaves(diff))
        timing = common.seconds(lambda: ref.ppo_update(learner, torch_rollout, order), repeats)
        torch_results[f"{threads} threads"] = {"first_call_s": torch_first_s, **timing}
        variant = f"reference ppo_update, {common.thread_name(threads)}"
        for unit, scale in (("ms per update", 1e3), ("ms per minibatch", 1e3 / adam_steps)):
            rows.append(common.row(case["name"], unit, scale * jax_time["median_s"],
                                   scale * timing["median_s"], variant, threads,
                                   higher_is_better=False,
                                   goal=case["goal"] if unit == "ms per update" else None))
    result = {"samples": samples, "steps": steps, "envs": envs, "adam_steps": adam_steps,
              "batch_size": config.batch_size, "num_epoch": config.num_epoch,
              "hidden": [config.hidden_units] * config.num_layers, "network": config.network,
              "normalize": config.normalize,
              "max_abs_param_diff_after_first_update": parity,
              "jppo": {"compile_s": compile_s, "first_call_s": first_s, **jax_time},
              "torch": torch_results}
    return result, rows


def main():
    args = common.parser(__doc__, repeats=5, threads="1,default").parse_args()
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    results, rows = {}, []
    for case in cases(args.quick):
        print(f"{case['name']} ...", flush=True)
        results[case["name"]], case_rows = bench_case(case, repeats,
                                                      common.thread_counts(args.torch_threads))
        rows += case_rows
    common.write("update_vs_torch", args, {
        "benchmark": "one PPO update: jppo's jitted update against torch_ppo.ppo_update",
        "settings": {"repeats": repeats, "torch_threads": args.torch_threads},
        "cases": results}, rows)


if __name__ == "__main__":
    main()
